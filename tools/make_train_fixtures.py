#!/usr/bin/env python3
"""Generates the training-workflow fixtures (run by hand, never in CI).

    python3 -m venv /tmp/py && /tmp/py/bin/pip install torch transformers peft tokenizers safetensors
    /tmp/py/bin/python tools/make_train_fixtures.py

Writes under crates/peft-train/tests/fixtures/:
  data/               a few dozen JSONL/CSV lines in every supported shape (chat messages,
                      ShareGPT conversations, Alpaca, prompt/completion, plain text, text+label)
  llama/, gpt2/       tiny random models (config.json, model.safetensors) with a small byte-level
                      BPE tokenizer.json trained here and a ChatML chat_template
  adapter/            a LoRA adapter for llama (peft, non-zero weights)
  expected.json       references from transformers + peft:
      templates:  apply_chat_template of every chat example (prompt with the generation prompt,
                  and the whole conversation) and their token ids
      eval:       token-weighted mean next-token loss per data file, with the masking of
                  docs/training.md (completion only for chat, instruction and prompt/completion
                  data; every token for plain text), for llama with and without the adapter
      generate:   greedy continuations of a chat prompt (transformers' generate)
"""
import json
import pathlib
import shutil

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

ROOT = pathlib.Path(__file__).resolve().parent.parent / "crates/peft-train/tests/fixtures"
CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CHAT = [
    [{"role": "user", "content": "Is this review positive or negative? A warm, funny film."}, {"role": "assistant", "content": "positive"}],
    [{"role": "user", "content": "Is this review positive or negative? Dull and far too long."}, {"role": "assistant", "content": "negative"}],
    [{"role": "system", "content": "You answer in one word."}, {"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris"}],
    [{"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Again, louder."}, {"role": "assistant", "content": "HELLO!"}],
    [{"role": "user", "content": "Two plus two?"}, {"role": "assistant", "content": "Four."}],
    [{"role": "user", "content": "Name a colour of the sky."}, {"role": "assistant", "content": "Blue, on a clear day."}],
]
SHAREGPT = [
    {"conversations": [{"from": "human", "value": "What is rust made of?"}, {"from": "gpt", "value": "Iron oxides."}]},
    {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Is water wet?"}, {"from": "gpt", "value": "Yes."}]},
]
ALPACA = [
    {"instruction": "Classify the sentiment.", "input": "I loved every minute.", "output": "positive"},
    {"instruction": "Classify the sentiment.", "input": "A waste of an evening.", "output": "negative"},
    {"instruction": "Give a synonym for happy.", "input": "", "output": "glad"},
    {"instruction": "Translate to French.", "input": "good morning", "output": "bonjour"},
]
PROMPT_COMPLETION = [
    {"prompt": "The opposite of hot is", "completion": " cold."},
    {"prompt": "One, two, three,", "completion": " four, five."},
    {"prompt": "Grass is", "completion": " green."},
    {"prompt": "A week has", "completion": " seven days."},
]
TEXT = [
    {"text": "The river rose in the night and the village woke to water in the streets."},
    {"text": "Bread is made from flour, water, salt and yeast, left to rise before baking."},
    {"text": "A sonnet has fourteen lines."},
    {"text": "Tides follow the moon."},
]
LABELS = [("a warm and funny film", 1), ("dull and far too long", 0), ("I loved every minute", 1), ("a waste of an evening", 0), ("sharp, moving and well acted", 1), ("tedious from start to finish", 0)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def conversation(row):
    """The messages of any chat-shaped or instruction-shaped row (docs/training.md)."""
    if "messages" in row:
        return row["messages"]
    if "conversations" in row:
        roles = {"human": "user", "gpt": "assistant", "system": "system"}
        return [{"role": roles[m["from"]], "content": m["value"]} for m in row["conversations"]]
    user = row["instruction"] if not row.get("input") else row["instruction"] + "\n" + row["input"]
    return [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]


def tokenizer():
    corpus = [m["content"] for c in CHAT for m in c] + [m["value"] for r in SHAREGPT for m in r["conversations"]]
    corpus += [r["instruction"] + r["input"] + r["output"] for r in ALPACA] + [r["prompt"] + r["completion"] for r in PROMPT_COMPLETION]
    corpus += [r["text"] for r in TEXT] + [t for t, _ in LABELS]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus * 4, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHATML
    return fast


def save(model, tok, name):
    path = ROOT / name
    shutil.rmtree(path, ignore_errors=True)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    (path / "generation_config.json").unlink(missing_ok=True)


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def example(tok, row):
    """(token ids, loss mask) of one data row, as docs/training.md states the semantics."""
    eos = tok.eos_token
    if "text" in row:
        full = ids(tok, row["text"] + eos)
        return full, [1] * len(full)
    if "prompt" in row:
        prompt, full = ids(tok, row["prompt"]), ids(tok, row["prompt"] + row["completion"] + eos)
    else:
        messages = conversation(row)
        prompt = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        prompt, full = ids(tok, prompt), ids(tok, tok.apply_chat_template(messages, tokenize=False))
    assert full[: len(prompt)] == prompt
    return full, [0] * len(prompt) + [1] * (len(full) - len(prompt))


def eval_loss(model, tok, rows):
    """Token-weighted mean next-token cross-entropy over the masked tokens of every row."""
    total, count = 0.0, 0
    for row in rows:
        full, mask = example(tok, row)
        labels = [t if m else -100 for t, m in zip(full, mask)]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([full])).logits.float()
        loss = torch.nn.functional.cross_entropy(logits[0, :-1], torch.tensor(labels[1:]), ignore_index=-100, reduction="sum")
        total += loss.item()
        count += sum(1 for t in labels[1:] if t != -100)
    return {"loss": total / count, "tokens": count}


def main():
    (ROOT / "data").mkdir(parents=True, exist_ok=True)
    write_jsonl(ROOT / "data/chat.jsonl", [{"messages": c} for c in CHAT] + SHAREGPT)
    write_jsonl(ROOT / "data/alpaca.jsonl", ALPACA)
    write_jsonl(ROOT / "data/prompt_completion.jsonl", PROMPT_COMPLETION)
    write_jsonl(ROOT / "data/text.jsonl", TEXT)
    (ROOT / "data/labels.csv").write_text("text,label\n" + "".join(f"\"{t}\",{l}\n" for t, l in LABELS))

    tok = tokenizer()
    vocab = len(tok)
    torch.manual_seed(0)
    llama = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=256, rope_theta=10000.0, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None))
    save(llama, tok, "llama")
    torch.manual_seed(1)
    # A wide init, so that greedy decoding does not settle on one token at once.
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=128, n_embd=32, n_layer=2, n_head=4, initializer_range=0.3, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None))
    save(gpt2, tok, "gpt2")

    torch.manual_seed(2)
    lora = get_peft_model(LlamaForCausalLM.from_pretrained(ROOT / "llama"), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM"))
    with torch.no_grad():  # a small, non-zero update: the adapter changes the model without swamping it
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.mul_(0.5)
    shutil.rmtree(ROOT / "adapter", ignore_errors=True)
    lora.save_pretrained(ROOT / "adapter")
    (ROOT / "adapter/README.md").unlink()
    config = json.loads((ROOT / "adapter/adapter_config.json").read_text())
    config["base_model_name_or_path"] = "llama"
    (ROOT / "adapter/adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")

    base = LlamaForCausalLM.from_pretrained(ROOT / "llama").eval()
    adapted = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(ROOT / "llama"), ROOT / "adapter").eval()
    gpt2 = GPT2LMHeadModel.from_pretrained(ROOT / "gpt2").eval()

    rows = {name: [json.loads(l) for l in (ROOT / "data" / f"{name}.jsonl").read_text().splitlines()] for name in ["chat", "alpaca", "prompt_completion", "text"]}
    templates = []
    for row in rows["chat"]:
        messages = conversation(row)
        prompt = tok.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(messages, tokenize=False)
        templates.append({"prompt": prompt, "full": full, "prompt_ids": ids(tok, prompt), "full_ids": ids(tok, full)})
    evals = {name: {"base": eval_loss(base, tok, r), "adapter": eval_loss(adapted, tok, r)} for name, r in rows.items()}
    evals["prompt_completion"]["gpt2"] = eval_loss(gpt2, tok, rows["prompt_completion"])

    question = [{"role": "user", "content": "Is this review positive or negative? A warm, funny film."}]
    prompt = ids(tok, tok.apply_chat_template(question, tokenize=False, add_generation_prompt=True))
    generate = {"prompt_ids": prompt}
    for name, model in [("llama", base), ("llama_adapter", adapted), ("gpt2", gpt2)]:
        with torch.no_grad():
            out = model.generate(input_ids=torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long), max_new_tokens=12, do_sample=False,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        generate[name] = out[0, len(prompt):].tolist()
    expected = {"vocab_size": vocab, "eos_id": tok.eos_token_id, "pad_id": tok.pad_token_id, "templates": templates, "eval": evals, "generate": generate}
    (ROOT / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(json.dumps({k: v for k, v in expected.items() if k != "templates"}, indent=1))


if __name__ == "__main__":
    main()
