"""scripts/warm_imports.py, which setup.sh runs after `pip install --no-compile` so that the modules
the pipeline and tests import get their bytecode once: a module it names that no longer imports
would silently leave that tool compiling from source in every process."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO_ROOT


def test_every_module_warm_imports_names_imports() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "warm_imports.py")],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "not importable" not in proc.stderr, proc.stderr[-2000:]
