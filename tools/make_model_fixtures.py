#!/usr/bin/env python3
"""Generates reference-model parity fixtures (run by hand, never in CI).

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install torch transformers peft safetensors
    /tmp/venv/bin/python tools/make_model_fixtures.py [CASE ...]

Writes under crates/peft-models/tests/fixtures/hf/:
  models/NAME/      config.json + model.safetensors of a tiny random HF model (f32, bf16 or f16)
  adapters/CASE/    adapter_config.json + adapter_model.safetensors (peft, non-zero weights),
                    expected.safetensors: `base` and `adapted` outputs of transformers + peft for
                    TOKENS (logits for causal LMs, last hidden state for BertModel; with prompt
                    tuning, those of the tokens after the virtual ones), for LoRA
                    cases `merged.safetensors`, the state dict after peft's merge_and_unload, and
                    for P-Tuning with an LSTM `encoder.safetensors`, the encoder's state dict and
                    its output `virtual_tokens`.
"""
import json
import pathlib
import shutil
import sys

import torch
from peft import IA3Config, LoraConfig, PeftModel, PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModel, AutoModelForCausalLM, BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

ROOT = pathlib.Path(__file__).resolve().parent.parent / "crates/peft-models/tests/fixtures/hf"
TOKENS = [3, 17, 5, 42, 8, 1, 60]


def llama(tied):
    torch.manual_seed(0 if not tied else 3)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=64, tie_word_embeddings=tied, rope_theta=500.0)
    return LlamaForCausalLM(cfg)


def gpt2():
    torch.manual_seed(1)
    return GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=4))


def bert():
    torch.manual_seed(2)
    return BertModel(BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48, max_position_embeddings=32), add_pooling_layer=True)


# name: (constructor, dtype it is saved in, is causal LM)
MODELS = {
    "llama": (lambda: llama(False), torch.float32, True),
    "llama_tied_bf16": (lambda: llama(True), torch.bfloat16, True),
    "gpt2_f16": (gpt2, torch.float16, True),
    "bert": (bert, torch.float32, False),
}

CASES = {
    "llama_lora": ("llama", LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj", "embed_tokens"], rank_pattern={"down_proj": 2}, alpha_pattern={r"layers\.1\.self_attn\.v_proj": 3}, init_lora_weights=False, task_type="CAUSAL_LM")),
    "llama_rslora_all_linear": ("llama", LoraConfig(r=4, lora_alpha=6, use_rslora=True, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")),
    "llama_dora_layers": ("llama", LoraConfig(r=2, lora_alpha=4, use_dora=True, target_modules=["k_proj", "o_proj", "gate_proj"], layers_to_transform=[1], layers_pattern="layers", init_lora_weights=False, task_type="CAUSAL_LM")),
    "llama_ia3": ("llama", IA3Config(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"], init_ia3_weights=False, task_type="CAUSAL_LM")),
    "llama_prefix": ("llama", PrefixTuningConfig(num_virtual_tokens=3, task_type="CAUSAL_LM")),
    "llama_tied_lora": ("llama_tied_bf16", LoraConfig(r=4, lora_alpha=4, target_modules=r".*\.(q_proj|up_proj)", init_lora_weights=False, task_type="CAUSAL_LM")),
    "gpt2_lora": ("gpt2_f16", LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"], fan_in_fan_out=True, init_lora_weights=False, task_type="CAUSAL_LM")),
    "gpt2_prefix": ("gpt2_f16", PrefixTuningConfig(num_virtual_tokens=2, task_type="CAUSAL_LM")),
    "llama_prompt": ("llama", PromptTuningConfig(num_virtual_tokens=3, task_type="CAUSAL_LM")),
    "gpt2_prompt": ("gpt2_f16", PromptTuningConfig(num_virtual_tokens=2, task_type="CAUSAL_LM")),
    "bert_prompt": ("bert", PromptTuningConfig(num_virtual_tokens=2, task_type="FEATURE_EXTRACTION")),
    "llama_prefix_projection": ("llama", PrefixTuningConfig(num_virtual_tokens=3, prefix_projection=True, encoder_hidden_size=16, task_type="CAUSAL_LM")),
    "llama_ptuning": ("llama", PromptEncoderConfig(num_virtual_tokens=3, encoder_hidden_size=16, task_type="CAUSAL_LM")),
    "llama_ptuning_lstm": ("llama", PromptEncoderConfig(num_virtual_tokens=3, encoder_hidden_size=8, encoder_reparameterization_type="LSTM", task_type="CAUSAL_LM")),
    "bert_lora": ("bert", LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value", "dense"], init_lora_weights=False, task_type="FEATURE_EXTRACTION")),
    "bert_prefix": ("bert", PrefixTuningConfig(num_virtual_tokens=2, task_type="FEATURE_EXTRACTION")),
    "bert_prefix_projection": ("bert", PrefixTuningConfig(num_virtual_tokens=2, prefix_projection=True, encoder_hidden_size=16, task_type="FEATURE_EXTRACTION")),
    "bert_ia3": ("bert", IA3Config(target_modules=["key", "value", "output.dense"], feedforward_modules=["output.dense"], init_ia3_weights=False, task_type="FEATURE_EXTRACTION")),
}


def load(name):
    path = ROOT / "models" / name
    cls = AutoModelForCausalLM if MODELS[name][2] else AutoModel
    return cls.from_pretrained(path, dtype=torch.float32).eval()


def output(model, causal):
    with torch.no_grad():
        out = model(input_ids=torch.tensor([TOKENS]))
    # Prompt tuning's outputs include its virtual tokens first: the tokens' own are the last.
    return (out.logits if causal else out.last_hidden_state)[:, -len(TOKENS):].float().contiguous()


def perturb(model):
    torch.manual_seed(7)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "ia3_l" in n:
                p.copy_(1.0 + 0.5 * torch.randn_like(p))
            elif "lora_magnitude_vector" in n:
                p.mul_(1.0 + 0.2 * torch.rand_like(p))
            elif "lora_" in n:
                p.add_(0.2 * torch.randn_like(p))


def main(only):
    """With case names, (re)makes only those cases and keeps the models."""
    if not only and ROOT.exists():
        shutil.rmtree(ROOT)
    for name, (make, dtype, _) in MODELS.items():
        if not (ROOT / "models" / name).exists():
            make().to(dtype).save_pretrained(ROOT / "models" / name, safe_serialization=True)
            (ROOT / "models" / name / "generation_config.json").unlink(missing_ok=True)
    for case, (model_name, config) in CASES.items():
        if only and case not in only:
            continue
        out = ROOT / "adapters" / case
        causal = MODELS[model_name][2]
        base = load(model_name)
        expected = {"base": output(base, causal)}
        peft_model = get_peft_model(base, config)
        perturb(peft_model)
        peft_model.eval()
        expected["adapted"] = output(peft_model, causal)
        peft_model.save_pretrained(out, safe_serialization=True)
        (out / "README.md").unlink(missing_ok=True)
        # The saved files alone reproduce the outputs.
        again = PeftModel.from_pretrained(load(model_name), out).eval()
        assert torch.allclose(output(again, causal), expected["adapted"], atol=1e-6), case
        save_file(expected, str(out / "expected.safetensors"))
        if isinstance(config, PromptEncoderConfig) and config.encoder_reparameterization_type == "LSTM":
            # The encoder itself (peft saves only its output): our LSTM is checked against it.
            encoder = peft_model.prompt_encoder["default"]
            state = {k: v.detach().clone().contiguous() for k, v in encoder.state_dict().items()}
            with torch.no_grad():
                state["virtual_tokens"] = encoder(torch.arange(config.num_virtual_tokens)).contiguous()
            save_file(state, str(out / "encoder.safetensors"))
        if isinstance(config, (LoraConfig, IA3Config)):
            merged = peft_model.merge_and_unload()
            state = {k: v.detach().clone().contiguous() for k, v in merged.state_dict().items()}
            save_file(state, str(out / "merged.safetensors"))
        diff = (expected["adapted"] - expected["base"]).abs().max().item()
        print(f"{case}: output {tuple(expected['adapted'].shape)}, adapter changes it by up to {diff:.3g}")
    (ROOT / "tokens.json").write_text(json.dumps(TOKENS) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
