#!/usr/bin/env python3
"""Generates the parity fixture of weighted LoRA combinations (run by hand, never in CI).

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install torch transformers peft safetensors
    /tmp/venv/bin/python tools/make_combination_fixtures.py

On the fixture Llama of tools/make_model_fixtures.py (crates/peft-models/tests/fixtures/hf/models/
llama) it attaches two LoRA adapters of different ranks and alphas to the same modules, gives them
random non-zero weights, and combines them with peft's `add_weighted_adapter` (weights 0.7 and
-0.4); a third adapter `c` of `a`'s rank (alpha 6) takes part in the combinations that need equal
ranks. It writes under crates/peft-models/tests/fixtures/hf/adapters/llama_combination/:
  a/, b/, c/           the adapters as peft folders
  expected.safetensors logits for TOKENS with each combination active: `cat`, `svd` (default
                       rank, the largest of the parts) and `svd_rank3` of a and b; `ties`
                       (density 0.5), `ties_frequency` (density 0.7, majority_sign_method
                       "frequency") and `magnitude_prune` (density 0.5) of a and c
"""
import json
import pathlib
import shutil

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

HF = pathlib.Path(__file__).resolve().parent.parent / "crates/peft-models/tests/fixtures/hf"
OUT = HF / "adapters/llama_combination"
TARGETS = ["q_proj", "v_proj", "down_proj"]
WEIGHTS = [0.7, -0.4]


def main():
    torch.manual_seed(0)
    tokens = json.loads((HF / "tokens.json").read_text())
    base = AutoModelForCausalLM.from_pretrained(HF / "models/llama", dtype=torch.float32).eval()
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False), adapter_name="a")
    model.add_adapter("b", LoraConfig(r=2, lora_alpha=3, target_modules=TARGETS, init_lora_weights=False))
    model.add_adapter("c", LoraConfig(r=4, lora_alpha=6, target_modules=TARGETS, init_lora_weights=False))
    torch.manual_seed(11)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.add_(0.2 * torch.randn_like(p))
    if OUT.exists():
        shutil.rmtree(OUT)
    # peft saves an adapter not called "default" into a subfolder of its name.
    model.save_pretrained(OUT, selected_adapters=["a", "b", "c"], safe_serialization=True)
    (OUT / "README.md").unlink(missing_ok=True)
    model.add_weighted_adapter(["a", "b"], WEIGHTS, "cat", combination_type="cat")
    model.add_weighted_adapter(["a", "b"], WEIGHTS, "svd", combination_type="svd")
    model.add_weighted_adapter(["a", "b"], WEIGHTS, "svd_rank3", combination_type="svd", svd_rank=3)
    model.add_weighted_adapter(["a", "c"], WEIGHTS, "ties", combination_type="ties", density=0.5)
    model.add_weighted_adapter(["a", "c"], WEIGHTS, "ties_frequency", combination_type="ties", density=0.7, majority_sign_method="frequency")
    model.add_weighted_adapter(["a", "c"], WEIGHTS, "magnitude_prune", combination_type="magnitude_prune", density=0.5)
    expected = {}
    for name in ["cat", "svd", "svd_rank3", "ties", "ties_frequency", "magnitude_prune"]:
        model.set_adapter(name)
        with torch.no_grad():
            expected[name] = model(input_ids=torch.tensor([tokens])).logits.float().contiguous()
    save_file(expected, str(OUT / "expected.safetensors"))
    for name, logits in expected.items():
        print(f"{name}: logits {tuple(logits.shape)}, |logits| up to {logits.abs().max().item():.3g}")


if __name__ == "__main__":
    main()
