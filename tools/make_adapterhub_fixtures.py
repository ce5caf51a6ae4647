#!/usr/bin/env python3
"""Generates AdapterHub (`adapters` 1.x) parity fixtures for bottleneck adapters on BERT (run by
hand, never in CI). `adapters` 1.3 pins transformers 4.57; a second venv that sees the first
one's torch keeps the download small:

    python3 -m venv /tmp/venv_ah
    echo /tmp/venv/lib/python3*/site-packages > /tmp/venv_ah/lib/python3*/site-packages/zz_base.pth
    /tmp/venv_ah/bin/pip install "transformers==4.57.6" "adapters==1.3.0"
    /tmp/venv_ah/bin/python tools/make_adapterhub_fixtures.py

Reads the tiny BERT of make_model_fixtures.py (models/bert) and writes under
crates/peft-models/tests/fixtures/hf/adapterhub/CASE/ what `model.save_adapter` writes
(adapter_config.json and pytorch_adapter.bin, or adapter.safetensors with use_safetensors=True),
with weights perturbed so that every parameter matters, and expected.safetensors: `base` and
`adapted`, the last hidden state for TOKENS without and with the adapter active.
"""
import pathlib
import shutil

import adapters
import torch
from adapters import DoubleSeqBnConfig, ParBnConfig, SeqBnConfig
from safetensors.torch import save_file
from transformers import BertModel

ROOT = pathlib.Path(__file__).resolve().parent.parent / "crates/peft-models/tests/fixtures/hf"
TOKENS = [3, 17, 5, 42, 8, 1, 60]

# case: (config, saved as safetensors)
CASES = {
    "bert_seq_bn": (SeqBnConfig(reduction_factor=8), False),
    "bert_double_seq_bn": (DoubleSeqBnConfig(reduction_factor=4, leave_out=[0]), False),
    "bert_par_bn": (ParBnConfig(reduction_factor=4), True),
}


def main():
    for seed, (case, (config, safe)) in enumerate(CASES.items()):
        model = BertModel.from_pretrained(ROOT / "models/bert", dtype=torch.float32).eval()
        adapters.init(model)
        tokens = torch.tensor([TOKENS])
        with torch.no_grad():
            base = model(tokens).last_hidden_state
        torch.manual_seed(100 + seed)
        model.add_adapter(case, config=config)
        model.set_active_adapters(case)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if f".{case}." in name:
                    p.add_(0.2 * torch.randn_like(p))
        model.eval()
        with torch.no_grad():
            adapted = model(tokens).last_hidden_state
        out = ROOT / "adapterhub" / case
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        model.save_adapter(str(out), case, use_safetensors=safe)
        save_file({"base": base.contiguous(), "adapted": adapted.contiguous()}, out / "expected.safetensors")
        print(case, sorted(p.name for p in out.iterdir()), float((adapted - base).abs().max()))


if __name__ == "__main__":
    main()
