#!/usr/bin/env python3
"""Generates the fixture of a checkpoint transformers saved in 4 bits (run by hand, never in CI).

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install torch transformers bitsandbytes safetensors
    /tmp/venv/bin/python tools/make_4bit_fixtures.py

Loads the fixture Llama of tools/make_model_fixtures.py with bitsandbytes (NF4, double
quantization, as QLoRA does) and saves it with `save_pretrained`, which writes every linear layer
but the output head in bitsandbytes' layout, into crates/peft-models/tests/fixtures/hf/models/
llama_4bit/. `expected.safetensors` there holds the logits for the fixture tokens of the dense
model whose linear weights are the saved ones dequantized: the scales by bitsandbytes'
`dequantize_blockwise` from the saved quant state, the codes (high nibble first) through the NF4
table. (bitsandbytes' CPU forward pass needs widths of at least a block, which the tiny model does
not have, and its CPU `dequantize_4bit` (0.50.2) decodes its own CPU `quantize_4bit` output with
an error of half a block's scale, 0.044 here against 0.0072 for the decoding above: the codes in
the file are the ones that decode to the weights.)
"""
import json
import pathlib
import shutil

import bitsandbytes as bnb
import bitsandbytes.functional as F
import torch
from bitsandbytes.functional import QuantState
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

HF = pathlib.Path(__file__).resolve().parent.parent / "crates/peft-models/tests/fixtures/hf"
OUT = HF / "models/llama_4bit"


def dequantize(saved, name):
    """The 4-bit weight `name` of the saved file, decoded as bitsandbytes' CUDA kernel does."""
    state = QuantState.from_dict({k[len(name) + 1:]: v for k, v in saved.items() if k.startswith(name + ".")}, device=torch.device("cpu"))
    absmax = F.dequantize_blockwise(state.absmax, state.state2) + state.offset if state.nested else state.absmax
    packed = saved[name].flatten()
    codes = torch.stack([packed >> 4, packed & 15], 1).flatten().long()[: state.shape.numel()]
    return (state.code[codes] * absmax.float().repeat_interleave(state.blocksize)[: codes.numel()]).reshape(state.shape)


def main():
    source = HF / "models/llama"
    config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.float32)
    quantized = AutoModelForCausalLM.from_pretrained(source, quantization_config=config, device_map="cpu", dtype=torch.float32)
    if OUT.exists():
        shutil.rmtree(OUT)
    quantized.save_pretrained(OUT, safe_serialization=True)
    (OUT / "generation_config.json").unlink(missing_ok=True)
    dense = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).eval()
    modules = dict(dense.named_modules())
    saved = load_file(str(OUT / "model.safetensors"))
    count = 0
    with torch.no_grad():
        for name, module in quantized.named_modules():
            if isinstance(module, bnb.nn.Linear4bit):
                modules[name].weight.copy_(dequantize(saved, f"{name}.weight"))
                count += 1
        tokens = json.loads((HF / "tokens.json").read_text())
        logits = dense(input_ids=torch.tensor([tokens])).logits.float().contiguous()
    save_file({"logits": logits}, str(OUT / "expected.safetensors"))
    print(f"{count} linear layers in 4 bits; logits {tuple(logits.shape)}")


if __name__ == "__main__":
    main()
