"""Import every module of culturegan and the entry points of the tools it drives, so that Python
writes their bytecode once (scripts/setup.sh runs this after `pip install --no-compile`).

A module missed here still works: it is compiled when first imported, and again in every process
where PYTHONDONTWRITEBYTECODE is set. Nothing here may have side effects beyond imports.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import culturegan

# Imported lazily by the stages (inside functions), by the `dvc` and `mlflow` programs that the
# pipeline and the tests start, and by the tests' own servers.
# The last two lines were measured: after a warm-up with only the lines above, a test-suite run
# with bytecode writing on compiled 2 280 more modules, nearly all of them those of `dvc` (its
# parser imports every command, and networkx, hydra, scmrepo), the `mlflow server` (stores,
# handlers, uvicorn), torchmetrics and kfp's local runner (docker).
TOOLS = [
    "torch", "torchvision", "mlflow", "mlflow.server", "mlflow.pyfunc", "mlflow.models",
    "great_expectations", "kfp", "kfp.dsl", "kfp.compiler", "kfp.local", "dvc.cli", "dvc.repo",
    "dvc.repo.reproduce", "dvc.commands.repro", "moto.server", "boto3", "pandas", "scipy.ndimage",
    "pyarrow.parquet", "PIL.Image", "skimage", "pytest",
    "dvc.cli.parser", "dvc.repo.index", "scmrepo.git", "networkx", "hydra", "torchmetrics",
    "mlflow.server.handlers", "mlflow.store.tracking.sqlalchemy_store", "uvicorn", "docker",
]


def main() -> None:
    missing = []
    names = [m.name for m in pkgutil.walk_packages(culturegan.__path__, "culturegan.")] + TOOLS
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:  # an optional tool not installed: nothing to compile
            missing.append(f"{name} ({exc})")
    if missing:
        print("warm_imports: not importable: " + "; ".join(missing), file=sys.stderr)


if __name__ == "__main__":
    main()
