"""The promotion gate: what a model version's evidence is and whether it beats the champion.

Pure: no MLflow here (tests and the register stage call it directly); the evidence comes from
the evaluate stage's metrics.json and the manifest's test images.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from culturegan.config import Pair, Params, RegistryConfig
from culturegan.errors import ConfigError

CHAMPION = "champion"
GAN = "gan"  # the GAN's entry in metrics.json "methods" (culturegan.evaluation.evaluate.GAN)
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


def model_name(cfg: RegistryConfig, pair: Pair) -> str:
    """The registered model of one direction, e.g. culturegan-photo-to-inkwash."""
    return f"{cfg.model_prefix}-{pair.source}-to-{pair.target}"


def champion_uri(cfg: RegistryConfig, pair: Pair) -> str:
    """`models:/<name>@champion` for a directed pair."""
    return f"models:/{model_name(cfg, pair)}@{CHAMPION}"


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


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
            False,
            f"{metric} {_fmt(candidate.value)} does not beat doing nothing (identity {_fmt(identity)}); {versus}",
        )
    if champion is None:
        return Decision(
            True,
            f"first model with a valid {metric} ({_fmt(candidate.value)}); no champion yet; {versus}",
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
    return (
        f"{stand} the best baseline {best} ({_fmt(candidate.baselines[best])}) by {_fmt(abs(diff))}"
    )


def read_metrics(metrics_file: Path | None, pair: Pair) -> tuple[dict[str, Any] | None, str]:
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
    if metrics.get("pair") != str(pair):
        raise ConfigError(
            f"{path} holds the metrics of pair {metrics.get('pair')!r}, not of {str(pair)!r}",
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
    classifier or Inception weights, evaluation.texture for the texture space; none for pixel
    metrics) and, for the histogram distance,
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
            images[role] = [f"{rel}:{file_sha256(data_root / rel)}" for rel in rows["path"]]
        except OSError as err:
            return None, f"a {role} test image cannot be read ({err})"
    space = _feature_space(metric)
    if space == "pixels":
        space_id = "pixels"
    elif space == "texture":
        # No weights: the random filters are drawn from evaluation.texture, so its values say
        # which space the metric was measured in.
        if space not in (metrics.get("feature_spaces") or []) or params.evaluation.texture is None:
            return None, "metrics.json has no 'texture' feature space, or evaluation.texture is null"
        space_id = "texture:" + json.dumps(params.evaluation.texture.model_dump(), sort_keys=True)
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
            space_id = f"{space}:{file_sha256(Path(weights))}"
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
