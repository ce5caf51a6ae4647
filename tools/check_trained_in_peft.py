#!/usr/bin/env python3
"""Checks an adapter trained by `peft train` in transformers + peft (run by hand, never in CI):
loads MODEL_DIR with the adapter of RUN_DIR/adapter, computes the eval loss of DATA with the
masking of docs/training.md, and compares it with `peft eval --json` (given as OURS). A
`task_type = "SEQ_CLS"` adapter loads on `AutoModelForSequenceClassification` and is scored on
DATA's text/label rows (JSONL or CSV): mean cross-entropy per text and accuracy.

    loss=$(peft eval --model MODEL_DIR --adapter RUN_DIR/adapter --data DATA --json)
    /tmp/py/bin/python tools/check_trained_in_peft.py MODEL_DIR RUN_DIR DATA "$loss"
"""
import json
import pathlib
import sys

from peft import PeftModel
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from make_train_fixtures import eval_loss  # noqa: E402  (the same masking as the fixtures)


def labeled_rows(data):
    path = pathlib.Path(data)
    if path.suffix.lower() == ".csv":
        import csv
        with open(path) as f:
            return [(r["text"], int(r["label"])) for r in csv.DictReader(f)]
    return [(r["text"], int(r["label"])) for r in map(json.loads, filter(str.strip, path.read_text().splitlines()))]


def classification(model_dir, run_dir, data, tok):
    """Mean cross-entropy per text and accuracy, batches of 8 padded on the right."""
    from safetensors import safe_open
    with safe_open(run_dir / "adapter/adapter_model.safetensors", "pt") as f:
        head = next(k for k in f.keys() if k.endswith(("score.weight", "classifier.weight")))
        num_labels = f.get_slice(head).get_shape()[0]
    base = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=num_labels)
    base.config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    model = PeftModel.from_pretrained(base, run_dir / "adapter").eval()
    rows = labeled_rows(data)
    total, right = 0.0, 0
    for i in range(0, len(rows), 8):
        chunk = rows[i:i + 8]
        batch = tok([t for t, _ in chunk], padding=True, return_tensors="pt")
        y = torch.tensor([l for _, l in chunk])
        with torch.no_grad():
            logits = model(**batch).logits
        total += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
        right += (logits.argmax(-1) == y).sum().item()
    return {"loss": total / len(rows), "tokens": len(rows), "accuracy": right / len(rows)}


def main():
    model_dir, run_dir, data, ours = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
    tok = AutoTokenizer.from_pretrained(model_dir)
    if json.loads((run_dir / "adapter/adapter_config.json").read_text()).get("task_type") == "SEQ_CLS":
        theirs = classification(model_dir, run_dir, data, tok)
        diff = abs(theirs["loss"] - ours["loss"])
        print(f"transformers + peft: loss {theirs['loss']:.6f}, accuracy {theirs['accuracy']} over {theirs['tokens']} texts; peft eval: {ours['loss']:.6f}, {ours['accuracy']}; difference {diff:.1e}")
        sys.exit(0 if diff < 1e-4 and theirs["accuracy"] == ours["accuracy"] else 1)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), run_dir / "adapter").eval()
    rows = [json.loads(line) for line in pathlib.Path(data).read_text().splitlines() if line.strip()]
    theirs = eval_loss(model, tok, rows)
    diff = abs(theirs["loss"] - ours["loss"])
    print(f"transformers + peft: loss {theirs['loss']:.6f} over {theirs['tokens']} tokens; peft eval: {ours['loss']:.6f} over {ours['tokens']}; difference {diff:.1e}")
    sys.exit(0 if diff < 1e-4 and theirs["tokens"] == ours["tokens"] else 1)


if __name__ == "__main__":
    main()
