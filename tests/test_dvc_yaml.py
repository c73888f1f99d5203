"""dvc.yaml's declarations against what the stages write (metrics and plots files, artifacts) and
against the code they run (each stage's `src/` deps cover the modules its command imports)
(fast: parses dvc.yaml and the sources; one test runs `dvc metrics show` / `dvc plots show` /
`dvc exp show` on a copy with stand-in files)."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO_ROOT
from test_structure import import_graph, import_targets, imports_in, package_modules

from culturegan.config import load_params
from culturegan.evaluation import analysis
from culturegan.evaluation.classifier import CLASSIFIER_FILE
from culturegan.stages import (
    CLASSIFIER_DIR,
    REPORT_DIR,
    RUNS_ROOT,
    evaluation_summary,
    train_summary,
)

DVC = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())
PARAMS = load_params(REPO_ROOT / "params.yaml")


def _entries(stage: dict[str, Any], section: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for entry in stage.get(section, []):
        path, flags = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
        out[path] = flags
    return out


def _summary_path(stage: dict[str, Any]) -> str | None:
    found = re.search(r"--summary (\S+)", " ".join(stage["cmd"].split()))
    return found.group(1) if found else None


@pytest.mark.parametrize("name", ["prepare", "train", "evaluate", "analyze"])
def test_each_stage_declares_the_summary_its_command_writes_as_an_uncached_metrics_file(name: str):
    stage = DVC["stages"][name]
    path = _summary_path(stage)
    assert path is not None, f"{name} writes no --summary"
    assert _entries(stage, "metrics") == {path: {"cache": False}}


def test_no_metrics_file_lies_inside_an_output_folder_which_dvc_would_refuse_as_overlapping():
    outs = [p for stage in DVC["stages"].values() for p in _entries(stage, "outs")]
    for stage in DVC["stages"].values():
        for metric in _entries(stage, "metrics"):
            assert not any(metric.startswith(o.rstrip("/") + "/") for o in outs), metric


def test_top_level_plots_are_the_figures_the_analysis_always_writes():
    written = {str(REPORT_DIR / f) for f in (analysis.SCATTER_PNG, analysis.METHODS_PNG, analysis.CULTURE_PNG)}
    assert set(DVC["plots"]) == written
    assert str(REPORT_DIR) in _entries(DVC["stages"]["analyze"], "outs")


def test_artifacts_are_the_classifier_and_every_generator_of_params_yaml():
    expected = {"style-classifier": str(CLASSIFIER_DIR / CLASSIFIER_FILE)}
    assert PARAMS.train.objective == "cyclegan"  # else no reverse generators: update the artifacts
    for pair in PARAMS.train.pairs:
        for seed in PARAMS.train.seeds:
            folder = RUNS_ROOT / str(pair) / f"seed{seed}"
            expected[f"{pair}-seed{seed}"] = str(folder / "generator.pt")
            expected[f"{pair.reversed()}-seed{seed}"] = str(folder / "generator_reverse.pt")
    artifacts = DVC["artifacts"]
    assert {name: a["path"] for name, a in artifacts.items()} == expected
    assert all(a["type"] == "model" and a["desc"] for a in artifacts.values())
    # each lies in an output of the stage that writes it
    assert str(CLASSIFIER_DIR / CLASSIFIER_FILE) in _entries(DVC["stages"]["classifier"], "outs")
    assert list(_entries(DVC["stages"]["train"], "outs")) == [str(RUNS_ROOT)]
    # evaluate and register read one run each, inside the train stage's output
    for stage in ("evaluate", "register"):
        assert f"{RUNS_ROOT}/${{item.pair}}/seed${{item.seed}}" in _entries(DVC["stages"][stage], "deps")


def test_train_stage_trains_what_its_params_name():
    """The one train stage trains every (pair, seed): its params must cover the run list and every
    train.* key that shapes a model, or a change to them would not rerun it."""
    train = DVC["stages"]["train"]
    assert "matrix" not in train and "foreach" not in train
    assert train["cmd"].startswith("culturegan train-all --params params.yaml --summary reports/train.json")
    named = set(_entries(train, "params"))
    assert {"train.pairs", "train.seeds", "train.concurrent_runs", "data.image_size"} <= named
    speed_only = {"device", "checkpoint_every", "log_every", "sample_every", "sample_count"}
    for key in PARAMS.train.model_fields:
        assert key in speed_only or f"train.{key}" in named, key


def test_summaries_are_the_train_metrics_and_each_directions_metrics_json(tmp_path: Path):
    (tmp_path / "train_metrics.json").write_text(json.dumps({"final_losses": {"g_ab": 0.5}, "steps": 4}))
    assert train_summary({"metrics": tmp_path / "train_metrics.json"}) == {"final_losses": {"g_ab": 0.5}, "steps": 4}
    for d, kid in (("a-b", 0.1), ("b-a", 0.2)):
        (tmp_path / d).mkdir()
        (tmp_path / d / "metrics.json").write_text(json.dumps({"methods": {"gan": {"kid": kid}}}))
    result = {d: {"metrics": str(tmp_path / d / "metrics.json"), "grid": "x"} for d in ("a-b", "b-a")}
    assert evaluation_summary(result) == {
        "a-b": {"methods": {"gan": {"kid": 0.1}}}, "b-a": {"methods": {"gan": {"kid": 0.2}}},
    }


def _dvc(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["dvc", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_dvc_metrics_plots_and_exp_show_read_every_declared_file(tmp_path: Path):
    """On a copy of dvc.yaml + params.yaml with a stand-in for each declared file, no stage run."""
    from PIL import Image

    proj = tmp_path / "proj"
    proj.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO_ROOT / name, proj / name)
    subprocess.run(["git", "init", "-q"], cwd=proj, check=True)
    assert _dvc(["init", "-q"], proj).returncode == 0
    metrics = [
        "reports/prepare.json", "reports/validation.json", "runs/style_classifier/classifier.json",
        "reports/analysis.json",
        "reports/train.json",
    ] + [
        f"reports/evaluate/{pair}/seed{seed}.json" for pair in PARAMS.train.pairs for seed in PARAMS.train.seeds
    ]
    for i, rel in enumerate(metrics):
        (proj / rel).parent.mkdir(parents=True, exist_ok=True)
        (proj / rel).write_text(json.dumps({"value": i, "nested": {"x": 0.5}}))
    for rel in DVC["plots"]:
        (proj / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(proj / rel)

    shown = _dvc(["metrics", "show", "--json"], proj)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)[""]["data"]
    assert set(data) == set(metrics)
    assert all("error" not in v for v in data.values()), data
    plots = _dvc(["plots", "show", "--json"], proj)
    assert plots.returncode == 0 and "errors" not in json.loads(plots.stdout), plots.stdout + plots.stderr
    assert set(json.loads(plots.stdout)["data"]) == set(DVC["plots"])

    subprocess.run(["git", "add", "-A"], cwd=proj, check=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"], cwd=proj, check=True
    )
    exp = _dvc(["exp", "show", "--json"], proj)
    assert exp.returncode == 0, exp.stderr
    assert "reports/analysis.json" in exp.stdout


# The modules every stage runs and no stage lists (`dvc repro` does not rerun everything when one
# of them changes): the params schema (each stage declares the values it reads as `params:`), the
# errors, atomic file writes, the caches' source hasher (codehash), MLflow tracking, the CLI, the
# KFP wiring, and culturegan.stages, whose stage functions are followed one by one instead (see
# `stage_entry_modules`). The package root (its version) is shared too.
SHARED = (
    "culturegan.config",
    "culturegan.errors",
    "culturegan.fileio",
    "culturegan.codehash",
    "culturegan.tracking",
    "culturegan.cli",
    "culturegan.stages",
    "culturegan.orchestration",
)


def _shared(module: str) -> bool:
    return module == "culturegan" or any(module == s or module.startswith(s + ".") for s in SHARED)


def _functions(module: str) -> dict[str, ast.FunctionDef]:
    path = package_modules()[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}


def _cli_commands() -> dict[str, ast.FunctionDef]:
    """{name: function} of the top-level `culturegan <name>` commands (`@app.command()` in cli.py)."""
    out = {}
    for fn in _functions("culturegan.cli").values():
        for deco in fn.decorator_list:
            if (
                isinstance(deco, ast.Call)
                and isinstance(deco.func, ast.Attribute)
                and deco.func.attr == "command"
                and isinstance(deco.func.value, ast.Name)
                and deco.func.value.id == "app"
            ):
                out[deco.args[0].value if deco.args else fn.name.replace("_", "-")] = fn
    return out


def stage_entry_modules(command: str) -> set[str]:
    """The package modules that `culturegan <command>` imports: those its function in cli.py
    imports, where an import from culturegan.stages stands for the modules the imported stage
    function imports; each function also counts the functions of its own module that it calls."""
    modules = set(package_modules())
    functions = {m: _functions(m) for m in ("culturegan.cli", "culturegan.stages")}
    todo = [("culturegan.cli", _cli_commands()[command])]
    seen: set[tuple[str, str]] = set()
    entries: set[str] = set()
    while todo:
        owner, fn = todo.pop()
        if (owner, fn.name) in seen:
            continue
        seen.add((owner, fn.name))
        for node in imports_in(fn):
            for target in import_targets(owner, False, node, modules):
                if target in functions and isinstance(node, ast.ImportFrom):
                    todo += [(target, functions[target][a.name]) for a in node.names if a.name in functions[target]]
                else:
                    entries.add(target)
        for call in ast.walk(fn):
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id in functions[owner]:
                todo.append((owner, functions[owner][call.func.id]))
    return entries


def import_closure(entries: set[str]) -> set[str]:
    """Every module of the package that importing `entries` runs (the imports inside functions
    too, and the packages above each module), short of the SHARED ones."""
    graph = import_graph()
    seen: set[str] = set()
    todo = list(entries)
    while todo:
        module = todo.pop()
        if module in seen or _shared(module):
            continue
        seen.add(module)
        todo += graph[module]
        todo.append(module.rpartition(".")[0])  # its package's __init__ runs first
    return seen


def _runs_code(path: Path) -> bool:
    """False for a module of only a docstring (and __future__ imports), e.g. most __init__.py."""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    return any(
        not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str))
        and not (isinstance(n, ast.ImportFrom) and n.module == "__future__")
        for n in body
    )


def undeclared_sources(stage: dict[str, Any]) -> list[str]:
    """The source files a stage runs that none of its `src/` deps (a file or a folder) covers."""
    command = stage["cmd"].split()
    assert command[0] == "culturegan", stage["cmd"]
    commands = _cli_commands()
    assert command[1] in commands, f"no `culturegan {command[1]}` command in cli.py"
    entries = stage_entry_modules(command[1])
    assert any(not _shared(m) for m in entries), f"found no module that `culturegan {command[1]}` runs"
    deps = [d.rstrip("/") for d in stage.get("deps", []) if d.startswith("src/")]
    files = {m: package_modules()[m] for m in import_closure(entries)}
    need = sorted(path.relative_to(REPO_ROOT).as_posix() for path in files.values() if _runs_code(path))
    return [f for f in need if not any(f == d or f.startswith(d + "/") for d in deps)]


def test_the_stage_closure_follows_the_cli_into_the_stage_function_and_deferred_imports():
    # cli.evaluate -> stages.evaluate_stage -> evaluation.evaluate, which imports
    # training.checkpoint inside a function; check_seed's import of culturegan.errors is shared
    entries = stage_entry_modules("evaluate")
    assert {"culturegan.evaluation.evaluate", "culturegan.evaluation.classifier"} <= entries
    closure = import_closure(entries)
    assert {"culturegan.training.checkpoint", "culturegan.models.networks", "culturegan.evaluation"} <= closure
    assert not any(_shared(m) for m in closure)
    assert "culturegan.data.manifest" in import_closure(stage_entry_modules("validate"))
    assert not _runs_code(package_modules()["culturegan.evaluation"])
    assert _runs_code(package_modules()["culturegan.evaluation.imageops"])


@pytest.mark.parametrize("name", ["classifier", "culture"])
def test_the_classifier_and_culture_stages_run_no_generator_code(name: str):
    """They come before any GAN: an edit to the generator's or the trainer's code must not make
    `dvc repro` retrain the style classifier (minutes; ~17 on the real-art profile) or recompute
    the cultural distances. So they save tensors through culturegan.torchfile, not the training
    checkpoints, and their deps name neither networks.py nor checkpoint.py."""
    closure = import_closure(stage_entry_modules(name))
    assert "culturegan.evaluation.classifier" in closure
    generator_code = sorted(m for m in closure if m.startswith(("culturegan.models", "culturegan.training")))
    assert not generator_code, f"stage {name} imports {generator_code}"
    deps = [d for d in DVC["stages"][name]["deps"] if d.startswith("src/")]
    assert not [d for d in deps if d.startswith(("src/culturegan/models", "src/culturegan/training"))]


@pytest.mark.parametrize("name", sorted(DVC["stages"]))
def test_each_stage_depends_on_the_source_of_every_module_it_runs(name: str):
    """Else `dvc repro` keeps the stage's results when a module it runs changes (stale results)."""
    missing = undeclared_sources(DVC["stages"][name])
    assert not missing, f"stage {name} runs {missing} but does not depend on them: add them to its deps"


def test_every_source_dependency_exists():
    deps = {d for stage in DVC["stages"].values() for d in stage.get("deps", []) if d.startswith("src/")}
    assert deps and all((REPO_ROOT / d).exists() for d in deps), sorted(d for d in deps if not (REPO_ROOT / d).exists())


def test_dvc_ignores_python_bytecode_beside_the_sources() -> None:
    """Python writes __pycache__/*.pyc into src/ on import (setup.sh's warm-up does on purpose);
    DVC hashes whole src/ folders as stage deps, so unignored bytecode would change every hash in
    dvc.lock and rerun the pipeline after any import."""
    from dvc.repo import Repo

    with Repo(str(REPO_ROOT)) as repo:
        ignored = repo.dvcignore.is_ignored_file
        assert ignored(str(REPO_ROOT / "src" / "culturegan" / "__pycache__" / "cli.cpython-311.pyc"))
        assert ignored(str(REPO_ROOT / "src" / "culturegan" / "training" / "__pycache__" / "trainer.cpython-311.pyc"))
        assert not ignored(str(REPO_ROOT / "src" / "culturegan" / "training" / "trainer.py"))
