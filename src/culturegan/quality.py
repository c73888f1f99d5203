"""Transfer quality against training compute: the measurement behind docs/quality.md.

`quality_curve` trains one pair with the given params at several step budgets (each a full run
with its own lr schedule, as a user would run it) and evaluates both directions on the test
split with the evaluate stage's own function. Each row holds the GAN's ground-truth SSIM/PSNR,
content edge-SSIM against the truth's, high-frequency energy against the target's, KID gain, and
the best baseline's ground-truth scores, so a recipe is judged by the issue's targets directly.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import yaml

from culturegan.config import Pair, Params, dump_params, parse_params

log = logging.getLogger(__name__)


def override(params: Params, assignments: list[str]) -> Params:
    """`params` with dotted `key=value` assignments (values parsed as YAML), validated again."""
    raw = dump_params(params)
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep:
            from culturegan.errors import ConfigError

            raise ConfigError(f"bad override {item!r}", hint="write key=value, e.g. train.steps=480")
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return parse_params(raw, "overrides")


def summarize(metrics: dict[str, Any]) -> dict[str, Any]:
    """The numbers the quality targets are stated in, from one direction's metrics.json."""
    methods = metrics["methods"]
    gan = methods.get("gan", {})
    baselines = {k: v for k, v in methods.items() if k != "gan"}
    truth = (metrics.get("controls") or {}).get("truth", {})  # the true rendering's own scores
    row: dict[str, Any] = {
        "direction": metrics["pair"],
        "gan_gt_ssim": gan.get("gt_ssim"),
        "gan_gt_psnr": gan.get("gt_psnr"),
        "gan_gt_ssim_coarse": gan.get("gt_ssim_coarse"),
        "gan_edge_ssim": gan.get("content_edge_ssim"),
        "truth_edge_ssim": truth.get("content_edge_ssim"),
        "gan_hf_ratio": gan.get("hf_ratio"),
        "gan_kid_gain": gan.get("kid_classifier_relative_gain"),
        "gan_deception": gan.get("style_accuracy"),
    }
    others = {k: v for k, v in baselines.items() if k != "identity"}  # identity's gain is 0 by definition

    def best_gain(key: str) -> list[Any]:
        """[baseline, value] of the colour baseline with the highest `key`."""
        best = max(others, key=lambda k: others[k].get(key) or -1e9)
        return [best, others[best].get(key)]

    if others:
        row["best_baseline_kid_gain"] = best_gain("kid_classifier_relative_gain")
    if gan.get("kid_texture_relative_gain") is not None:  # the training-free texture space
        row["gan_kid_gain_texture"] = gan["kid_texture_relative_gain"]
        if others:
            row["best_baseline_kid_gain_texture"] = best_gain("kid_texture_relative_gain")
    if baselines and "gt_ssim" in next(iter(baselines.values())):
        best_ssim = max(baselines, key=lambda k: baselines[k]["gt_ssim"])
        best_psnr = max(baselines, key=lambda k: baselines[k]["gt_psnr"])
        row |= {
            "best_baseline_gt_ssim": [best_ssim, baselines[best_ssim]["gt_ssim"]],
            "best_baseline_gt_psnr": [best_psnr, baselines[best_psnr]["gt_psnr"]],
        }
        if all("gt_ssim_coarse" in b for b in baselines.values()):  # not in older metrics.json
            best = max(baselines, key=lambda k: baselines[k]["gt_ssim_coarse"])
            row["best_baseline_gt_ssim_coarse"] = [best, baselines[best]["gt_ssim_coarse"]]
    controls = metrics.get("controls") or {}
    for name in ("source_noise", "source_blur"):  # real data: damage the metric must not reward
        if name in controls:
            row[f"{name}_kid_gain"] = controls[name].get("kid_classifier_relative_gain")
    if isinstance(metrics.get("classifier_members"), dict) and gan:
        # an ensemble classifier: the GAN's margin over the best other method in each member's space
        from culturegan.evaluation.tables import classifier_runs

        record = {"source": "", "target": "", "seed": 0, **metrics}
        runs = classifier_runs([record])
        if runs is not None:
            row["gan_kid_margin_per_classifier_run"] = runs["pairs"][0]["margins"]
    if gan and truth:
        row["edge_ratio"] = gan["content_edge_ssim"] / truth["content_edge_ssim"]
        row["beats_baselines_gt"] = all(
            gan["gt_ssim"] > b["gt_ssim"] and gan["gt_psnr"] > b["gt_psnr"] for b in baselines.values()
        )
    return row


def quality_curve(
    params: Params,
    pair: Pair,
    steps: list[int],
    data_root: Path,
    classifier_path: Path,
    work_dir: Path,
    label: str = "",
) -> list[dict[str, Any]]:
    """Train `pair` for each budget in `steps` and score both directions; one row per direction.
    The classifier is checked before any training, so a missing or unreadable one stops the
    command at once instead of after every budget has trained."""
    from culturegan.evaluation.classifier import load_classifier
    from culturegan.evaluation.evaluate import evaluate_pair
    from culturegan.stages import directions
    from culturegan.training.trainer import train_pair

    load_classifier(classifier_path)  # a CheckpointError that names the file
    rows = []
    for n in steps:
        p = params.model_copy(update={"train": params.train.model_copy(update={"steps": n})})
        run_dir = Path(work_dir) / f"{label or 'run'}-{pair}-{n}"
        t0 = time.perf_counter()
        result = train_pair(p, pair, data_root, run_dir, None, resume=False, checkpoint_dir=run_dir / "ckpt")
        train_s = time.perf_counter() - t0
        for direction, generator in directions(p, pair, run_dir).items():
            out = run_dir / "eval" / str(direction)
            evaluate_pair(p, direction, data_root, run_dir, classifier_path, out, generator_file=generator)
            metrics = json.loads((out / "metrics.json").read_text())
            row = {"label": label, "pair": str(pair), "steps": n, "train_seconds": round(train_s, 1),
                   "images_per_s": result.get("images_per_s"), **summarize(metrics),
                   "grid": str(out / "grid.png")}
            log.info("%s", json.dumps(row))
            rows.append(row)
    return rows
