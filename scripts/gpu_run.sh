#!/usr/bin/env bash
# A params profile's directions trained longer on a lent GPU, within a time budget (issue 10's
# real-art route; `python -m culturegan.gpurun --help` says what it does and writes). Same
# environment as scripts/gpu_check.sh (its header: the carried pydantic wheels). The images do not
# travel by themselves (../shared is outside the repository): copy them into an ignored folder of
# the repository and carry it with the wheels:
#   cp -r ../shared/realart .realart && echo /.realart/ >> .git/info/exclude
#   device run, carry [".gpu_wheels", ".realart"]:
#   bash scripts/gpu_run.sh --images .realart --steps 2880,8640 --budget-s 480
# The style classifier trains on the CPU (the real-art profile's five members: minutes even on the
# GPU machine's cores): better prepare data and classifier here beforehand, in a second clone
# (`culturegan prepare|classifier --params params/realart.yaml`), copy data/ and
# runs/style_classifier/ into ignored folders (.gpu_data, .gpu_clf), carry them, and pass
#   --data .gpu_data --classifier .gpu_clf/classifier.pt   (instead of --images)
#   bash scripts/gpu_run.sh --device cpu --quick --images DIR --steps 1,2   # dry run (a test does this)
# Arguments go to `python -m culturegan.gpurun` (--params, --images, --steps, --budget-s, --jobs,
# --set key=value, --out).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_env.sh
exec "$PY" -m culturegan.gpurun "$@"
