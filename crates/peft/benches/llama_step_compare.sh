#!/usr/bin/env bash
# The Llama training-step comparison of docs/benchmarks.md, by hand (never in CI): ours
# (examples/llama_step.rs) and torch + peft (llama_step_torch.py) on the same saved weights and
# batch, interleaved, ROUNDS times per row, one output line per run.
#
#   python3 -m venv /tmp/venv && /tmp/venv/bin/pip install torch transformers peft safetensors
#   crates/peft/benches/llama_step_compare.sh [ROUNDS] [VOCAB ...]
#
# PYTHON (default /tmp/venv/bin/python), WORK (default /tmp/llama-step) and MODES (default
# "full lora_qv lora_all"; qlora_qv and qlora_all need bitsandbytes in PYTHON's environment) can
# be set in the environment; EXTRA is passed to the Rust programs, TORCH_EXTRA to the torch script
# (e.g. "--steps 5 --warmup 2").
# TCH, the path of a llama_step built with `--features tch` (libtorch under Burn; see
# docs/benchmarks.md for building it), adds a third line per round.
set -euo pipefail
cd "$(dirname "$0")/../../.."
rounds=${1:-2}
shift || true
vocabs=${*:-1000 32000}
python=${PYTHON:-/tmp/venv/bin/python}
work=${WORK:-/tmp/llama-step}
modes=${MODES:-full lora_qv lora_all}
cargo build --release -q -p peft --example llama_step
for vocab in $vocabs; do
  dir=$work/v$vocab
  [ -f "$dir/model.safetensors" ] || "$python" crates/peft/benches/llama_step_torch.py make --out "$dir" --vocab "$vocab" >/dev/null
  for mode in $modes; do
    for _ in $(seq "$rounds"); do
      echo "vocab=$vocab ours  $(target/release/examples/llama_step --model "$dir" --batch-file "$dir/batch.txt" --mode "$mode" ${EXTRA:-})"
      if [ -n "${TCH:-}" ]; then
        echo "vocab=$vocab tch   $("$TCH" --model "$dir" --batch-file "$dir/batch.txt" --mode "$mode" ${EXTRA:-})"
      fi
      echo "vocab=$vocab torch $("$python" crates/peft/benches/llama_step_torch.py step --model "$dir" --batch-file "$dir/batch.txt" --mode "$mode" ${TORCH_EXTRA:-} 2>/dev/null | tail -1)"
    done
  done
done
