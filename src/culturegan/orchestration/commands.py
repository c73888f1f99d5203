"""`culturegan pipeline ...`: compile the KFP pipeline, run it here with kfp.local, submit it to KFP.

The CLI imports this module only inside those commands (kfp costs about half a second to import).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from culturegan.config import Params, dump_params, parse_params
from culturegan.errors import ConfigError, CultureganError, ValidationFailed
from culturegan.fileio import atomic_write_bytes

DEFAULT_PACKAGE = Path("pipelines/culturegan_pipeline.yaml")
DEFAULT_COMPONENTS = Path("components")  # one reusable spec per component: components/<step>.yaml
LOCAL_OUTPUTS = "outputs"  # kfp.local's pipeline_root inside the work dir


def _compile_to_bytes(compilable: Any, name: str, folder: Path) -> bytes:
    from kfp import compiler

    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        staged = Path(tmp) / name  # kfp picks the format from the file name
        compiler.Compiler().compile(compilable, package_path=str(staged))
        return staged.read_bytes()


def compile_components(params: Params, folder: Path = DEFAULT_COMPONENTS) -> dict[str, str]:
    """Write each component's reusable spec (KFP IR YAML) to `folder/<step>.yaml`, in the image of
    `params.pipeline.image`, so it loads on its own with `kfp.components.load_component_from_file`.

    Returns {step: path}. Steps are the functions' names (`start_run`, `train`, ...).
    """
    from kfp import dsl

    from culturegan.orchestration import components as c

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, str] = {}
    for name in c.STEPS:
        # The same body in the params' image (a tag or a digest): what the pipeline's tasks run in.
        comp = dsl.component(getattr(c, name).python_func, base_image=params.pipeline.image, install_kfp_package=False)
        path = folder / f"{name}.yaml"
        atomic_write_bytes(path, _compile_to_bytes(comp, path.name, folder))
        written[name] = str(path)
    return written


def compile_pipeline(
    params: Params, out: Path = DEFAULT_PACKAGE, components_dir: Path | None = None
) -> dict[str, Any]:
    """Compile the pipeline for `params` into the KFP package `out` (IR YAML), atomically; with
    `components_dir`, each component's reusable spec too (see compile_components)."""
    from culturegan.orchestration.pipeline import build_pipeline, default_run_items

    out = Path(out)
    if out.suffix not in (".yaml", ".yml"):
        raise ConfigError(f"--out {out} must end with .yaml", hint="e.g. pipelines/culturegan_pipeline.yaml")
    out.parent.mkdir(parents=True, exist_ok=True)
    data = _compile_to_bytes(build_pipeline(params), out.name, out.parent)
    atomic_write_bytes(out, data)
    result: dict[str, Any] = {
        "package": str(out),
        "pipeline": params.pipeline.name,
        "image": params.pipeline.image,
        "pairs": [str(pair) for pair in params.train.pairs],
        "seeds": list(params.train.seeds),
        "runs": default_run_items(params),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    if components_dir is not None:
        result["components"] = compile_components(params, components_dir)
    return result


def _is_local_path(value: str) -> bool:
    return value != "synthetic" and (not urlsplit(value).scheme or len(urlsplit(value).scheme) == 1)


def _local_params(params: Params, base: Path) -> Params:
    """`params` for run-local: relative input paths made absolute against `base` (the run changes
    directory), and one (pair, seed) trained at a time, as `dvc repro` does.

    Outputs stay relative on purpose: the cache folder and the local MLflow artifact folder then
    land inside the work dir, not in the repository. One run at a time because the steps share
    this machine's cores and one sqlite MLflow store.
    """
    raw = dump_params(params)
    raw["pipeline"]["parallelism"] = 1
    if _is_local_path(raw["data"]["source"]):
        raw["data"]["source"] = str((base / raw["data"]["source"]).resolve())
    for key in ("inception_weights", "vgg_weights"):
        if raw["evaluation"][key] is not None:
            raw["evaluation"][key] = str((base / raw["evaluation"][key]).resolve())
    return parse_params(raw, "params")


@contextlib.contextmanager
def _local_session(workdir: Path, tracking_uri: str) -> Iterator[None]:
    """Run inside `workdir` with MLFLOW_TRACKING_URI set; the step subprocesses inherit both."""
    old_cwd, old_uri = Path.cwd(), os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    os.chdir(workdir)
    try:
        # kfp.local prints the steps' output: keep stdout for the command's JSON result.
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        os.chdir(old_cwd)
        if old_uri is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old_uri


def _latest_run_dir(outputs: Path, name: str, before: set[Path]) -> Path | None:
    new = [p for p in outputs.glob(f"{name}-*") if p.is_dir() and p not in before]
    return max(new, key=lambda p: p.stat().st_mtime) if new else None


def _gate_failure(run_dir: Path | None) -> ValidationFailed | None:
    result = run_dir / "validate" / "result" if run_dir else None
    if result is None or not result.is_file():
        return None
    report = json.loads(result.read_text(encoding="utf-8"))
    if report.get("success"):
        return None
    return ValidationFailed(
        f"data validation failed:\n{report.get('summary', '')}",
        hint=f"see the Data Docs at {run_dir / 'validate' / 'data_docs' / 'index.html'}",
    )


def run_local(params: Params, workdir: Path | None = None, tracking_uri: str | None = None) -> dict[str, Any]:
    """Run the whole pipeline on this machine with kfp.local (SubprocessRunner, this venv).

    Every step runs as a subprocess in `workdir` (default: a new temporary folder), which holds
    the step outputs (`outputs/<pipeline>-<time>/<step>/<artifact>`), the stages' cache folder
    and, unless `tracking_uri` says otherwise, the MLflow store `mlflow.db` + `mlartifacts/`.
    The image, resources, GPU request and secrets of the compiled pipeline do not apply here
    (kfp.local ignores them); retries and the step order do. Runs are trained one at a time.
    """
    from kfp import local

    from culturegan.orchestration.kfp_io import params_text
    from culturegan.orchestration.pipeline import build_pipeline, default_run_items

    local_params = _local_params(params, Path.cwd())
    workdir = Path(workdir or tempfile.mkdtemp(prefix="culturegan-kfp-")).resolve()
    outputs = workdir / LOCAL_OUTPUTS
    (workdir / "workspace").mkdir(parents=True, exist_ok=True)
    outputs.mkdir(exist_ok=True)
    tracking_uri = tracking_uri or f"sqlite:///{workdir / 'mlflow.db'}"
    before = set(outputs.glob("*"))
    pipeline = build_pipeline(local_params)
    with _local_session(workdir, tracking_uri):
        local.init(
            runner=local.SubprocessRunner(use_venv=False),
            pipeline_root=str(outputs),
            workspace_root=str(workdir / "workspace"),
        )
        try:
            pipeline(params=params_text(local_params), runs=default_run_items(local_params))
        except RuntimeError as err:
            run_dir = _latest_run_dir(outputs, local_params.pipeline.name, before)
            failure = _gate_failure(run_dir)
            if failure is not None:
                raise failure from None
            raise CultureganError(
                f"the local pipeline run failed: {err}",
                hint=f"the failing step's log is above; its outputs are under {run_dir or outputs}",
            ) from None
    run_dir = _latest_run_dir(outputs, local_params.pipeline.name, before)
    assert run_dir is not None, f"kfp.local wrote no run folder under {outputs}"
    return {
        "workdir": str(workdir),
        "run_dir": str(run_dir),
        "report": str(run_dir / "analyze" / "report"),
        "report_files": str(run_dir / "analyze" / "report_files"),
        "data": str(run_dir / "prepare" / "data"),
        "validation": str(run_dir / "validate" / "result"),
        "tracking_uri": tracking_uri,
    }


def _version_name(name: str, package: Path) -> str:
    digest = hashlib.sha256(package.read_bytes()).hexdigest()[:8]
    return f"{name}-{datetime.now(UTC):%Y%m%d-%H%M%S}-{digest}"


@contextlib.contextmanager
def _kfp_api(host: str) -> Iterator[None]:
    """KFP API errors as one clear line; the client's printed links go to stderr, not stdout."""
    from kfp_server_api.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    try:
        with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "This client only works with ..."
            yield
    except ApiException as err:
        body = (err.body or "").strip().replace("\n", " ")[:500]
        raise ConfigError(
            f"the KFP API at {host} answered {err.status} {err.reason}: {body}",
            hint="check --host, your access to the KFP namespace, and the names given",
        ) from None
    except HTTPError as err:
        raise ConfigError(
            f"cannot reach the KFP API at {host}: {err}",
            hint="start `kubectl -n kubeflow port-forward svc/ml-pipeline-ui 8080:80` and pass "
            "--host http://localhost:8080 (docs/cluster.md section 7)",
        ) from None


def submit(
    params: Params,
    host: str,
    *,
    package: Path | None = None,
    experiment: str | None = None,
    pipeline_name: str | None = None,
    version: str | None = None,
    run_name: str | None = None,
    namespace: str | None = None,
) -> dict[str, Any]:
    """Upload the pipeline package to KFP (a new pipeline, or a new version of the one with that
    name), get or create the experiment, start a run of that exact version; returns its URL.

    Without `package`, the pipeline is compiled from `params` to DEFAULT_PACKAGE first.
    """
    import kfp

    if package is None:
        package = Path(compile_pipeline(params, DEFAULT_PACKAGE)["package"])
    package = Path(package)
    if not package.is_file():
        raise ConfigError(f"pipeline package {package} not found", hint="run `culturegan pipeline compile` first")
    name = pipeline_name or params.pipeline.name
    version = version or _version_name(name, package)
    experiment = experiment or params.tracking.experiment
    host = host.rstrip("/")
    with _kfp_api(host):
        client = kfp.Client(host=host, **({"namespace": namespace} if namespace else {}))
        pipeline_id = client.get_pipeline_id(name)
        if pipeline_id is None:
            pipeline_id = client.upload_pipeline(
                str(package), pipeline_name=name, description=f"culturegan ({version})"
            ).pipeline_id
            # The server names the first version after the pipeline; take its id.
            versions = client.list_pipeline_versions(pipeline_id, page_size=1, sort_by="created_at desc")
            version_id = versions.pipeline_versions[0].pipeline_version_id
            version = versions.pipeline_versions[0].display_name
            created = True
        else:
            version_id = client.upload_pipeline_version(
                str(package), pipeline_version_name=version, pipeline_id=pipeline_id
            ).pipeline_version_id
            created = False
        experiment_id = client.create_experiment(experiment, namespace=namespace).experiment_id
        run = client.run_pipeline(
            experiment_id=experiment_id,
            job_name=run_name or version,
            pipeline_id=pipeline_id,
            version_id=version_id,
        )
    return {
        "package": str(package),
        "pipeline": name,
        "pipeline_id": pipeline_id,
        "new_pipeline": created,
        "version": version,
        "version_id": version_id,
        "experiment": experiment,
        "experiment_id": experiment_id,
        "run_id": run.run_id,
        "run_url": f"{host}/#/runs/details/{run.run_id}",
    }
