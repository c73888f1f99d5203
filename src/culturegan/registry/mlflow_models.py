"""MLflow side of the registry: a generator as a pyfunc model (models from code: serving.py),
logged, registered, and promoted to the `champion` alias when the gate says so.

One registered model per direction, `<registry.model_prefix>-<source>-to-<target>`. Promotion is
by alias only (registry stages are deprecated in MLflow 3). mlflow and torch are imported inside
the functions that use them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from culturegan.config import Pair, Params, TrackingConfig, dump_params
from culturegan.errors import CheckpointError, ConfigError
from culturegan.registry.gate import (
    CHAMPION,
    KEPT,
    PROMOTED,
    TAG_CANDIDATE_VALUE,
    TAG_CHAMPION_VALUE,
    TAG_CHAMPION_VERSION,
    TAG_DECISION,
    TAG_FINGERPRINT,
    TAG_FINGERPRINT_INFO,
    TAG_GENERATOR_SHA,
    TAG_METRIC,
    TAG_PAIR,
    TAG_REASON,
    TAG_VALUE,
    Evidence,
    baseline_values,
    decide,
    evaluation_fingerprint,
    file_sha256,
    metric_value,
    model_name,
    read_metrics,
)
from culturegan.tracking.parent_run import PARENT_RUN_ENV
from culturegan.tracking.store import (
    ROLE_TAG,
    configure,
    redact,
    resolve_tracking_uri,
)

if TYPE_CHECKING:
    import numpy as np
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

LOGGED_MODEL_NAME = "stylizer"
SERVING_CODE = Path(__file__).parent.parent / "serving.py"


def _evidence_from_tags(version: ModelVersion) -> Evidence:
    tags = version.tags or {}
    value: float | None
    try:
        value = float(tags[TAG_VALUE])
        value = value if math.isfinite(value) else None
    except (KeyError, ValueError):
        value = None
    return Evidence(
        metric=tags.get(TAG_METRIC, ""),
        value=value,
        fingerprint=tags.get(TAG_FINGERPRINT) or None,
        version=str(version.version),
    )


def find_generator(model_dir: Path, pair: Pair) -> tuple[Path, dict[str, Any]]:
    """The generator file in `model_dir` (generator.pt, or generator_reverse.pt for CycleGAN's
    backward direction) whose recorded direction is `pair`, and its file contents."""
    from culturegan.training.checkpoint import read_generator_file

    model_dir = Path(model_dir)
    files = sorted(model_dir.glob("generator*.pt"))
    found = []
    for path in files:
        data = read_generator_file(path)
        found.append(f"{path.name}: {data.get('source')}->{data.get('target')}")
        if data.get("source") == pair.source and data.get("target") == pair.target:
            return path, data
    raise CheckpointError(
        f"no generator for {pair.source}->{pair.target} in {model_dir}"
        + (f" (found {'; '.join(found)})" if found else ""),
        hint="run the train stage for this pair (CycleGAN writes both directions)",
    )


def export_generator(generator_path: Path, out_path: Path) -> None:
    """Save the generator as a torch.export program with a free batch size and free sides
    (multiples of 4), so that serving needs neither culturegan nor pickled classes."""
    import torch
    from torch.export import Dim

    from culturegan.training.checkpoint import load_generator

    net = load_generator(generator_path)
    example = torch.zeros(2, 3, 16, 16)
    quarter_h, quarter_w = Dim("quarter_h", min=2), Dim("quarter_w", min=2)
    shapes = {"x": {0: Dim("batch", min=1), 2: 4 * quarter_h, 3: 4 * quarter_w}}
    program = torch.export.export(net, (example,), dynamic_shapes=shapes)
    torch.export.save(program, out_path)


def signature() -> Any:
    """uint8 RGB batches (N, H, W, 3) in and out; -1 where sizes vary (one example fixes them)."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    images = Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3))])
    return ModelSignature(inputs=images, outputs=images)


def input_example(image_size: int) -> np.ndarray:
    """A small deterministic (1, S, S, 3) gradient image; S <= 32 keeps the stored JSON small."""
    import numpy as np

    side = max(8, min(32, image_size) // 4 * 4)
    ramp = np.linspace(0, 255, side, dtype=np.float64)
    rgb = np.stack(
        [
            np.add.outer(ramp, ramp) / 2,
            np.tile(ramp, (side, 1)),
            np.tile(ramp[::-1, None], (1, side)),
        ],
        -1,
    )
    return rgb.round().astype(np.uint8)[None]


def pip_requirements() -> list[str]:
    """torch and numpy pinned to the running versions.

    The local build label (e.g. +cu130) is dropped: it names a wheel of a specific index, and the
    plain version resolves on PyPI. MLflow adds its own pinned requirement.
    """
    import numpy as np
    import torch

    return [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"]


@contextlib.contextmanager
def _run_for_model(run_id: str | None, experiment_id: str, pair: Pair) -> Any:
    import mlflow

    if run_id is not None:
        # The pair's training run: the model is logged beside its training metrics.
        with mlflow.start_run(run_id=run_id, log_system_metrics=False) as run:
            yield run
        return
    parent = os.environ.get(PARENT_RUN_ENV, "").strip() or None
    with mlflow.start_run(
        experiment_id=experiment_id,
        run_name=f"register {pair}",
        parent_run_id=parent,
        nested=parent is not None,
        tags={ROLE_TAG: "register", "pair": str(pair)},
        log_system_metrics=False,
    ) as run:
        yield run


def _log_model(
    params: Params,
    pair: Pair,
    generator_path: Path,
    generator: dict[str, Any],
    run_id: str | None,
    experiment_id: str,
) -> tuple[str, str]:
    """Log the pyfunc model; returns (model URI, run id)."""
    import mlflow

    cfg = params.registry
    image_size = generator.get("image_size")  # the training size, recorded by the train stage
    gen_info = {k: v for k, v in generator.items() if k != "state_dict"}
    config = {
        "pair": str(pair),
        "generator": gen_info,
        "input": "uint8 (N, H, W, 3) RGB, any H, W in 8..max_side; output the same shape",
        "params": dump_params(params),
    }
    with tempfile.TemporaryDirectory(prefix="culturegan-model-") as tmp:
        program = Path(tmp) / "generator.pt2"
        export_generator(generator_path, program)
        config_path = Path(tmp) / "config.json"
        config_path.write_text(
            redact(json.dumps(config, indent=2, default=str)) + "\n", encoding="utf-8"
        )
        with _run_for_model(run_id, experiment_id, pair) as run:
            info = mlflow.pyfunc.log_model(
                name=LOGGED_MODEL_NAME,
                python_model=str(SERVING_CODE),
                artifacts={"generator": str(program), "config": str(config_path)},
                # MLflow also logs the model config as params of the run, and CycleGAN's two
                # directions share the training run: only values both directions have (the
                # direction itself is in config.json, the model name and the model's params).
                model_config={
                    "max_side": cfg.max_side,
                    "max_images": cfg.max_images,
                    "batch_size": cfg.batch_size,
                    "image_size": image_size,
                },
                signature=signature(),
                input_example=input_example(int(image_size or 32)),
                pip_requirements=pip_requirements(),
                params={
                    "pair": str(pair),
                    "objective": str(generator.get("objective")),
                    "image_size": str(image_size),
                    "steps": str(generator.get("steps")),
                    **{f"generator.{k}": str(v) for k, v in generator["config"].items()},
                },
            )
            return info.model_uri, run.info.run_id


def _champion(client: MlflowClient, name: str) -> ModelVersion | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def register_pair(
    params: Params,
    pair: Pair,
    model_dir: Path,
    metrics_file: Path | None,
    run_id: str | None = None,
    *,
    data_root: Path | None = None,
) -> dict[str, Any]:
    """Register the generator of directed pair `pair` and gate it for `champion`.

    `model_dir` is the train stage's output (runs/gan/<training pair>/seed<k>): the generator whose recorded
    direction is source -> target is used, so CycleGAN's backward model registers under the
    reversed pair. `metrics_file` is the evaluate stage's metrics.json for this directed pair;
    missing, it still registers but never promotes. The model is logged in the run `run_id`
    (e.g. the pair's training run) or in a new run. `data_root` (default: data.root) holds the
    test images that identify the evaluation set. Returns the name, version, decision and reason.
    """
    start = time.perf_counter()
    cfg = params.registry
    generator_path, generator = find_generator(Path(model_dir), pair)
    metrics, problem = read_metrics(metrics_file, pair)
    value, problem = metric_value(metrics, cfg.metric, problem)
    fingerprint: str | None = None
    parts: dict[str, Any] | str = ""
    if metrics is not None:
        fingerprint, parts = evaluation_fingerprint(
            params,
            metrics,
            cfg.metric,
            Path(data_root) if data_root is not None else params.data.root,
        )
        if fingerprint is None:
            problem = str(parts)
    candidate = Evidence(
        cfg.metric,
        value,
        fingerprint,
        problem=problem,
        baselines=baseline_values(metrics, cfg.metric),
    )

    import mlflow
    from mlflow import MlflowClient

    experiment_id = configure(params.tracking)
    client = MlflowClient(resolve_tracking_uri(params.tracking))
    name = model_name(cfg, pair)
    model_uri, logged_run_id = _log_model(
        params, pair, generator_path, generator, run_id, experiment_id
    )
    version = mlflow.register_model(
        model_uri,
        name,
        tags={
            TAG_PAIR: str(pair),
            TAG_GENERATOR_SHA: file_sha256(generator_path),
            TAG_METRIC: cfg.metric,
            TAG_VALUE: "" if value is None else repr(value),
            TAG_FINGERPRINT: fingerprint or "",
            TAG_FINGERPRINT_INFO: json.dumps(parts) if isinstance(parts, dict) else "",
        },
    ).version
    if str(version) == "1":
        client.update_registered_model(
            name, description=f"Stylises {pair.source} images as {pair.target} (culturegan)."
        )

    current = _champion(client, name)
    champion = _evidence_from_tags(current) if current is not None else None
    decision = decide(candidate, champion, cfg)
    decision_tags = {
        TAG_DECISION: PROMOTED if decision.promote else KEPT,
        TAG_REASON: decision.reason,
        TAG_CANDIDATE_VALUE: "" if value is None else repr(value),
        TAG_CHAMPION_VERSION: champion.version if champion else "",
        TAG_CHAMPION_VALUE: ""
        if champion is None or champion.value is None
        else repr(champion.value),
    }
    for key, tag_value in decision_tags.items():
        client.set_model_version_tag(name, str(version), key, tag_value)
    if decision.promote:
        client.set_registered_model_alias(name, CHAMPION, str(version))
    log.info("%s version %s: %s (%s)", name, version, decision_tags[TAG_DECISION], decision.reason)
    return {
        "name": name,
        "version": str(version),
        "model_uri": f"models:/{name}/{version}",
        "champion_uri": f"models:/{name}@{CHAMPION}",
        "promoted": decision.promote,
        "reason": decision.reason,
        "metric": cfg.metric,
        "value": value,
        "champion_version": champion.version if champion else None,
        "champion_value": champion.value if champion else None,
        "fingerprint": fingerprint,
        "run_id": logged_run_id,
        "generator": str(generator_path),
        "seconds": round(time.perf_counter() - start, 3),
    }


def promote(tracking_cfg: TrackingConfig, name: str, version: str, reason: str) -> dict[str, Any]:
    """Make `version` the champion by hand (e.g. after the evaluation set changed), with a reason.

    The gate refuses incomparable candidates forever once the evaluation set changes; this is the
    recorded way out: the decision is tagged `promoted_by_hand` with `reason`.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if not reason.strip():
        raise ConfigError("a manual promotion needs a reason", hint="say why the gate is overruled")
    uri = resolve_tracking_uri(tracking_cfg)
    client = MlflowClient(uri)
    try:
        client.get_model_version(name, str(version))
    except MlflowException as err:
        raise ConfigError(
            f"model {name!r} version {version} not found at {redact(uri)}: {redact(err.message)}",
            hint="check the name and version, and MLFLOW_TRACKING_URI / tracking.tracking_uri",
        ) from None
    client.set_model_version_tag(name, str(version), TAG_DECISION, "promoted_by_hand")
    client.set_model_version_tag(name, str(version), TAG_REASON, reason)
    client.set_registered_model_alias(name, CHAMPION, str(version))
    return {"name": name, "version": str(version), "promoted": True, "reason": reason}
