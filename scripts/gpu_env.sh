# Sourced by scripts/gpu_check.sh and scripts/gpu_run.sh (from the repository root): the GPU
# machine's own python3 (torch preinstalled) with this repository's src/ on PYTHONPATH, and
# pydantic from a carried wheelhouse (.gpu_wheels, see gpu_check.sh's header) when it is missing
# there. Sets PY. Nothing is pip-installed from an index.
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
if ! "$PY" -c "import pydantic, yaml, pandas, pyarrow, scipy, PIL" 2>/dev/null; then
    if [ -d .gpu_wheels ]; then
        deps=$(mktemp -d)
        "$PY" -m pip install -q --no-index --find-links .gpu_wheels --target "$deps" pydantic
        export PYTHONPATH="$PYTHONPATH:$deps"
    fi
    "$PY" -c "import pydantic, yaml, pandas, pyarrow, scipy, PIL" || {
        echo "a Python dependency is missing on this machine (see scripts/gpu_check.sh's header)" >&2
        exit 2
    }
fi
