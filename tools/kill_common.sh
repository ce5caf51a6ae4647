# What tools/kill_during_writes.sh and tools/kill_during_training.sh share; sourced by both.

# Exits with an error naming the first of the given safetensors files whose length is not the one
# its header gives (a file that does not exist passes: "absent" is allowed after a kill).
safetensors_complete() {
    python3 - "$@" <<'PY'
import json, os, struct, sys
for path in sys.argv[1:]:
    if not os.path.exists(path):
        continue
    with open(path, "rb") as f:
        size = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(size))
    end = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
    if os.path.getsize(path) != 8 + size + end:
        sys.exit(f"damaged: {path}")
PY
}

# Runs the command given after MAX_SECONDS in the background, kills it with SIGKILL after a random
# 0.05 to MAX_SECONDS seconds and waits for it. Sets KILLED_PID; returns 1 when the command had
# already ended.
kill_at_random() {
    local max=$1
    shift
    "$@" >/dev/null 2>&1 &
    KILLED_PID=$!
    sleep "$(python3 -c "import random; print(random.uniform(0.05, $max))")"
    local killed=0
    kill -9 "$KILLED_PID" 2>/dev/null || killed=1
    wait "$KILLED_PID" 2>/dev/null || true
    return "$killed"
}
