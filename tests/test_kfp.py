"""The Kubeflow pipeline: the compiled IR (tasks, resources, retries, caching, secrets, control
flow, params default), the components run through `python_func`, `submit` against a local fake
KFP API, and (slow) `run-local` end to end against `dvc repro` on the same tiny params."""

from __future__ import annotations

import email.parser
import hashlib
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from conftest import REPO_ROOT, serving
from tiny import merge, tiny_raw
from typer.testing import CliRunner

from culturegan.cli import app
from culturegan.config import Pair, Params, dump_params, load_params, parse_params
from culturegan.errors import ConfigError, ValidationFailed
from culturegan.orchestration import kfp_io
from culturegan.orchestration.components import STEPS
from culturegan.orchestration.pipeline import MLFLOW_SECRET, S3_SECRET, SECRET_KEYS

VENV_BIN = Path(sys.executable).parent
IMAGE = "registry.example.org/team/culturegan:1.2.3"
STAGES = {"prepare", "validate", "classifier", "culture", "train", "evaluate", "register", "analyze"}
CACHED = {"prepare", "validate", "classifier", "culture", "evaluate"}
NOT_CACHED = {"train", "register", "analyze", "start-run", "close-run", "gate-failed"}
TRACKED = {"start-run", "close-run", "train", "register", "analyze"}
DISPLAY = {
    "start-run": "Start MLflow run", "close-run": "Close MLflow run", "prepare": "Prepare data",
    "validate": "Validate data", "gate-failed": "Validation failed", "classifier": "Style classifier",
    "culture": "Cultural distances", "train": "Train GAN", "evaluate": "Evaluate",
    "register": "Register model", "analyze": "Analyze and report",
}


# --- the compiled pipeline ---------------------------------------------------------------------


def compile_to(tmp: Path, raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Compile through the CLI (params file -> package); the IR and the kubernetes platform spec."""
    params_file, out = tmp / "params.yaml", tmp / "pipelines" / "culturegan_pipeline.yaml"
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    result = CliRunner().invoke(
        app,
        ["pipeline", "compile", "--params", str(params_file), "--out", str(out),
         "--components-dir", str(tmp / "components")],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    spec, platform = list(yaml.safe_load_all(out.read_text()))
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def all_tasks(spec: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every task of every DAG: name -> (the DAG's component name, task spec)."""
    found = {name: ("root", t) for name, t in spec["root"]["dag"]["tasks"].items()}
    for comp, body in spec["components"].items():
        for name, t in body.get("dag", {}).get("tasks", {}).items():
            assert name not in found, f"task name {name} appears twice"
            found[name] = (comp, t)
    return found


def container(spec: dict[str, Any], task: str) -> dict[str, Any]:
    return spec["deploymentSpec"]["executors"][f"exec-{task}"]["container"]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any], Params]:
    raw = tiny_raw(
        pipeline={
            "image": IMAGE,
            "train": {"cpu_request": "3", "cpu_limit": "6", "memory_request": "5Gi", "memory_limit": "7Gi"},
            "steps": {"cpu_request": "500m", "cpu_limit": "1", "memory_request": "1Gi", "memory_limit": "3Gi"},
            "retries": 3,
            "retry_backoff_s": 30,
            "parallelism": 2,
        },
        train={"pairs": ["photo-inkwash", "inkwash-photo"], "seeds": [0, 5]},
        tracking={"artifact_location": None},  # a null must survive into the params default
    )
    spec, k8s = compile_to(tmp_path_factory.mktemp("compiled"), raw)
    return spec, k8s, parse_params(raw)


def _normalised(path: Path) -> list[Any]:
    """The YAML documents of a compiled file, without what varies between identical compiles.

    Dropped: the header comment, which kfp derives from the spec, and whose printed dict defaults
    (the `runs` parameter) come from a protobuf Struct with no fixed key order, so they change
    from one compile to the next; and the value of `sdkVersion`, the installed kfp's version.
    """
    docs = list(yaml.safe_load_all(path.read_text()))
    docs[0]["sdkVersion"] = "kfp-<version>"
    return docs


def test_committed_component_and_pipeline_specs_match_the_code_and_params_yaml(tmp_path: Path):
    """components/<step>.yaml and pipelines/culturegan_pipeline.yaml are generated files: if this
    fails, run `culturegan pipeline compile` and commit the result. The sdkVersion line is
    normalised and the header comment ignored (see _normalised); the rest is compared as parsed YAML."""
    out, comps = tmp_path / "pipelines" / "culturegan_pipeline.yaml", tmp_path / "components"
    result = CliRunner().invoke(
        app,
        ["pipeline", "compile", "--params", str(REPO_ROOT / "params.yaml"), "--out", str(out),
         "--components-dir", str(comps)],
    )
    assert result.exit_code == 0, result.output
    committed = REPO_ROOT / "pipelines" / "culturegan_pipeline.yaml"
    assert _normalised(committed) == _normalised(out), f"{committed} is stale"
    fresh = {p.name for p in comps.glob("*.yaml")}
    assert {f"{step}.yaml" for step in STEPS} == fresh
    assert {p.name for p in (REPO_ROOT / "components").glob("*.yaml")} == fresh, "stale or missing components"
    for name in sorted(fresh):
        assert _normalised(REPO_ROOT / "components" / name) == _normalised(comps / name), (
            f"components/{name} is stale"
        )


def test_each_component_spec_loads_on_its_own_and_runs_the_params_image(tmp_path: Path):
    from kfp import components

    pinned = "registry.example.org/team/culturegan@sha256:" + "ab" * 32
    spec, _ = compile_to(tmp_path, tiny_raw(pipeline={"image": pinned}))
    assert container(spec, "train")["image"] == pinned
    train = components.load_component_from_file(str(tmp_path / "components" / "train.yaml"))
    assert train.name == "train"
    assert set(train.component_spec.inputs) == {"params", "pair", "seed", "parent_run_id", "data"}
    assert set(train.component_spec.outputs) == {"model", "metrics"}
    assert train.component_spec.implementation.container.image == pinned
    assert "pip install" not in " ".join(train.component_spec.implementation.container.command)


def test_every_stage_is_a_task_and_every_step_runs_the_params_image(compiled):
    spec, _, _ = compiled
    tasks = all_tasks(spec)
    assert STAGES | {"start-run", "close-run", "gate-failed"} <= set(tasks)
    for name in STAGES | {"start-run", "close-run", "gate-failed"}:
        assert container(spec, name)["image"] == IMAGE
        assert tasks[name][1]["taskInfo"]["name"] == DISPLAY[name]
    # no pip install at start-up: the image has the package and kfp
    assert "pip install" not in " ".join(container(spec, "train")["command"])


def test_train_requests_the_gpu_and_its_own_cpu_and_memory_other_steps_the_common_ones(compiled):
    spec, k8s, params = compiled
    train = container(spec, "train")["resources"]
    assert train["accelerator"]["resourceType"] == params.pipeline.accelerator_type == "nvidia.com/gpu"
    assert train["accelerator"]["resourceCount"] == "1"
    assert (train["resourceCpuRequest"], train["resourceCpuLimit"]) == ("3", "6")
    assert (train["resourceMemoryRequest"], train["resourceMemoryLimit"]) == ("5Gi", "7Gi")
    assert k8s["exec-train"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    for name in STAGES - {"train"}:
        res = container(spec, name)["resources"]
        assert "accelerator" not in res, name
        assert (res["resourceCpuRequest"], res["resourceCpuLimit"]) == ("500m", "1"), name
        assert (res["resourceMemoryRequest"], res["resourceMemoryLimit"]) == ("1Gi", "3Gi"), name


def test_train_requests_no_gpu_when_params_say_zero(tmp_path: Path):
    spec, k8s = compile_to(tmp_path, tiny_raw(pipeline={"gpus": 0}))
    assert "accelerator" not in container(spec, "train")["resources"]
    assert "tolerations" not in k8s.get("exec-train", {})


def test_train_retries_with_backoff_and_only_side_effect_free_steps_are_cached(compiled):
    spec, _, _ = compiled
    tasks = all_tasks(spec)
    assert tasks["train"][1]["retryPolicy"] == {
        "maxRetryCount": 3, "backoffDuration": "30s", "backoffFactor": 2.0, "backoffMaxDuration": "3600s",
    }
    for name in CACHED:
        assert tasks[name][1]["cachingOptions"] == {"enableCache": True}, name
    for name in NOT_CACHED:
        assert not tasks[name][1]["cachingOptions"].get("enableCache"), name


def test_cache_off_in_params_turns_caching_off_everywhere(tmp_path: Path):
    spec, _ = compile_to(tmp_path, tiny_raw(pipeline={"cache": False}))
    tasks = all_tasks(spec)
    assert not any(tasks[n][1]["cachingOptions"].get("enableCache") for n in STAGES)


def _secret_env(k8s: dict[str, Any], task: str) -> dict[str, dict[str, bool]]:
    """{secret name: {env var: optional}} of a task, checking that each key maps to its own name."""
    out: dict[str, dict[str, bool]] = {}
    for entry in k8s.get(f"exec-{task}", {}).get("secretAsEnv", []):
        for pair in entry["keyToEnv"]:
            assert pair["secretKey"] == pair["envVar"]
            out.setdefault(entry["secretName"], {})[pair["envVar"]] = entry["optional"]
    return out


def test_secrets_are_env_from_kubernetes_secrets_only_on_steps_that_talk_to_s3_or_mlflow(compiled):
    spec, k8s, _ = compiled
    expected = {
        name: {k: False for k in required} | {k: True for k in optional}
        for name, (required, optional) in SECRET_KEYS.items()
    }
    assert expected[S3_SECRET]["AWS_ACCESS_KEY_ID"] is False
    assert expected[S3_SECRET]["AWS_ENDPOINT_URL_S3"] is True  # AWS S3 itself has no endpoint URL
    assert expected[MLFLOW_SECRET]["MLFLOW_TRACKING_URI"] is False
    for task in TRACKED:
        assert _secret_env(k8s, task) == expected, task
    assert _secret_env(k8s, "prepare") == {S3_SECRET: expected[S3_SECRET]}  # data.source: s3://
    for task in ("validate", "classifier", "culture", "evaluate", "gate-failed"):
        assert _secret_env(k8s, task) == {}, task
    # credentials never travel as pipeline parameters
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == {"params", "runs"}


def test_every_secret_key_the_pipeline_reads_is_in_the_infra_secret_templates():
    templates = {S3_SECRET: "s3.env.example", MLFLOW_SECRET: "mlflow.env.example"}
    for name, (required, optional) in SECRET_KEYS.items():
        text = (REPO_ROOT / "infra" / "k8s" / "secrets" / templates[name]).read_text()
        set_keys = {line.split("=", 1)[0] for line in text.splitlines() if "=" in line and not line.startswith("#")}
        assert set(required) <= set_keys, name
        for key in optional:
            assert key in text, f"{key} is not documented in {templates[name]}"


def test_pair_seed_runs_fan_out_in_a_parallel_for_and_analyze_collects_models_and_evaluations(compiled):
    spec, _, params = compiled
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    assert params.train.pairs == [Pair("photo", "inkwash"), Pair("inkwash", "photo")]
    assert params.train.seeds == [0, 5]
    # every pair with every seed (protobuf keeps JSON numbers as doubles: 5 compiles to 5.0)
    assert inputs["runs"]["defaultValue"] == [
        {"pair": "photo-inkwash", "seed": 0}, {"pair": "photo-inkwash", "seed": 5},
        {"pair": "inkwash-photo", "seed": 0}, {"pair": "inkwash-photo", "seed": 5},
    ]
    tasks = all_tasks(spec)
    loops = [(n, t) for n, (_, t) in tasks.items() if "parameterIterator" in t]
    assert len(loops) == 1
    loop_name, loop = loops[0]
    assert loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--runs"
    assert loop["iteratorPolicy"] == {"parallelismLimit": 2}
    body = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    assert set(body) == {"train", "evaluate", "register"}
    for task in ("train", "evaluate", "register"):
        given = body[task]["inputs"]["parameters"]
        for field in ("pair", "seed"):
            assert given[field] == {
                "componentInputParameter": "pipelinechannel--runs-loop-item",
                "parameterExpressionSelector": f'parseJson(string_value)["{field}"]',
            }, (task, field)
        assert spec["components"][f"comp-{task}"]["inputDefinitions"]["parameters"]["seed"] == {
            "parameterType": "NUMBER_INTEGER"
        }
    analyze = tasks["analyze"][1]["inputs"]["artifacts"]
    assert analyze["models"]["taskOutputArtifact"] == {"outputArtifactKey": "pipelinechannel--train-model", "producerTask": loop_name}
    assert analyze["evaluations"]["taskOutputArtifact"]["producerTask"] == loop_name


def test_training_runs_only_if_validation_passed_otherwise_the_gate_fails_the_run(compiled):
    spec, _, _ = compiled
    tasks = all_tasks(spec)
    passed_dag, failed_dag = tasks["classifier"][0], tasks["gate-failed"][0]
    assert tasks["train"][0] != "root" and tasks["analyze"][0] == passed_dag
    conditions = {
        t["componentRef"]["name"]: t["triggerPolicy"]["condition"]
        for _, (_, t) in tasks.items()
        if "condition" in t.get("triggerPolicy", {})
    }
    assert conditions[passed_dag] == "inputs.parameter_values['pipelinechannel--validate-passed'] == true"
    assert conditions[failed_dag] == "!(inputs.parameter_values['pipelinechannel--validate-passed'] == true)"
    gate = tasks["gate-failed"][1]["inputs"]["parameters"]["message"]
    assert gate["componentInputParameter"] == "pipelinechannel--validate-message"


def test_exit_handler_closes_the_mlflow_parent_run_after_all_other_steps(compiled):
    spec, _, _ = compiled
    root = spec["root"]["dag"]["tasks"]
    assert set(root) == {"close-run", "exit-handler-1"}
    assert root["close-run"]["triggerPolicy"] == {"strategy": "ALL_UPSTREAM_TASKS_COMPLETED"}
    assert root["close-run"]["dependentTasks"] == ["exit-handler-1"]
    tasks = all_tasks(spec)
    # stages nest their MLflow runs under the parent that start-run opens
    for name in ("train", "register", "analyze"):
        param = tasks[name][1]["inputs"]["parameters"]["parent_run_id"]
        assert "start-run" in json.dumps(param), name


def test_params_default_is_the_effective_params_yaml_with_nulls_kept(compiled, tmp_path: Path):
    spec, _, params = compiled
    default = spec["root"]["inputDefinitions"]["parameters"]["params"]["defaultValue"]
    assert parse_params(json.loads(default)) == params
    assert json.loads(default)["tracking"]["artifact_location"] is None
    # the repository's own params.yaml, unchanged
    repo = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    repo_spec, _ = compile_to(tmp_path, repo)
    repo_default = json.loads(repo_spec["root"]["inputDefinitions"]["parameters"]["params"]["defaultValue"])
    assert repo_default == dump_params(load_params(REPO_ROOT / "params.yaml"))
    assert container(repo_spec, "train")["image"] == load_params(REPO_ROOT / "params.yaml").pipeline.image


def test_compile_refuses_an_output_that_is_not_yaml(tmp_path: Path):
    from culturegan.orchestration.commands import compile_pipeline

    with pytest.raises(ConfigError, match="must end with .yaml"):
        compile_pipeline(parse_params(tiny_raw()), tmp_path / "pipeline.json")


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"train": {"cpu_request": "9", "cpu_limit": "8"}}, "train.cpu_request 9 exceeds train.cpu_limit 8"),
        ({"steps": {"memory_request": "8Gi", "memory_limit": "4G"}}, "steps.memory_request 8Gi exceeds"),
        ({"steps": {"cpu_limit": "two"}}, "'pipeline.steps.cpu_limit'"),
        ({"gpus": 2}, "'pipeline.gpus'"),
        ({"image": "has space:1"}, "'pipeline.image'"),
        ({"imag": "x:1"}, "did you mean 'pipeline.image'"),
    ],
)
def test_pipeline_params_are_checked_before_compiling(section: dict[str, Any], message: str):
    with pytest.raises(ConfigError, match=message):
        parse_params(tiny_raw(pipeline=section))


# --- components through python_func and the glue they use --------------------------------------


def test_prepare_and_validate_components_run_on_tiny_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from kfp.dsl import Artifact, Dataset, Markdown, Metrics

    from culturegan.orchestration import components as c

    monkeypatch.chdir(tmp_path)  # the stages' cache folder (data.cache_dir) is relative
    text = kfp_io.params_text(parse_params(tiny_raw()))
    data, metrics = Dataset(uri=str(tmp_path / "data")), Metrics(uri=str(tmp_path / "prep_metrics"))
    c.prepare.python_func(params=text, data=data, metrics=metrics)
    assert (tmp_path / "data" / "manifest.parquet").is_file()
    assert data.metadata["images"] == 2 * (8 + 4) and data.metadata["styles"] == ["photo", "inkwash"]
    assert metrics.metadata["images"] == 24.0

    def run_validate(params_text: str, name: str) -> tuple[Any, ...]:
        outs = (
            Artifact(uri=str(tmp_path / name / "docs")),
            Markdown(uri=str(tmp_path / name / "summary.md")),
            Artifact(uri=str(tmp_path / name / "result.json")),
            Metrics(uri=str(tmp_path / name / "metrics")),
        )
        (tmp_path / name).mkdir()
        got = c.validate.python_func(
            params=params_text, data=data, data_docs=outs[0], summary=outs[1], result=outs[2], metrics=outs[3]
        )
        return got, *outs

    got, docs, summary, result, val_metrics = run_validate(text, "ok")
    assert got.passed is True and "checks passed" in got.message
    assert (Path(docs.path) / "index.html").is_file()
    assert Path(summary.path).read_text().startswith("# Data validation passed")
    assert json.loads(Path(result.path).read_text())["success"] is True
    assert val_metrics.metadata["passed"] == 1.0 and val_metrics.metadata["checks_failed"] == 0.0

    strict = kfp_io.params_text(parse_params(tiny_raw(validation={"min_train_per_style": 500})))
    got, docs, summary, result, _ = run_validate(strict, "bad")
    assert got.passed is False and "500" in got.message
    assert (Path(docs.path) / "index.html").is_file(), "Data Docs are written when the gate fails too"
    assert "| FAILED |" in Path(summary.path).read_text()
    with pytest.raises(ValidationFailed, match="500"):
        c.gate_failed.python_func(message=got.message)


def test_components_validate_the_params_parameter_naming_it():
    from kfp.dsl import Dataset, Metrics

    from culturegan.orchestration import components as c

    with pytest.raises(ConfigError, match="pipeline parameter 'params' is not valid JSON"):
        kfp_io.parse("{seed: 0")
    bad = json.dumps(merge(dump_params(Params()), {"train": {"stepz": 3}}))
    with pytest.raises(ConfigError, match="unknown key 'train.stepz' in pipeline parameter 'params'"):
        c.prepare.python_func(params=bad, data=Dataset(uri="/nonexistent"), metrics=Metrics(uri="/nonexistent"))


def test_gather_merges_the_pair_and_seed_folders_of_several_artifacts_and_refuses_a_repeat(tmp_path: Path):
    for art, pair, seed in (
        ("a", "photo-inkwash", 0), ("b", "photo-ukiyoe", 0), ("c", "photo-inkwash", 1), ("d", "photo-inkwash", 0),
    ):
        (tmp_path / art / pair / f"seed{seed}" / "photo-x").mkdir(parents=True)
        (tmp_path / art / pair / f"seed{seed}" / "photo-x" / "metrics.json").write_text(art)
    merged = kfp_io.gather([tmp_path / "a", tmp_path / "b", tmp_path / "c"], tmp_path / "eval")
    assert sorted(p.relative_to(merged).as_posix() for p in merged.rglob("metrics.json")) == [
        "photo-inkwash/seed0/photo-x/metrics.json",
        "photo-inkwash/seed1/photo-x/metrics.json",
        "photo-ukiyoe/seed0/photo-x/metrics.json",
    ]
    assert (merged / "photo-inkwash/seed1/photo-x/metrics.json").read_text() == "c"
    with pytest.raises(ConfigError, match="photo-inkwash/seed0/photo-x/metrics.json comes from two pipeline artifacts"):
        kfp_io.gather([tmp_path / "a", tmp_path / "d"], tmp_path / "again")


@pytest.mark.parametrize(("value", "expected"), [(3, 3), (3.0, 3), (0, 0)])
def test_run_seed_takes_integral_numbers_from_the_runs_parameter(value: Any, expected: int):
    assert kfp_io.run_seed(value) == expected and type(kfp_io.run_seed(value)) is int


@pytest.mark.parametrize("value", [-1, 2.5, True, "3", None])
def test_run_seed_refuses_anything_else_naming_the_runs_parameter(value: Any):
    with pytest.raises(ConfigError, match="pipeline parameter 'runs'"):
        kfp_io.run_seed(value)


def test_run_pair_parses_the_pair_of_a_runs_item_and_refuses_a_malformed_one():
    assert kfp_io.run_pair("inkwash-photo") == Pair("inkwash", "photo")
    with pytest.raises(ConfigError, match="bad culture pair: 'photo' is not '<source>-<target>'"):
        kfp_io.run_pair("photo")


def test_inline_html_embeds_only_the_images_beside_the_page(tmp_path: Path):
    site = tmp_path / "report"
    (site / "grids").mkdir(parents=True)
    (site / "grids" / "g.png").write_bytes(b"\x89PNG-grid")
    (tmp_path / "secret.png").write_bytes(b"outside")
    (site / "index.html").write_text(
        '<img src="grids/g.png"><img src="../secret.png"><img src="https://example.org/x.png">'
        '<img src="missing.png">'
    )
    html = kfp_io.inline_html(site / "index.html")
    assert 'src="data:image/png;base64,iVBORy1ncmlk"' in html
    assert 'src="../secret.png"' in html and 'src="https://example.org/x.png"' in html
    assert 'src="missing.png"' in html


def test_record_logs_numeric_leaves_and_keeps_small_facts_without_local_paths():
    from kfp.dsl import Metrics, Model

    metrics, model = Metrics(), Model()
    result = {
        "pair": "photo-inkwash", "steps": 4, "ok": True, "images_per_s": None,
        "final_losses": {"g": 1.5, "d": float("nan")}, "checkpoint": "/tmp/x/last.pt",
        "model_uri": "models:/culturegan-photo-to-inkwash/1", "styles": ["photo", "inkwash"],
    }
    kfp_io.record(result, metrics, model, framework="pytorch")
    assert metrics.metadata == {"steps": 4.0, "final_losses.g": 1.5}
    assert model.metadata == {
        "pair": "photo-inkwash", "steps": 4, "ok": True,
        "model_uri": "models:/culturegan-photo-to-inkwash/1", "styles": ["photo", "inkwash"],
        "framework": "pytorch",
    }


def test_exit_step_marks_an_open_parent_run_failed_and_leaves_a_finished_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from mlflow import MlflowClient

    from culturegan.orchestration import components as c
    from culturegan.tracking.parent_run import (
        PARENT_RUN_ENV,
        WORKSPACE_TAG,
        finish_run,
        start_or_resume_parent,
    )

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv(PARENT_RUN_ENV, raising=False)
    params = parse_params(tiny_raw(tracking={"artifact_location": str(tmp_path / "art")}))
    text = kfp_io.params_text(params)
    client = MlflowClient(uri)

    done = c.start_run.python_func(params=text, pipeline_job="culturegan-ok", pipeline_run_id="run-ok")
    open_ = c.start_run.python_func(params=text, pipeline_job="culturegan-bad", pipeline_run_id="run-bad")
    assert done != open_
    assert client.get_run(open_).data.tags[kfp_io.KFP_RUN_TAG] == "run-bad"
    assert client.get_run(open_).info.run_name == "culturegan-bad"
    # the step hands the id to every task itself: the run has no workspace, so a DVC stage run in
    # this directory starts its own parent instead of nesting under the pipeline's open one
    assert WORKSPACE_TAG not in client.get_run(open_).data.tags
    assert start_or_resume_parent(params.tracking, params) not in (done, open_)
    finish_run(params.tracking, done)  # what analyze does at the end of a good run

    class Status:  # dsl.PipelineTaskFinalStatus as the executor passes it
        def __init__(self, state: str) -> None:
            self.state = state

    assert c.close_run.python_func(params=text, pipeline_run_id="run-ok", status=Status("SUCCEEDED")) == ""
    assert c.close_run.python_func(params=text, pipeline_run_id="run-bad", status=Status("FAILED")) == "FAILED"
    assert client.get_run(open_).info.status == "FAILED"
    assert client.get_run(done).info.status == "FINISHED"
    # closing twice changes nothing: the run is no longer open
    assert c.close_run.python_func(params=text, pipeline_run_id="run-bad", status=Status("CANCELLED")) == ""


# --- submit, against a fake KFP API ------------------------------------------------------------


class FakeKfp:
    """The KFP v2beta1 endpoints that `culturegan pipeline submit` uses, in memory."""

    def __init__(self) -> None:
        self.pipelines: dict[str, dict[str, Any]] = {}
        self.experiments: dict[str, str] = {}
        self.runs: list[dict[str, Any]] = []
        self.calls: list[str] = []

    @staticmethod
    def _named(filter_json: str) -> str:
        (predicate,) = json.loads(filter_json)["predicates"]
        assert predicate["key"] == "display_name" and predicate["operation"] in (1, "EQUALS")
        return predicate["stringValue"]

    def handle(self, method: str, path: str, query: dict[str, str], body: bytes, ctype: str) -> tuple[int, Any]:
        self.calls.append(f"{method} {path}")
        base = "/apis/v2beta1"
        if (method, path) == ("GET", f"{base}/healthz"):
            return 200, {"multi_user": False}
        if (method, path) == ("GET", f"{base}/pipelines"):
            name = self._named(query["filter"])
            found = [
                {"pipeline_id": pid, "display_name": p["name"]} for pid, p in self.pipelines.items() if p["name"] == name
            ]
            return 200, {"pipelines": found, "total_size": len(found)} if found else {}
        if method == "POST" and path in (f"{base}/pipelines/upload", f"{base}/pipelines/upload_version"):
            message = email.parser.BytesParser().parsebytes(f"Content-Type: {ctype}\r\n\r\n".encode() + body)
            (part,) = message.get_payload()
            assert part.get_param("name", header="content-disposition") == "uploadfile"
            package = part.get_payload(decode=True)
            yaml.safe_load_all(package.decode())  # the package is YAML
            if path.endswith("/upload"):
                pid = str(uuid.uuid4())
                self.pipelines[pid] = {"name": query["name"], "versions": []}
                version_name = query["name"]  # the server names the first version after the pipeline
            else:
                pid, version_name = query["pipelineid"], query["name"]
            version = {"pipeline_version_id": str(uuid.uuid4()), "display_name": version_name, "package": package}
            self.pipelines[pid]["versions"].append(version)
            if path.endswith("/upload"):
                return 200, {"pipeline_id": pid, "display_name": query["name"]}
            return 200, {"pipeline_id": pid, "pipeline_version_id": version["pipeline_version_id"], "display_name": version_name}
        if method == "GET" and path.startswith(f"{base}/pipelines/") and path.endswith("/versions"):
            pid = path.split("/")[-2]
            versions = list(reversed(self.pipelines[pid]["versions"]))[: int(query.get("page_size", 10))]
            assert query.get("sort_by") == "created_at desc"
            return 200, {
                "pipeline_versions": [
                    {"pipeline_id": pid, "pipeline_version_id": v["pipeline_version_id"], "display_name": v["display_name"]}
                    for v in versions
                ]
            }
        if (method, path) == ("GET", f"{base}/experiments"):
            name = self._named(query["filter"])
            found = [{"experiment_id": eid, "display_name": n} for eid, n in self.experiments.items() if n == name]
            return 200, {"experiments": found, "total_size": len(found)} if found else {}
        if (method, path) == ("POST", f"{base}/experiments"):
            eid = str(uuid.uuid4())
            self.experiments[eid] = json.loads(body)["display_name"]
            return 200, {"experiment_id": eid, "display_name": self.experiments[eid]}
        if (method, path) == ("POST", f"{base}/runs"):
            run = json.loads(body)
            self.runs.append(run)
            return 200, {**run, "run_id": f"run-{len(self.runs)}", "state": "PENDING"}
        return 404, {"error": f"no fake for {method} {path}", "code": 5}


@pytest.fixture
def fake_kfp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[str, FakeKfp]]:
    import kfp

    # the client reads ~/.config/kfp/context.json; keep the user's out of the test
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(tmp_path / "no-context.json"))
    state = FakeKfp()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            url = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            try:
                status, payload = state.handle(self.command, url.path, query, body, self.headers.get("Content-Type", ""))
            except (AssertionError, KeyError, ValueError) as err:  # a bad request: 500, and remember it
                state.calls.append(f"ERROR {err!r}")
                status, payload = 500, {"error": repr(err)}
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _serve

        def log_message(self, format: str, *args: object) -> None:
            pass

    with serving(Handler) as url:
        yield url, state


def test_submit_uploads_a_pipeline_then_a_new_version_and_runs_each_version(
    fake_kfp: tuple[str, FakeKfp], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """No KFP API server can be installed here (its backend needs a cluster), so this runs
    `submit` against a small HTTP server on 127.0.0.1 that implements the few v2beta1 endpoints
    the kfp client calls, and checks what the client sent: the package bytes, names and ids."""
    host, kfp_api = fake_kfp
    monkeypatch.chdir(tmp_path)  # the default package path is relative
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(tiny_raw(pipeline={"image": IMAGE, "name": "culturegan-test"})))
    runner = CliRunner()
    first = runner.invoke(app, ["pipeline", "submit", "--host", host + "/", "--params", str(params_file)])
    assert first.exit_code == 0, first.output + "\n".join(kfp_api.calls)
    one = json.loads(first.stdout)
    package = tmp_path / "pipelines" / "culturegan_pipeline.yaml"
    (pid,) = kfp_api.pipelines
    assert one["new_pipeline"] is True and one["pipeline_id"] == pid
    assert kfp_api.pipelines[pid]["name"] == "culturegan-test"
    assert kfp_api.pipelines[pid]["versions"][0]["package"] == package.read_bytes()
    assert one["run_url"] == f"{host}/#/runs/details/run-1"
    assert list(kfp_api.experiments.values()) == ["culturegan"]  # tracking.experiment
    run = kfp_api.runs[0]
    assert run["experiment_id"] == one["experiment_id"]
    assert run["pipeline_version_reference"] == {
        "pipeline_id": pid, "pipeline_version_id": kfp_api.pipelines[pid]["versions"][0]["pipeline_version_id"],
    }
    assert "pipeline_spec" not in run  # the run points at the uploaded version, not a copy

    second = runner.invoke(
        app,
        ["pipeline", "submit", "--host", host, "--params", str(params_file), "--package", str(package),
         "--version", "v2", "--experiment", "culturegan", "--run-name", "second"],
    )
    assert second.exit_code == 0, second.output + "\n".join(kfp_api.calls)
    two = json.loads(second.stdout)
    assert (two["new_pipeline"], two["pipeline_id"], two["version"]) == (False, pid, "v2")
    assert [v["display_name"] for v in kfp_api.pipelines[pid]["versions"]] == ["culturegan-test", "v2"]
    assert len(kfp_api.experiments) == 1 and two["experiment_id"] == one["experiment_id"]
    assert kfp_api.runs[1]["display_name"] == "second"
    assert kfp_api.runs[1]["pipeline_version_reference"]["pipeline_version_id"] == two["version_id"]
    assert not [c for c in kfp_api.calls if c.startswith("ERROR")]


def test_submit_to_an_unreachable_host_is_one_error_line_with_a_hint(tmp_path: Path):
    from conftest import free_port

    package = tmp_path / "p.yaml"
    params = parse_params(tiny_raw())
    from culturegan.orchestration.commands import compile_pipeline, submit

    compile_pipeline(params, package)
    with pytest.raises(ConfigError, match="cannot reach the KFP API") as err:
        submit(params, f"http://127.0.0.1:{free_port()}", package=package)
    assert "port-forward" in err.value.hint


def test_submit_refuses_a_missing_package(tmp_path: Path):
    from culturegan.orchestration.commands import submit

    with pytest.raises(ConfigError, match="not found"):
        submit(parse_params(tiny_raw()), "http://127.0.0.1:9", package=tmp_path / "none.yaml")


def test_run_local_makes_relative_inputs_absolute_and_trains_one_pair_at_a_time(tmp_path: Path):
    from culturegan.orchestration.commands import _local_params

    raw = tiny_raw(
        data={"source": "incoming/images"}, evaluation={"vgg_weights": "w/vgg.pth"}, pipeline={"parallelism": 4}
    )
    got = _local_params(parse_params(raw), tmp_path)
    assert got.data.source == str(tmp_path / "incoming" / "images")
    assert got.evaluation.vgg_weights == tmp_path / "w" / "vgg.pth"
    assert got.pipeline.parallelism == 1
    # outputs stay relative: they land in the work dir the run changes into
    assert str(got.data.cache_dir) == ".staging" and got.tracking.artifact_location == "mlartifacts"
    for source in ("synthetic", "s3://bucket/styles", "https://example.org/a.zip"):
        assert _local_params(parse_params(tiny_raw(data={"source": source})), tmp_path).data.source == source


# --- run-local end to end vs dvc repro ---------------------------------------------------------


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("CULTUREGAN_PARENT_RUN_ID", None)
    proc = subprocess.run(cmd, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-6000:]}")
    return proc


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".gitignore"  # git's file, written by DVC, not data
    }


def _same_tensors(a: Path, b: Path) -> bool:
    """Checkpoint contents, not pickle bytes (which differ with the file's name and location)."""
    import torch

    def flat(x: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(x, dict):
            return {k: v for key, val in x.items() for k, v in flat(val, f"{prefix}{key}.").items()}
        return {prefix: x}

    fa, fb = flat(torch.load(a, map_location="cpu")), flat(torch.load(b, map_location="cpu"))
    return fa.keys() == fb.keys() and all(
        torch.equal(fa[k], fb[k]) if torch.is_tensor(fa[k]) else fa[k] == fb[k] for k in fa
    )


def _without(d: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in keys}


def _timeless(metrics: dict[str, Any]) -> dict[str, Any]:
    """Every method's numbers in an evaluate-stage metrics.json, without its run time."""
    return {name: _without(values, "seconds") for name, values in metrics["methods"].items()}


@pytest.mark.slow
def test_run_local_runs_every_step_and_matches_dvc_repro_on_the_same_params(tmp_path: Path):
    raw = tiny_raw()
    # dvc repro of the repository's dvc.yaml in a throwaway git + DVC project
    proj = tmp_path / "proj"
    proj.mkdir()
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(REPO_ROOT / name, proj / name)
    shutil.copytree(REPO_ROOT / "src", proj / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    (proj / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    _run(["git", "init", "-q"], proj)
    _run(["dvc", "init", "-q"], proj)
    shutil.copy(REPO_ROOT / ".dvc" / "config", proj / ".dvc" / "config")
    _run(["dvc", "repro"], proj)

    # the same params through the KFP pipeline, every step a kfp.local subprocess
    here = tmp_path / "here"
    here.mkdir()
    shutil.copy(proj / "params.yaml", here / "params.yaml")
    proc = _run(["culturegan", "pipeline", "run-local", "--params", "params.yaml", "--workdir", "work"], here)
    out = {k: Path(v) if k != "tracking_uri" else v for k, v in json.loads(proc.stdout).items()}
    run_dir = out["run_dir"]
    assert out["workdir"] == here / "work" and out["tracking_uri"] == f"sqlite:///{here / 'work' / 'mlflow.db'}"
    assert sorted(p.name for p in here.iterdir()) == ["params.yaml", "work"], "nothing written beside params.yaml"

    # the report: one self-contained HTML page plus the folder the analyze stage wrote
    html = out["report"].read_text()
    assert "data:image/png;base64," in html and 'src="grids/' not in html
    assert (out["report_files"] / "index.html").is_file()

    # data and gate: identical bytes and identical check results
    assert _digests(out["data"]) == _digests(proj / "data")
    local_gate, dvc_gate = json.loads(out["validation"].read_text()), json.loads((proj / "reports/validation.json").read_text())
    assert local_gate["success"] is True
    assert _without(local_gate, "docs_index", "seconds") == _without(dvc_gate, "docs_index", "seconds")

    # classifier, distances, GAN and evaluation: the same numbers (CPU, same seed)
    clf = run_dir / "classifier" / "model"
    assert _without(json.loads((clf / "classifier.json").read_text()), "seconds") == _without(
        json.loads((proj / "runs/style_classifier/classifier.json").read_text()), "seconds"
    )
    assert _same_tensors(clf / "classifier.pt", proj / "runs/style_classifier/classifier.pt")
    assert (run_dir / "culture/distances/culture.json").read_text() == (proj / "reports/culture/culture.json").read_text()
    (loop,) = run_dir.glob("for-loop-*-iteration-0")
    model = loop / "train" / "model" / "photo-inkwash" / "seed0"
    for name in ("generator.pt", "generator_reverse.pt"):
        assert _same_tensors(model / name, proj / "runs/gan/photo-inkwash/seed0" / name), name
    for direction in ("photo-inkwash", "inkwash-photo"):
        local_m = json.loads((loop / "evaluate/evaluation/photo-inkwash/seed0" / direction / "metrics.json").read_text())
        dvc_m = json.loads((proj / "reports/eval/photo-inkwash/seed0" / direction / "metrics.json").read_text())
        assert _timeless(local_m) == _timeless(dvc_m), direction
        assert local_m["seed"] == dvc_m["seed"] == 0
    decisions = json.loads((loop / "register" / "decisions").read_text())
    assert set(decisions) == {"photo-inkwash", "inkwash-photo"}
    dvc_decisions = json.loads((proj / "reports/register/photo-inkwash/seed0.json").read_text())
    assert decisions["photo-inkwash"]["value"] == dvc_decisions["photo-inkwash"]["value"]

    # MLflow, in the work dir only: one finished parent with the pair's run nested under it
    from mlflow import MlflowClient

    client = MlflowClient(out["tracking_uri"])
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    (parent,) = [r for r in runs if r.data.tags.get("culturegan.role") == "pipeline"]
    assert parent.info.status == "FINISHED" and parent.data.tags.get(kfp_io.KFP_RUN_TAG)
    (pair,) = [r for r in runs if r.data.tags.get("culturegan.role") == "pair"]
    assert pair.data.tags["mlflow.parentRunId"] == parent.info.run_id and pair.info.status == "FINISHED"
    assert {m.name for m in client.search_registered_models()} == {
        "culturegan-photo-to-inkwash", "culturegan-inkwash-to-photo",
    }
