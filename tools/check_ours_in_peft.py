#!/usr/bin/env python3
"""Checks that adapters saved by burn-peft load in HF peft and give our outputs (run by hand).

    PEFT_EXPORT_DIR=/tmp/ours cargo test -p peft-models --test suite hf_parity::saved_adapters
    /tmp/venv/bin/python tools/check_ours_in_peft.py /tmp/ours

Each folder under the argument holds adapter_config.json + adapter_model.safetensors written by
`peft_models::save_adapter`, `ours.safetensors` (our output for the fixture tokens) and
`model_dir` (the base model). Prints the largest difference per adapter and fails above 1e-4.
"""
import json
import pathlib
import sys

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForCausalLM

TOKENS = json.loads((pathlib.Path(__file__).resolve().parent.parent / "crates/peft-models/tests/fixtures/hf/tokens.json").read_text())


def main(root):
    worst = 0.0
    for case in sorted(p for p in pathlib.Path(root).iterdir() if p.is_dir()):
        model_dir = pathlib.Path((case / "model_dir").read_text().strip())
        causal = json.loads((model_dir / "config.json").read_text())["model_type"] != "bert"
        base = (AutoModelForCausalLM if causal else AutoModel).from_pretrained(model_dir, dtype=torch.float32).eval()
        model = PeftModel.from_pretrained(base, case).eval()
        with torch.no_grad():
            out = model(input_ids=torch.tensor([TOKENS]))
        # With prompt tuning peft's outputs start with the virtual tokens': ours are the tokens'.
        theirs = (out.logits if causal else out.last_hidden_state)[:, -len(TOKENS):]
        ours = load_file(str(case / "ours.safetensors"))["output"]
        diff = (theirs - ours).abs().max().item()
        worst = max(worst, diff)
        print(f"{case.name}: {json.loads((case / 'adapter_config.json').read_text())['peft_type']} loaded in peft, largest difference {diff:.3g}")
    print(f"largest difference overall: {worst:.3g}")
    sys.exit(0 if worst < 1e-4 else 1)


if __name__ == "__main__":
    main(sys.argv[1])
