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
.venv/bin/culturegan --help >/dev/null
echo "setup: .venv ready ($(.venv/bin/python --version))"
