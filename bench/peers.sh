#!/usr/bin/env bash
# `make bench-peers`: the train-step, memory, pipeline and MoE benchmarks with DeepSpeed beside dsrun.
#
# DeepSpeed goes into its own venv, bench/.venv-peers (git-ignored, no system site-packages), with the same torch
# as the project's .venv and dsrun installed editable, so one worker process can run all three implementations.
# It never enters .venv: `make bench` there measures dsrun without DeepSpeed's imports or monkey-patches around.
set -euo pipefail

cd "$(dirname "$0")/.."
PEERS=bench/.venv-peers
PY="$PEERS/bin/python"
PYTHON="${PYTHON:-python3}"
# DeepSpeed on a machine without GPUs: its CPU accelerator, and no ahead-of-time op builds (it JIT-builds instead).
export DS_ACCELERATOR=cpu DS_BUILD_OPS=0

fail() {
  echo "bench-peers: $1" >&2
  exit 1
}

if [ ! -f "$PEERS/.installed" ] || [ pyproject.toml -nt "$PEERS/.installed" ]; then
  echo "bench-peers: installing torch 2.13.0 + deepspeed into $PEERS" >&2
  "$PYTHON" -m venv "$PEERS" || fail "could not create the venv $PEERS with $PYTHON"
  # torch pinned as in requirements-dev.txt: an unpinned torch would pull a several-GB CUDA build.
  if ! "$PY" -m pip install --quiet torch==2.13.0 deepspeed psutil matplotlib -e . >"$PEERS/install.log" 2>&1; then
    tail -n 20 "$PEERS/install.log" >&2
    fail "pip could not install DeepSpeed (log above, all of it in $PEERS/install.log)"
  fi
  touch "$PEERS/.installed"
fi

"$PY" -c "import deepspeed" 2>"$PEERS/import.log" || {
  tail -n 20 "$PEERS/import.log" >&2
  fail "DeepSpeed is installed in $PEERS but does not import (above)"
}

# DeepSpeed JIT-compiles the CPU ops a training run loads (shared-memory comm, fused Adam) on first use, about
# 90 s each here; built now, with a message, they are cached and no benchmark waits for a compiler.
echo "bench-peers: building DeepSpeed's CPU ops (once; cached afterwards)" >&2
"$PY" - <<'EOF' || fail "DeepSpeed could not build its CPU ops (shm comm, fused Adam): see the compiler output above"
from deepspeed.ops.op_builder.cpu import FusedAdamBuilder, ShareMemCommBuilder

for builder in (ShareMemCommBuilder(), FusedAdamBuilder()):
    builder.load(verbose=False)
EOF

exec "$PY" bench/run.py --only train-step train-step-bf16-sum memory pipeline moe "$@"
