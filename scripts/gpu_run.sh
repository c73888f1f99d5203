#!/usr/bin/env bash
# A params profile's directions trained longer on a lent GPU, within a time budget (issue 10's
# real-art route; `python -m culturegan.gpurun --help` says what it does and writes). Same
# environment as scripts/gpu_check.sh (its header: the carried pydantic wheels). The images do not
# travel by themselves (../shared is outside the repository): copy them into an ignored folder of
# the repository and carry it with the wheels:
#   cp -r ../shared/realart .realart && echo /.realart/ >> .git/info/exclude
#   device run, carry [".gpu_wheels", ".realart"]:
#   bash scripts/gpu_run.sh --images .realart --steps 2880,8640 --budget-s 480
#   bash scripts/gpu_run.sh --device cpu --quick --images DIR --steps 1,2   # dry run (a test does this)
# Arguments go to `python -m culturegan.gpurun` (--params, --images, --steps, --budget-s, --jobs,
# --set key=value, --out).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_env.sh
exec "$PY" -m culturegan.gpurun "$@"
