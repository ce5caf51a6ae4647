#!/usr/bin/env python3
"""Generates the sequence-classification fixtures (run by hand, never in CI).

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install torch transformers peft safetensors
    /tmp/venv/bin/python tools/make_seq_cls_fixtures.py

For each tiny model of crates/peft-models/tests/fixtures/hf/models (llama, gpt2_f16, bert), a
`*ForSequenceClassification` with a new head, LoRA on the attention's query/value with peft's
`task_type="SEQ_CLS"` (so the head is in `modules_to_save`), every LoRA weight and the head
perturbed. Writes adapters/CASE_seq_cls/ (the peft folder) and its expected.safetensors:
`class_logits` [2, num_labels] for ROWS padded on the right with the attention mask.

And for the training workflow's tiny llama (crates/peft-train/tests/fixtures/llama) the same on
data/labels.csv: seq_cls_adapter/ and, in expected_seq_cls.json, transformers + peft's mean
cross-entropy and accuracy over the file in batches of 3, padded on the right.
"""
import csv
import json
import pathlib

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerFast

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODELS = ROOT / "crates/peft-models/tests/fixtures/hf"
TRAIN = ROOT / "crates/peft-train/tests/fixtures"
ROWS = [[3, 17, 5, 42, 8, 1, 60], [9, 4, 33, 2]]
PAD = 0
# model folder: (LoRA targets, classes)
CASES = {"llama": (["q_proj", "v_proj"], 3), "gpt2_f16": (["c_attn"], 2), "bert": (["query", "value"], 3)}


def classifier(model_dir, targets, labels, seed):
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=labels, torch_dtype=torch.float32)
    model.config.pad_token_id = PAD
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False, task_type="SEQ_CLS"))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                p.add_(torch.randn_like(p) * 0.3)
    return peft_model.eval()


def padded(rows):
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [PAD] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ids, mask


def model_cases():
    for i, (name, (targets, labels)) in enumerate(CASES.items()):
        model = classifier(MODELS / "models" / name, targets, labels, 10 + i)
        out = MODELS / "adapters" / f"{name.split('_')[0]}_seq_cls"
        model.save_pretrained(out)
        ids, mask = padded(ROWS)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits
            alone = torch.cat([model(input_ids=torch.tensor([r])).logits for r in ROWS])
        assert torch.allclose(logits, alone, atol=1e-5), name
        save_file({"class_logits": logits.contiguous()}, str(out / "expected.safetensors"))
        print(f"{out.name}: class logits {tuple(logits.shape)}, {logits.tolist()}")


def train_case():
    tok = PreTrainedTokenizerFast.from_pretrained(TRAIN / "llama")
    with open(TRAIN / "data/labels.csv") as f:
        rows = list(csv.DictReader(f))
    model = classifier(TRAIN / "llama", ["q_proj", "v_proj"], 2, 20)
    model.save_pretrained(TRAIN / "seq_cls_adapter")
    total, right = 0.0, 0
    for i in range(0, len(rows), 3):
        chunk = rows[i:i + 3]
        batch = tok([r["text"] for r in chunk], padding=True, return_tensors="pt")
        labels = torch.tensor([int(r["label"]) for r in chunk])
        with torch.no_grad():
            logits = model(**batch).logits
        total += torch.nn.functional.cross_entropy(logits, labels, reduction="sum").item()
        right += (logits.argmax(-1) == labels).sum().item()
    expected = {"loss": total / len(rows), "accuracy": right / len(rows), "examples": len(rows)}
    (TRAIN / "expected_seq_cls.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"seq_cls_adapter: {expected}")


if __name__ == "__main__":
    model_cases()
    train_case()
