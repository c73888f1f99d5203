"""Model registry: generators as MLflow pyfunc models, the `champion` gate, and stylising with them.

One registered model per direction, `<registry.model_prefix>-<source>-to-<target>`. Promotion is
by alias only (registry stages are deprecated in MLflow 3). mlflow and torch are imported inside
the functions that use them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from culturegan.config import Params, RegistryConfig, TrackingConfig, dump_params
from culturegan.errors import CheckpointError, ConfigError, SourceError
from culturegan.fileio import atomic_path
from culturegan.tracking import (
    PARENT_RUN_ENV,
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

CHAMPION = "champion"
GAN = "gan"  # the GAN's entry in metrics.json "methods" (culturegan.evaluation.evaluate.GAN)
LOGGED_MODEL_NAME = "stylizer"
SERVING_CODE = Path(__file__).with_name("serving.py")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}

# Tags on each model version. eval.* describe the version; promotion.* the gate's decision.
TAG_PAIR = "culturegan.pair"
TAG_GENERATOR_SHA = "culturegan.generator_sha256"
TAG_METRIC = "eval.metric"
TAG_VALUE = "eval.value"
TAG_FINGERPRINT = "eval.fingerprint"
TAG_FINGERPRINT_INFO = "eval.fingerprint_info"
TAG_DECISION = "promotion.decision"
TAG_REASON = "promotion.reason"
TAG_CANDIDATE_VALUE = "promotion.candidate_value"
TAG_CHAMPION_VERSION = "promotion.champion_version"
TAG_CHAMPION_VALUE = "promotion.champion_value"
PROMOTED, KEPT = "promoted", "not_promoted"

_SPACE_METRIC = re.compile(r"^(?:kid|fid)_([a-z0-9]+)")
_CLASSIFIER_METRICS = {"style_accuracy", "target_probability"}


def model_name(cfg: RegistryConfig, source: str, target: str) -> str:
    """The registered model of one direction, e.g. culturegan-photo-to-inkwash."""
    return f"{cfg.model_prefix}-{source}-to-{target}"


def champion_uri(cfg: RegistryConfig, pair: str) -> str:
    """`models:/<name>@champion` for a directed pair '<source>-<target>'."""
    from culturegan.config import parse_pair

    return f"models:/{model_name(cfg, *parse_pair(pair))}@{CHAMPION}"


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


# ---------------------------------------------------------------- the promotion gate (pure)


@dataclass(frozen=True)
class Evidence:
    """What the gate knows about one model version: its metric value and evaluation set.

    `problem` says why `value` or `fingerprint` is None.
    """

    metric: str
    value: float | None
    fingerprint: str | None
    version: str | None = None
    problem: str = ""
    # the same metric for the baselines evaluated beside this model (identity, reinhard, ...)
    baselines: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def decide(candidate: Evidence, champion: Evidence | None, cfg: RegistryConfig) -> Decision:
    """Promote only a candidate with a valid value on the champion's evaluation set that beats it.

    The margin is strict: the candidate must be better by more than `cfg.min_improvement`.
    Missing values and incomparable evaluations (another metric, another evaluation set) never
    promote; the first model with a valid value and fingerprint does when there is no champion.
    """
    metric = candidate.metric
    if candidate.value is None:
        return Decision(False, f"no valid {metric} for this model: {candidate.problem}")
    if candidate.fingerprint is None:
        return Decision(
            False,
            f"its evaluation set cannot be identified, so it compares with nothing: {candidate.problem}",
        )
    sign = 1.0 if cfg.higher_is_better else -1.0
    identity = candidate.baselines.get("identity")
    if identity is None:
        return Decision(
            False,
            f"its evaluation has no identity baseline for {metric}, so it cannot be shown to beat "
            "doing nothing (keep 'identity' in evaluation.baselines)",
        )
    versus = _versus_baselines(candidate, sign)
    if sign * (candidate.value - identity) <= 0:
        return Decision(
            False, f"{metric} {_fmt(candidate.value)} does not beat doing nothing (identity {_fmt(identity)}); {versus}"
        )
    if champion is None:
        return Decision(
            True, f"first model with a valid {metric} ({_fmt(candidate.value)}); no champion yet; {versus}"
        )
    who = f"champion version {champion.version}"
    if champion.metric != metric:
        return Decision(
            False,
            f"incomparable: {who} was gated on {champion.metric or 'nothing'}, this model on {metric}",
        )
    if champion.fingerprint != candidate.fingerprint:
        return Decision(
            False,
            f"incomparable: {who} was evaluated on another evaluation set (test images, image size or "
            f"feature space differ); re-evaluate it on this set or promote by hand",
        )
    if champion.value is None:
        return Decision(False, f"incomparable: {who} has no valid {metric}")
    gain = candidate.value - champion.value
    if not cfg.higher_is_better:
        gain = -gain
    better = "higher" if cfg.higher_is_better else "lower"
    detail = (
        f"{metric} {_fmt(candidate.value)} vs {_fmt(champion.value)} of {who} "
        f"({better} is better): improvement {gain:+.6g}"
    )
    # isclose: 0.51 - 0.50 is 0.0100000000000000009 in floating point, which is not "more than 0.01".
    if gain > cfg.min_improvement and not math.isclose(
        gain, cfg.min_improvement, rel_tol=1e-9, abs_tol=1e-12
    ):
        return Decision(True, f"{detail} > min_improvement {_fmt(cfg.min_improvement)}; {versus}")
    return Decision(
        False, f"{detail} is not more than min_improvement {_fmt(cfg.min_improvement)}; {versus}"
    )


def _versus_baselines(candidate: Evidence, sign: float) -> str:
    """How the candidate stands against the best baseline on the gate's metric, for the record."""
    assert candidate.value is not None
    best = max(candidate.baselines, key=lambda k: sign * candidate.baselines[k])
    diff = sign * (candidate.value - candidate.baselines[best])
    stand = "ahead of" if diff > 0 else "behind" if diff < 0 else "level with"
    return f"{stand} the best baseline {best} ({_fmt(candidate.baselines[best])}) by {_fmt(abs(diff))}"


# ---------------------------------------------------------------- evidence from metrics.json


def read_metrics(metrics_file: Path | None, pair: str) -> tuple[dict[str, Any] | None, str]:
    """The evaluate stage's metrics.json, or (None, why) when there is none to read.

    A metrics file of another pair is a wiring mistake, not a missing metric: ConfigError.
    """
    if metrics_file is None:
        return None, "no metrics file was given"
    path = Path(metrics_file)
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"{path} does not exist"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"{path} cannot be read as JSON ({type(err).__name__}: {err})"
    if not isinstance(metrics, dict) or not isinstance(metrics.get("methods"), dict):
        return None, f"{path} is not an evaluate-stage metrics.json (no 'methods')"
    if metrics.get("pair") != pair:
        raise ConfigError(
            f"{path} holds the metrics of pair {metrics.get('pair')!r}, not of {pair!r}",
            hint="pass the metrics.json that the evaluate stage wrote for this directed pair",
        )
    return metrics, ""


def metric_value(
    metrics: dict[str, Any] | None, metric: str, problem: str = ""
) -> tuple[float | None, str]:
    """The GAN's value of `metric`, or (None, why) when it is missing or not a finite number."""
    if metrics is None:
        return None, problem
    gan = metrics["methods"].get(GAN)
    if not isinstance(gan, dict):
        skipped = (metrics.get("skipped") or {}).get(GAN, "")
        return None, f"metrics.json has no GAN results{': ' + skipped if skipped else ''}"
    value = gan.get(metric)
    if value is None:
        if metric in gan:
            return None, f"{metric} is null in metrics.json (undefined for this evaluation)"
        have = sorted(
            k for k, v in gan.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
        )
        return None, f"metrics.json has no {metric} for the GAN; it has {', '.join(have)}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None, f"{metric} = {value!r} in metrics.json is not a finite number"
    return float(value), ""


def baseline_values(metrics: dict[str, Any] | None, metric: str) -> dict[str, float]:
    """`metric` of every baseline in metrics.json that has a finite value of it."""
    if metrics is None:
        return {}
    out = {}
    for name, record in metrics["methods"].items():
        value = record.get(metric) if isinstance(record, dict) and name != GAN else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = float(value)
    return out


def _feature_space(metric: str) -> str:
    match = _SPACE_METRIC.match(metric)
    if match:
        return match.group(1)
    return "classifier" if metric in _CLASSIFIER_METRICS else "pixels"


def evaluation_fingerprint(
    params: Params, metrics: dict[str, Any], metric: str, data_root: Path
) -> tuple[str | None, dict[str, Any] | str]:
    """A hash of what `metric`'s value depends on besides the model, or (None, why).

    That is: the source and target test images (path and sha256 of each file, as listed in the
    manifest), the image size, the feature space the metric is measured in (the sha256 of the
    classifier or Inception weights; none for pixel metrics) and, for the histogram distance,
    its bin count. KID's random subsets (drawn with the run seed) are left out: they estimate
    the same quantity. Returns (fingerprint, its readable parts).
    """
    from culturegan.data.manifest import MANIFEST_NAME, read_manifest

    data_root = Path(data_root)
    if not (data_root / MANIFEST_NAME).is_file():
        return None, f"{data_root / MANIFEST_NAME} not found (set data.root or pass data_root)"
    manifest = read_manifest(data_root)
    images: dict[str, list[str]] = {}
    for role in ("source", "target"):
        style = metrics.get(role)
        rows = manifest[(manifest["style"] == style) & (manifest["split"] == "test")].sort_values(
            "path"
        )
        scored = (metrics.get("n_images") or {}).get(f"{role}_test")
        if scored != len(rows):
            return None, (
                f"metrics.json scored {scored} {role} test images but {data_root / MANIFEST_NAME} "
                f"lists {len(rows)} for style {style!r}: the data changed since evaluation"
            )
        try:
            images[role] = [f"{rel}:{_sha256(data_root / rel)}" for rel in rows["path"]]
        except OSError as err:
            return None, f"a {role} test image cannot be read ({err})"
    space = _feature_space(metric)
    if space == "pixels":
        space_id = "pixels"
    else:
        if space not in (metrics.get("feature_spaces") or []):
            return None, f"metrics.json has no {space!r} feature space"
        weights = {
            "classifier": metrics.get("classifier"),
            "inception": params.evaluation.inception_weights,
        }.get(space)
        if weights is None:
            return None, f"the weights of feature space {space!r} are unknown"
        try:
            space_id = f"{space}:{_sha256(Path(weights))}"
        except OSError as err:
            return None, f"the {space} weights {weights} cannot be read ({err})"
    parts: dict[str, Any] = {
        "metric_space": space_id,
        "image_size": metrics.get("image_size"),
        "source_test": hashlib.sha256("\n".join(images["source"]).encode()).hexdigest(),
        "target_test": hashlib.sha256("\n".join(images["target"]).encode()).hexdigest(),
    }
    if metric == "gt_hist_hellinger":
        parts["hist_bins"] = params.evaluation.hist_bins
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return digest, parts


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


# ---------------------------------------------------------------- packaging


def find_generator(model_dir: Path, source: str, target: str) -> tuple[Path, dict[str, Any]]:
    """The generator file in `model_dir` (generator.pt, or generator_reverse.pt for CycleGAN's
    backward direction) whose recorded direction is source -> target, and its file contents."""
    from culturegan.training.checkpoint import read_generator_file

    model_dir = Path(model_dir)
    files = sorted(model_dir.glob("generator*.pt"))
    found = []
    for path in files:
        data = read_generator_file(path)
        found.append(f"{path.name}: {data.get('source')}->{data.get('target')}")
        if data.get("source") == source and data.get("target") == target:
            return path, data
    raise CheckpointError(
        f"no generator for {source}->{target} in {model_dir}"
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
def _run_for_model(run_id: str | None, experiment_id: str, pair: str) -> Any:
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
        tags={ROLE_TAG: "register", "pair": pair},
        log_system_metrics=False,
    ) as run:
        yield run


def _log_model(
    params: Params,
    pair: str,
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
        "pair": pair,
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
                    "pair": pair,
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
    pair: str,
    model_dir: Path,
    metrics_file: Path | None,
    run_id: str | None = None,
    *,
    data_root: Path | None = None,
) -> dict[str, Any]:
    """Register the generator of directed pair '<source>-<target>' and gate it for `champion`.

    `model_dir` is the train stage's output (runs/<training pair>): the generator whose recorded
    direction is source -> target is used, so CycleGAN's backward model registers under the
    reversed pair. `metrics_file` is the evaluate stage's metrics.json for this directed pair;
    missing, it still registers but never promotes. The model is logged in the run `run_id`
    (e.g. the pair's training run) or in a new run. `data_root` (default: data.root) holds the
    test images that identify the evaluation set. Returns the name, version, decision and reason.
    """
    from culturegan.config import parse_pair

    start = time.perf_counter()
    cfg = params.registry
    source, target = parse_pair(pair)
    generator_path, generator = find_generator(Path(model_dir), source, target)
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
        cfg.metric, value, fingerprint, problem=problem, baselines=baseline_values(metrics, cfg.metric)
    )

    import mlflow
    from mlflow import MlflowClient

    experiment_id = configure(params.tracking)
    client = MlflowClient(resolve_tracking_uri(params.tracking))
    name = model_name(cfg, source, target)
    model_uri, logged_run_id = _log_model(
        params, pair, generator_path, generator, run_id, experiment_id
    )
    version = mlflow.register_model(
        model_uri,
        name,
        tags={
            TAG_PAIR: pair,
            TAG_GENERATOR_SHA: _sha256(generator_path),
            TAG_METRIC: cfg.metric,
            TAG_VALUE: "" if value is None else repr(value),
            TAG_FINGERPRINT: fingerprint or "",
            TAG_FINGERPRINT_INFO: json.dumps(parts) if isinstance(parts, dict) else "",
        },
    ).version
    if str(version) == "1":
        client.update_registered_model(
            name, description=f"Stylises {source} images as {target} (culturegan)."
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


# ---------------------------------------------------------------- using a registered model


def list_images(inputs: Path, out: Path) -> list[Path]:
    """`inputs` itself if it is a file, else the image files below it (sorted; outputs skipped)."""
    inputs = Path(inputs)
    if inputs.is_file():
        return [inputs]
    if not inputs.is_dir():
        raise SourceError(
            f"input {inputs} does not exist", hint="pass an image file or a folder of images"
        )
    out_resolved = Path(out).resolve()
    files = []
    for path in sorted(inputs.rglob("*")):
        rel = path.relative_to(inputs)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if path.resolve().is_relative_to(out_resolved):
            continue  # an output folder inside the input folder: earlier results are not inputs
        files.append(path)
    return files


def _read_rgb(path: Path) -> np.ndarray:
    import numpy as np
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)  # camera photos are stored rotated
        return np.asarray(im.convert("RGB"))


def _output_paths(files: list[Path], inputs: Path, out: Path) -> dict[Path, Path]:
    """out/<relative path>.png; where two inputs would share one (a.png, a.jpg), the non-PNG
    input keeps its whole name (a.jpg.png)."""
    rels = {
        path: path.relative_to(inputs) if inputs.is_dir() else Path(path.name) for path in files
    }
    counts: dict[Path, int] = {}
    for rel in rels.values():
        counts[rel.with_suffix(".png")] = counts.get(rel.with_suffix(".png"), 0) + 1
    dests = {}
    for path, rel in rels.items():
        plain = rel.with_suffix(".png")
        dests[path] = out / (
            plain if counts[plain] == 1 or rel.suffix == ".png" else rel.parent / f"{rel.name}.png"
        )
    return dests


def stylize(
    model_uri: str, inputs: Path, out: Path, tracking_cfg: TrackingConfig
) -> dict[str, Any]:
    """Stylise an image or a folder of images (recursively) with a registered model into `out`.

    `model_uri` is e.g. `models:/culturegan-photo-to-inkwash@champion`, resolved against the
    tracking URI of `tracking_cfg` (env MLFLOW_TRACKING_URI first). Each result is written
    atomically as `out/<relative path>.png`, same size as its input. Images that cannot be read
    or that the model refuses (e.g. larger than registry.max_side) are listed in "failed" and
    skipped; they stop nothing.
    """
    import mlflow
    from mlflow.exceptions import MlflowException
    from PIL import Image
    from tqdm import tqdm

    start = time.perf_counter()
    inputs, out = Path(inputs), Path(out)
    files = list_images(inputs, out)
    uri = resolve_tracking_uri(tracking_cfg)
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except (MlflowException, OSError) as err:
        message = err.message if isinstance(err, MlflowException) else str(err)
        raise ConfigError(
            f"model {model_uri} cannot be loaded from {redact(uri)}: {redact(message)}",
            hint="check the model name and alias (has `culturegan register` promoted one?) and "
            "MLFLOW_TRACKING_URI / tracking.tracking_uri",
        ) from None

    failed: list[dict[str, str]] = []
    written: list[str] = []
    dests = _output_paths(files, inputs, out)
    for path in tqdm(files, desc="stylize", unit="image", disable=not sys.stderr.isatty()):
        try:
            image = _read_rgb(path)
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            failed.append(
                {"path": str(path), "error": f"unreadable image: {type(err).__name__}: {err}"}
            )
            log.warning("skipping %s: unreadable image (%s)", path, err)
            continue
        try:
            result = model.predict(image[None])[0]  # (H, W, 3) uint8
        except MlflowException as err:
            failed.append({"path": str(path), "error": err.message})
            log.warning("skipping %s: %s", path, err.message)
            continue
        dest = dests[path]
        with atomic_path(dest) as tmp:
            Image.fromarray(result).save(tmp, format="PNG")
        written.append(str(dest))
    if not files:
        log.warning(
            "no images found in %s (suffixes: %s)", inputs, ", ".join(sorted(IMAGE_SUFFIXES))
        )
    return {
        "model_uri": model_uri,
        "out": str(out),
        "images": len(files),
        "written": len(written),
        "outputs": written,
        "failed": failed,
        "seconds": round(time.perf_counter() - start, 3),
    }
