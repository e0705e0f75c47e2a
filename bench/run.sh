#!/usr/bin/env bash
# Side-by-side benchmark of keel, Keras and PyTorch on the reference workflow
# (the environment also serves bench/speed.py, every speed row in one table, and training.py,
# inference.py, large_training.py, optimizer_steps.py, metrics_vs_sklearn.py, baselines.py and serve.py).
# Installs the peers into a virtual environment outside the source tree
# (KEEL_BENCH_VENV, default ~/.cache/keel/bench-venv), builds keel in release,
# then runs bench/compare.py. Extra arguments go to compare.py, e.g.
#   KEEL_DATA_DIR=../shared/datasets bench/run.sh --rounds 3 --threads 2
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${KEEL_BENCH_VENV:-$HOME/.cache/keel/bench-venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q tensorflow-cpu==2.21.0 torch==2.15.0 scikit-learn==1.9.1 onnxruntime==1.32.0 fastapi==0.165.0 uvicorn==0.54.0
cargo build --release
"$venv/bin/python" bench/compare.py "${KEEL_DATA_DIR:-../shared/datasets}" "$@"
