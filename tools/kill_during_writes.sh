#!/usr/bin/env bash
# Kills `peft quantize`, `peft dequantize` and `peft merge` with SIGKILL at random moments, N times
# each, and checks
# the contract of docs/reliability.md after every kill: the output is absent, the old one, or
# complete (a safetensors file whose header and length agree), and at most one temporary file
# (`.NAME.tmp-PID`) is left beside it; the next complete run removes it.
#
#   tools/kill_during_writes.sh [PEFT_BINARY] [N]      (COMMANDS="merge" for a subset)
#
# Needs python3 (standard library only) to write a 256 MB input (and a LoRA adapter for it) and
# check outputs. Not run in CI.
set -euo pipefail
source "$(dirname "$0")/kill_common.sh"
peft=${1:-target/release/peft}
n=${2:-100}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 - "$work/model.safetensors" <<'PY'
import json, struct, sys, random
random.seed(0)
rows, cols, count = 2048, 4096, 8          # 8 tensors of 32 MB
header, offset = {}, 0
for i in range(count):
    header[f"layers.{i}.weight"] = {"dtype": "F32", "shape": [rows, cols], "data_offsets": [offset, offset + rows * cols * 4]}
    offset += rows * cols * 4
text = json.dumps(header).encode()
text += b" " * (-len(text) % 8)
block = struct.pack("<1024f", *[random.uniform(-1, 1) for _ in range(1024)])
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text)
    for _ in range(offset // len(block)):
        f.write(block)
PY

# A peft LoRA adapter (r 8) on every layer of that checkpoint, for `merge`.
mkdir "$work/adapter"
python3 - "$work/adapter" <<'PY'
import json, struct, sys, random
random.seed(1)
rows, cols, count, r = 2048, 4096, 8, 8
header, blobs, offset = {}, [], 0
for i in range(count):
    for name, shape in (("lora_A", [r, cols]), ("lora_B", [rows, r])):
        n = shape[0] * shape[1]
        header[f"base_model.model.layers.{i}.{name}.weight"] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + 4 * n]}
        blobs.append(struct.pack(f"<{n}f", *[random.uniform(-0.01, 0.01) for _ in range(n)]))
        offset += 4 * n
text = json.dumps(header).encode()
text += b" " * (-len(text) % 8)
with open(f"{sys.argv[1]}/adapter_model.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
config = {"peft_type": "LORA", "r": r, "lora_alpha": 16, "target_modules": [f"layers.{i}" for i in range(count)], "fan_in_fan_out": False, "bias": "none"}
json.dump(config, open(f"{sys.argv[1]}/adapter_config.json", "w"))
PY

check() {  # output
    safetensors_complete "$1"
    local left
    left=$(find "$(dirname "$1")" -maxdepth 1 -name ".$(basename "$1").tmp-*" | wc -l)
    if [ "$left" -gt 1 ]; then echo "$left temporary files beside $1" >&2; exit 1; fi
}

# quantize (a 256 MB input, a 35 MB output), then dequantize and merge (256 MB outputs, so that kills
# also land while the file is being written).
"$peft" quantize --in "$work/model.safetensors" --out "$work/q.safetensors" --quant-type nf4 --double-quant >/dev/null
for command in ${COMMANDS:-quantize dequantize merge}; do
    out="$work/$command.safetensors"
    case $command in
        quantize) args=(quantize --in "$work/model.safetensors" --out "$out" --quant-type nf4 --double-quant) ;;
        dequantize) args=(dequantize --in "$work/q.safetensors" --out "$out") ;;
        merge) args=(merge --base "$work" --adapter "$work/adapter" --out "$out") ;;
    esac
    mid_write=0
    for i in $(seq "$n"); do
        kill_at_random 4.0 "$peft" "${args[@]}" || true
        if [ -e "$work/.$command.safetensors.tmp-$KILLED_PID" ]; then mid_write=$((mid_write + 1)); fi
        check "$out"
    done
    "$peft" "${args[@]}" >/dev/null
    check "$out"
    left=$(find "$work" -maxdepth 1 -name ".$command.safetensors.tmp-*" | wc -l)
    echo "$command: $n kills ($mid_write while the output was being written): output absent, old or complete every time, at most one temporary file; $left temporary files after a complete run"
    [ "$left" -eq 0 ]
done
