#!/usr/bin/env python3
"""Turns Pang & Lee's sentence polarity CSV into chat instruction data for `peft train` (run by
hand; the data's licence allows personal use only, so its output is never committed).

    python3 tools/polarity_to_chat.py 'polarity-en-pang&lee2.csv' OUT_DIR [TRAIN TEST]

Writes OUT_DIR/train.jsonl and OUT_DIR/test.jsonl: a seeded split (seed 0) of TRAIN and TEST
sentences (3200 and 800 by default), each a user question and a one-word assistant answer; and
the same split as OUT_DIR/train.csv and OUT_DIR/test.csv with columns text,label (1 positive,
0 negative) for `peft train --task seq-cls`.
"""
import csv
import json
import pathlib
import random
import sys

QUESTION = "Is this movie review positive or negative? Answer with one word.\n\n"


def main():
    source, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    n_train, n_test = (int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) > 4 else (3200, 800)
    with open(source, encoding="utf-8-sig") as f:
        rows = [(label.strip(), text.strip()) for label, text in csv.reader(f) if label.strip() in ("1", "-1")]
    random.Random(0).shuffle(rows)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in [("train", rows[:n_train]), ("test", rows[n_train:n_train + n_test])]:
        with open(out / f"{name}.jsonl", "w") as f:
            for label, text in part:
                answer = "positive" if label == "1" else "negative"
                f.write(json.dumps({"messages": [{"role": "user", "content": QUESTION + text}, {"role": "assistant", "content": answer}]}) + "\n")
        with open(out / f"{name}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows((text, 1 if label == "1" else 0) for label, text in part)
        print(f"{out / name}.jsonl, {out / name}.csv: {len(part)} examples")


if __name__ == "__main__":
    main()
