#!/usr/bin/env bash
# Kills `peft train` with SIGKILL at random moments, N times, resuming after each kill, and checks
# the contract of docs/reliability.md and docs/training.md: every `checkpoints/step-N` folder is
# complete (its state.json parses, its adapter's safetensors file has the length its header
# says), at most the killed run's temporary checkpoint folder is left beside them, and the run
# finished by `--resume` ends with the adapter bytes and the per-step losses of an uninterrupted
# run.
#
#   tools/kill_during_training.sh [PEFT_BINARY] [N]
#
# Trains the tiny fixture Llama of crates/peft-train/tests/fixtures for STEPS steps (default 4000,
# about a minute; a checkpoint every step), so that most kills land while it trains.
# Needs python3 (standard library only). Not run in CI.
set -euo pipefail
source "$(dirname "$0")/kill_common.sh"
peft=${1:-target/release/peft}
n=${2:-100}
fixtures=crates/peft-train/tests/fixtures
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
steps=${STEPS:-4000}
args=(train --model "$fixtures/llama" --data "$fixtures/data/chat.jsonl" --max-steps "$steps" --save-every 1 --eval-split 0 --lr 0.02 --target q_proj,v_proj)

"$peft" "${args[@]}" --out "$work/reference" >/dev/null

check() {  # run folder
    python3 - "$1" <<'PY'
import json, os, sys
root = os.path.join(sys.argv[1], "checkpoints")
if not os.path.isdir(root):
    sys.exit(0)
temporary = [d for d in os.listdir(root) if d.startswith(".step-")]
if len(temporary) > 1:
    sys.exit(f"{len(temporary)} temporary checkpoint folders: {temporary}")
for d in os.listdir(root):
    if d.startswith("step-"):
        state = json.load(open(os.path.join(root, d, "state.json")))
        assert state["step"] == int(d[5:]), d
        assert os.path.exists(os.path.join(root, d, "adapter", "adapter_model.safetensors")), d
PY
    shopt -s nullglob
    safetensors_complete "$1"/checkpoints/step-*/adapter/adapter_model.safetensors
    shopt -u nullglob
}

run="$work/run"
completed=0
for i in $(seq "$n"); do
    resume=()
    [ -d "$run" ] && resume=(--resume)
    kill_at_random 1.5 "$peft" "${args[@]}" --out "$run" "${resume[@]}" || completed=$((completed + 1))
    check "$run"
done
"$peft" "${args[@]}" --out "$run" --resume >/dev/null
check "$run"
cmp "$work/reference/adapter/adapter_model.safetensors" "$run/adapter/adapter_model.safetensors"
python3 - "$work/reference/log.jsonl" "$run/log.jsonl" <<'PY'
import json, sys
losses = [[(e["step"], e["loss"]) for e in map(json.loads, open(p)) if "loss" in e] for p in sys.argv[1:]]
assert losses[0] == losses[1], "the resumed run's losses differ from the uninterrupted run's"
print(f"{len(losses[0])} steps, every loss equal")
PY
echo "train: $n kills ($completed runs had already ended), every checkpoint complete, at most one temporary folder; resumed to step $steps with the uninterrupted run's adapter bytes"
