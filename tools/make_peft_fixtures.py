#!/usr/bin/env python3
"""Generates HF peft parity fixtures (run by hand, never in CI).

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install torch transformers peft safetensors
    /tmp/venv/bin/python tools/make_peft_fixtures.py

For tiny random Llama and GPT-2 models it writes, under crates/peft-cli/tests/fixtures/peft/NAME/:
base/ (config.json, model.safetensors), adapter/ (adapter_config.json, adapter_model.safetensors,
with non-zero weights) and merged.safetensors (peft's merge_and_unload state dict).
"""
import json
import pathlib
import shutil

import torch
from peft import IA3Config, LoraConfig, get_peft_model
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

ROOT = pathlib.Path(__file__).resolve().parent.parent / "crates/peft-cli/tests/fixtures/peft"


def llama():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).eval()


def gpt2():
    torch.manual_seed(1)
    cfg = GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=4)
    return GPT2LMHeadModel(cfg).eval()


CASES = {
    "lora_patterns": (llama, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], rank_pattern={"down_proj": 2}, alpha_pattern={r"layers\.1\.self_attn\.v_proj": 3}, init_lora_weights=False)),
    "rslora_regex_layers": (llama, LoraConfig(r=8, lora_alpha=16, use_rslora=True, target_modules=r".*\.(k_proj|o_proj|up_proj)", init_lora_weights=False)),
    "dora": (llama, LoraConfig(r=4, lora_alpha=4, use_dora=True, target_modules=["q_proj", "gate_proj"], init_lora_weights=False)),
    "all_linear": (llama, LoraConfig(r=2, lora_alpha=5, target_modules="all-linear", init_lora_weights=False)),
    "layers_to_transform": (llama, LoraConfig(r=2, lora_alpha=6, target_modules=["q_proj", "up_proj"], layers_to_transform=[1], layers_pattern="layers", init_lora_weights=False)),
    "ia3": (llama, IA3Config(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"], init_ia3_weights=False)),
    "gpt2_fan_in_fan_out": (gpt2, LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True, init_lora_weights=False)),
}


def main():
    if ROOT.exists():
        shutil.rmtree(ROOT)
    for name, (make, config) in CASES.items():
        out = ROOT / name
        model = make()
        model.save_pretrained(out / "base", safe_serialization=True)
        peft_model = get_peft_model(model, config)
        torch.manual_seed(2)
        with torch.no_grad():
            for n, p in peft_model.named_parameters():
                if "ia3_l" in n:
                    p.copy_(1.0 + 0.5 * torch.randn_like(p))
                elif "lora_magnitude_vector" in n:
                    p.mul_(1.0 + 0.2 * torch.rand_like(p))
        peft_model.save_pretrained(out / "adapter", safe_serialization=True)
        merged = peft_model.merge_and_unload()
        from safetensors.torch import save_file
        state = {k: v.contiguous() for k, v in merged.state_dict().items()}
        if "lm_head.weight" in state and state["lm_head.weight"].data_ptr() == state.get("transformer.wte.weight", torch.empty(0)).data_ptr():
            state.pop("lm_head.weight")
        save_file({k: v.clone() for k, v in state.items()}, str(out / "merged.safetensors"))
        print(name, sorted(json.loads((out / "adapter/adapter_config.json").read_text()).keys())[:5], "...")


if __name__ == "__main__":
    main()
