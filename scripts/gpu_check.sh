#!/usr/bin/env bash
# Issue 13's GPU check in one go: instance norm's gradients in both memory layouts on the device
# (a correctness check, about a second), plain vs tuned CycleGAN steps at 256x256 (ResNet 9 blocks,
# ngf 64; batch 1/4/8; fp16 with a gradient scaler and bf16; torch.compile on and off), peak
# CUDA memory, and a short real training + evaluation of one pair. Writes gpu_check.json and
# gpu_check.md to $OUT (the device tool's result folder) if set, else ./gpu_check.
#
# Runs WITHOUT the project's virtualenv: the GPU machine's own python3 (torch preinstalled,
# Python 3.12) with this repository's src/ on PYTHONPATH; nothing is pip-installed from an index.
# It needs numpy, pillow, pandas, pyarrow, scipy, pyyaml and pydantic besides torch. If pydantic
# is missing there, carry a wheelhouse made here beforehand (ignored by git, under 3 MB):
#   pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#       -d .gpu_wheels pydantic
#   echo /.gpu_wheels/ >> .git/info/exclude
# and call the device tool with carry [".gpu_wheels"]; this script installs from it with --no-index.
#
#   bash scripts/gpu_check.sh                      # the check (about 6 minutes of its budget)
#   bash scripts/gpu_check.sh --device cpu --quick # dry run of every part in seconds (a test does this)
#   bash scripts/gpu_check.sh --batches 1 --parts matrix,compile   # rerun what a budget cut off
# Extra arguments go to `python -m culturegan.gpucheck` (--budget-s, --no-compile, --out,
# --batches, --parts).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_env.sh
exec "$PY" -m culturegan.gpucheck "$@"
