"""The README's two commands stay true: CI runs the test command verbatim."""

from __future__ import annotations

from conftest import REPO_ROOT


def _readme_commands() -> list[str]:
    lines = (REPO_ROOT / "README.md").read_text().splitlines()
    start = lines.index("```bash")
    return [line.split("#")[0].strip() for line in lines[start + 1 : start + 3]]


def test_readme_starts_with_setup_plus_main_job_and_setup_plus_tests():
    main_job, tests = _readme_commands()
    assert main_job.startswith("bash scripts/setup.sh") and main_job.endswith("dvc repro")
    assert tests.startswith("bash scripts/setup.sh") and tests.endswith("pytest")


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (REPO_ROOT / ".ci" / "run").read_text().splitlines()
    assert _readme_commands()[1] in ci


def test_ci_lints_with_ruff_after_setup_and_before_the_tests():
    ci = (REPO_ROOT / ".ci" / "run").read_text().splitlines()
    setup = ci.index("bash scripts/setup.sh")
    lint = next(i for i, line in enumerate(ci) if "ruff check src tests scripts" in line)
    assert setup < lint < ci.index(_readme_commands()[1])
