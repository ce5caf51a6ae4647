#!/usr/bin/env python3
"""The torch + peft side of the Llama training-step comparison (run by hand, never in CI).

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install torch transformers peft safetensors
    /tmp/venv/bin/python crates/peft/benches/llama_step_torch.py make --out DIR [--vocab 32000]
    /tmp/venv/bin/python crates/peft/benches/llama_step_torch.py batch --out FILE --vocab V [--batch 8 --seq 128]
    /tmp/venv/bin/python crates/peft/benches/llama_step_torch.py step \
        --model DIR --batch-file DIR/batch.txt --mode full|lora_qv|lora_all|qlora_qv|qlora_all [--threads 2]

`make` saves a LlamaForCausalLM (hidden 256, 4 layers, 4 heads, intermediate 1024, untied head,
seed 0, f32) with transformers as DIR/config.json + DIR/model.safetensors, and 8 rows of 128
token ids as DIR/batch.txt; `batch` writes only such a file (for a real checkpoint, e.g.
SmolLM2-135M: `--vocab 49152 --seq 256`). `step` runs the protocol of crates/peft/examples/llama_step.rs: one
step = forward + next-token cross-entropy over every position + backward + AdamW (lr 1e-4),
`lora_qv` = LoRA r 8, alpha 16 on q_proj, v_proj; `lora_all` = LoRA r 16, alpha 32 on every
linear layer but the head; `qlora_qv` / `qlora_all` the same adapters on a base loaded in 4 bits by
bitsandbytes (NF4, blocks of 64, double quantization, f32 compute; `pip install bitsandbytes`,
whose CPU path is torch operations); 5 warm-up steps, the median of 20, the first step's loss and the CPU
time over the wall time of the timed steps, and the medians of the phases (forward with the loss,
backward, optimizer). It prints one line in the Rust program's format.
"""
import argparse
import pathlib
import statistics
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def write_batch(path, vocab, batch, seq):
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (batch, seq), generator=generator)
    pathlib.Path(path).write_text("".join(" ".join(str(int(t)) for t in row) + "\n" for row in ids))


def make(args):
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate, num_hidden_layers=args.layers,
                         num_attention_heads=args.heads, num_key_value_heads=args.heads, tie_word_embeddings=False, max_position_embeddings=2048)
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
    write_batch(out / "batch.txt", args.vocab, args.batch, args.seq)
    print(f"wrote {out}/config.json, model.safetensors and batch.txt ({args.batch}x{args.seq}, vocab {args.vocab})")


def step(args):
    torch.set_num_threads(args.threads)
    quantization = None
    if args.mode.startswith("qlora"):
        from transformers import BitsAndBytesConfig
        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                          bnb_4bit_compute_dtype=torch.float32, bnb_4bit_quant_storage=torch.uint8)
    model = LlamaForCausalLM.from_pretrained(args.model, torch_dtype=torch.float32, attn_implementation=args.attention,
                                             quantization_config=quantization, device_map="cpu" if quantization else None)
    if args.mode != "full":
        from peft import LoraConfig, get_peft_model
        if args.mode.endswith("_qv"):
            config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
        else:
            config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
        model = get_peft_model(model, config)
    model.train()
    rows = [[int(t) for t in line.split()] for line in pathlib.Path(args.batch_file).read_text().splitlines() if line.strip()]
    ids = torch.tensor(rows)
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)

    def one():
        t = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        forward = time.perf_counter()
        loss.backward()
        backward = time.perf_counter()
        optim.step()
        optim.zero_grad(set_to_none=True)
        end = time.perf_counter()
        return loss.item(), ((forward - t) * 1e3, (backward - forward) * 1e3, (end - backward) * 1e3)

    loss0, _ = one()
    for _ in range(args.warmup - 1):
        one()
    wall, cpu = time.perf_counter(), time.process_time()
    times, phases = [], []
    for _ in range(args.steps):
        t = time.perf_counter()
        phases.append(one()[1])
        times.append((time.perf_counter() - t) * 1e3)
    cores = (time.process_time() - cpu) / (time.perf_counter() - wall)
    forward, backward, optimizer = (statistics.median(p[i] for p in phases) for i in range(3))
    print(f"mode={args.mode} batch={ids.shape[0]} seq={ids.shape[1]} median_ms={statistics.median(times):.1f} loss0={loss0:.6f} cores={cores:.2f} "
          f"forward_ms={forward:.1f} backward_ms={backward:.1f} optimizer_ms={optimizer:.1f} "
          f"(torch {torch.__version__}, {args.threads} threads, attention {args.attention})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("make")
    m.add_argument("--out", required=True)
    m.add_argument("--vocab", type=int, default=1000)
    m.add_argument("--hidden", type=int, default=256)
    m.add_argument("--intermediate", type=int, default=1024)
    m.add_argument("--layers", type=int, default=4)
    m.add_argument("--heads", type=int, default=4)
    m.add_argument("--batch", type=int, default=8)
    m.add_argument("--seq", type=int, default=128)
    b = sub.add_parser("batch")
    b.add_argument("--out", required=True)
    b.add_argument("--vocab", type=int, required=True)
    b.add_argument("--batch", type=int, default=8)
    b.add_argument("--seq", type=int, default=128)
    s = sub.add_parser("step")
    s.add_argument("--model", required=True)
    s.add_argument("--batch-file", required=True)
    s.add_argument("--mode", required=True, choices=["full", "lora_qv", "lora_all", "qlora_qv", "qlora_all"])
    s.add_argument("--threads", type=int, default=2)
    s.add_argument("--steps", type=int, default=20)
    s.add_argument("--warmup", type=int, default=5)
    s.add_argument("--attention", default="sdpa", help="transformers' attn_implementation (sdpa: its default; eager)")
    args = parser.parse_args()
    if args.command == "make":
        make(args)
    elif args.command == "batch":
        write_batch(args.out, args.vocab, args.batch, args.seq)
    else:
        step(args)


if __name__ == "__main__":
    main()
