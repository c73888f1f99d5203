#!/usr/bin/env bash
# Set up (or update) the project's virtual environment in .venv from nothing.
# pip >= 26 first: pip 23 backtracks for many minutes over the boto3/aiobotocore pins.
# constraints.txt pins every package to the versions CI was last green with.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q -U "pip>=26"
.venv/bin/python -m pip install -q --no-compile -c constraints.txt -e ".[dev]"
# --no-compile above skips bytecode for all ~21k installed modules (about a minute of CPU on 2
# cores, docs/benchmarks.md); instead the modules the project, its stages and tests import are compiled here,
# once, by importing them with bytecode writing on (even where PYTHONDONTWRITEBYTECODE is set,
# which would otherwise make every process compile them from source again).
PYTHONDONTWRITEBYTECODE= .venv/bin/python scripts/warm_imports.py
.venv/bin/culturegan --help >/dev/null
echo "setup: .venv ready ($(.venv/bin/python --version))"
