#!/usr/bin/env bash
# One prepared run on a lent GPU (the device tool): install, then every GPU measurement in one table.
# Fits ten minutes on one H100/H200: the install is the project's own, each timed row stops at its
# budget. Usage: bash benchmarks/gpu.sh [OUT_DIR]   (the table goes to OUT_DIR/gpu_table.md)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-.}}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e .
fi
.venv/bin/python -c "import torch; print('cuda', torch.cuda.is_available(), torch.__version__)"
timeout 540 .venv/bin/python benchmarks/gpu.py --budget 20 --out "$out/gpu_table.md"
