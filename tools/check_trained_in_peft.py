#!/usr/bin/env python3
"""Checks an adapter trained by `peft train` in transformers + peft (run by hand, never in CI):
loads MODEL_DIR with the adapter of RUN_DIR/adapter, computes the eval loss of DATA with the
masking of docs/training.md, and compares it with `peft eval --json` (given as OURS).

    loss=$(peft eval --model MODEL_DIR --adapter RUN_DIR/adapter --data DATA --json)
    /tmp/py/bin/python tools/check_trained_in_peft.py MODEL_DIR RUN_DIR DATA "$loss"
"""
import json
import pathlib
import sys

from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from make_train_fixtures import eval_loss  # noqa: E402  (the same masking as the fixtures)


def main():
    model_dir, run_dir, data, ours = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), run_dir / "adapter").eval()
    rows = [json.loads(line) for line in pathlib.Path(data).read_text().splitlines() if line.strip()]
    theirs = eval_loss(model, tok, rows)
    diff = abs(theirs["loss"] - ours["loss"])
    print(f"transformers + peft: loss {theirs['loss']:.6f} over {theirs['tokens']} tokens; peft eval: {ours['loss']:.6f} over {ours['tokens']}; difference {diff:.1e}")
    sys.exit(0 if diff < 1e-4 and theirs["tokens"] == ours["tokens"] else 1)


if __name__ == "__main__":
    main()
