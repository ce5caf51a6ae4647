#!/usr/bin/env python3
"""Loads a file written by `peft quantize` with bitsandbytes and compares its dequantization with
`peft dequantize` (run by hand, never in CI).

    peft quantize --in model.safetensors --out q.safetensors --quant-type nf4 --double-quant
    peft dequantize --in q.safetensors --out dq.safetensors
    python tools/check_ours_in_bitsandbytes.py q.safetensors dq.safetensors
"""
import sys

import bitsandbytes.functional as F
import torch
from bitsandbytes.backends.default.ops import _dequantize_4bit_compute
from safetensors.torch import load_file


def main(quantized, dense):
    q = load_file(quantized)
    d = load_file(dense)
    names = sorted({k.split(".quant_state.")[0] for k in q if ".quant_state.bitsandbytes__" in k})
    worst = 0.0
    for name in names:
        parts = {k[len(name) + 1:]: v for k, v in q.items() if k.startswith(name + ".")}
        state = F.QuantState.from_dict(parts, device=torch.device("cpu"))
        absmax = state.absmax
        if state.nested:
            absmax = F.dequantize_blockwise(state.absmax, state.state2) + state.offset
        ref = _dequantize_4bit_compute(q[name].reshape(-1), absmax.float(), state.code, state.blocksize, state.shape, torch.float32)
        diff = (ref - d[name]).abs().max().item()
        worst = max(worst, diff)
        print(f"{name}: {state.quant_type}, blocksize {state.blocksize}, nested {state.nested}, shape {list(state.shape)}, max |bnb - ours| = {diff}")
    print(f"{len(names)} weights, largest difference {worst}")
    return 0 if worst == 0.0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
