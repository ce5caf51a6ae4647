#!/usr/bin/env python3
"""Generates AdapterHub (`adapters` 1.x) parity fixtures for bottleneck adapters on BERT, Llama and
GPT-2 (run by hand, never in CI). `adapters` 1.3 pins transformers 4.57; a second venv that sees the first
one's torch keeps the download small:

    python3 -m venv /tmp/venv_ah
    echo /tmp/venv/lib/python3*/site-packages > /tmp/venv_ah/lib/python3*/site-packages/zz_base.pth
    /tmp/venv_ah/bin/pip install "transformers==4.57.6" "adapters==1.3.0"
    /tmp/venv_ah/bin/python tools/make_adapterhub_fixtures.py

Reads the tiny models of make_model_fixtures.py (models/bert, llama, gpt2_f16) and writes under
crates/peft-models/tests/fixtures/hf/adapterhub/CASE/ what `model.save_adapter` writes
(adapter_config.json and pytorch_adapter.bin, or adapter.safetensors with use_safetensors=True),
with weights perturbed so that every parameter matters, and expected.safetensors: `base` and
`adapted`, the last hidden state (BERT) or the logits (Llama, GPT-2) for TOKENS without and with
the adapter active.
"""
import json
import pathlib
import shutil

import adapters
import torch
from adapters import DoubleSeqBnConfig, ParBnConfig, SeqBnConfig
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, BertModel

ROOT = pathlib.Path(__file__).resolve().parent.parent / "crates/peft-models/tests/fixtures/hf"
TOKENS = [3, 17, 5, 42, 8, 1, 60]

# case: (model, config, saved as safetensors)
CASES = {
    "bert_seq_bn": ("bert", SeqBnConfig(reduction_factor=8), False),
    "bert_double_seq_bn": ("bert", DoubleSeqBnConfig(reduction_factor=4, leave_out=[0]), False),
    "bert_par_bn": ("bert", ParBnConfig(reduction_factor=4), True),
    "bert_seq_bn_gated": ("bert", SeqBnConfig(reduction_factor=8, use_gating=True), False),
    "llama_seq_bn": ("llama", SeqBnConfig(reduction_factor=4), False),
    "llama_par_bn": ("llama", ParBnConfig(reduction_factor=8), True),
    "gpt2_double_seq_bn": ("gpt2_f16", DoubleSeqBnConfig(reduction_factor=4), False),
}


def load(name):
    if name == "bert":
        return BertModel.from_pretrained(ROOT / "models/bert", dtype=torch.float32).eval()
    path = ROOT / "models" / name
    # transformers 5 writes `rope_parameters`, which 4.57 does not read: pass its theta along.
    rope = json.loads((path / "config.json").read_text()).get("rope_parameters") or {}
    extra = {"rope_theta": rope["rope_theta"]} if "rope_theta" in rope else {}
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **extra).eval()


def output(model, tokens):
    out = model(tokens)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out.logits


def main():
    for seed, (case, (model_name, config, safe)) in enumerate(CASES.items()):
        model = load(model_name)
        adapters.init(model)
        tokens = torch.tensor([TOKENS])
        with torch.no_grad():
            base = output(model, tokens)
        torch.manual_seed(100 + seed)
        model.add_adapter(case, config=config)
        model.set_active_adapters(case)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if f".{case}." in name:
                    p.add_(0.2 * torch.randn_like(p))
        model.eval()
        with torch.no_grad():
            adapted = output(model, tokens)
        out = ROOT / "adapterhub" / case
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        model.save_adapter(str(out), case, with_head=False, use_safetensors=safe)
        save_file({"base": base.contiguous(), "adapted": adapted.contiguous()}, out / "expected.safetensors")
        print(case, sorted(p.name for p in out.iterdir()), float((adapted - base).abs().max()))


if __name__ == "__main__":
    main()
