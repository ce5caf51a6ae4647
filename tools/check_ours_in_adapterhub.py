#!/usr/bin/env python3
"""Checks that bottleneck adapters saved by burn-peft load in AdapterHub (`adapters` 1.x) and
give our outputs (run by hand; the venv of tools/make_adapterhub_fixtures.py).

    PEFT_EXPORT_DIR=/tmp/ours_hub cargo test -p peft-models --test suite adapterhub::our_presets
    /tmp/venv_ah/bin/python tools/check_ours_in_adapterhub.py /tmp/ours_hub

Each folder holds adapter_config.json + adapter.safetensors in AdapterHub's layout,
`ours.safetensors` (our last hidden state for the fixture tokens) and `model_dir`. Prints the
largest difference per adapter and fails above 1e-4.
"""
import json
import pathlib
import sys

import adapters
import torch
from safetensors.torch import load_file
from transformers import BertModel

TOKENS = json.loads((pathlib.Path(__file__).resolve().parent.parent / "crates/peft-models/tests/fixtures/hf/tokens.json").read_text())


def main(root):
    worst = 0.0
    for case in sorted(p for p in pathlib.Path(root).iterdir() if p.is_dir()):
        model = BertModel.from_pretrained(pathlib.Path((case / "model_dir").read_text().strip()), dtype=torch.float32).eval()
        adapters.init(model)
        name = model.load_adapter(str(case), use_safetensors=True)
        model.set_active_adapters(name)
        model.eval()
        with torch.no_grad():
            theirs = model(torch.tensor([TOKENS])).last_hidden_state
        ours = load_file(str(case / "ours.safetensors"))["output"]
        diff = (theirs - ours).abs().max().item()
        worst = max(worst, diff)
        config = json.loads((case / "adapter_config.json").read_text())["config"]
        print(f"{case.name}: loaded in adapters {adapters.__version__} (parallel {config['is_parallel']}, original_ln_before {config['original_ln_before']}, mh {config['mh_adapter']}), largest difference {diff:.3g}")
    print(f"largest difference overall: {worst:.3g}")
    sys.exit(0 if worst < 1e-4 else 1)


if __name__ == "__main__":
    main(sys.argv[1])
