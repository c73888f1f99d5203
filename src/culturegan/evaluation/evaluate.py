"""The per-pair `evaluate` stage: the GAN and every baseline on the same test images, all metrics, a grid.

Inputs are the TEST split of the source style; the distribution reference is the TEST split of
the target style; baselines take their style from the target's TRAIN split only.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from culturegan.config import Pair, Params
from culturegan.errors import CheckpointError, ConfigError
from culturegan.evaluation import imageops, metrics
from culturegan.evaluation.baselines import make_baselines
from culturegan.evaluation.classifier import load_classifier
from culturegan.evaluation.imageset import load_split, scene_pairs
from culturegan.fileio import atomic_path, atomic_write_text

log = logging.getLogger(__name__)

Translate = Callable[[np.ndarray], np.ndarray]  # uint8 (N, H, W, 3) -> uint8 (N, H, W, 3)
METRICS_FILE = "metrics.json"
GRID_FILE = "grid.png"
GAN = "gan"


def module_translator(module: Any, batch_size: int = 32) -> Translate:
    """Wrap a generator nn.Module mapping [-1, 1] (B, 3, H, W) to [-1, 1] as a uint8 -> uint8 callable."""
    import torch

    def translate(images: np.ndarray) -> np.ndarray:
        module.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(images), batch_size):
                x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size]))
                x = x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
                y = module(x).float().clamp(-1.0, 1.0)
                out.append(((y + 1.0) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
        return np.concatenate(out)

    return translate


def load_translator(generator_path: Path, batch_size: int = 32) -> Translate:
    """The trained generator at `generator_path` (training.checkpoint.load_generator) as a Translate."""
    path = Path(generator_path)
    if not path.is_file():
        raise CheckpointError(
            f"generator {path} not found", hint="run the train stage for this pair first"
        )
    from culturegan.training.checkpoint import load_generator

    return module_translator(load_generator(path), batch_size)


def control_outputs(
    sources: np.ndarray, truth: np.ndarray, target_refs: np.ndarray, seed: int
) -> dict[str, np.ndarray]:
    """The truth and the controls a valid metric must rank below it (RESEARCH.md, trap 7): the
    truth with Gaussian noise (sigma 0.1 of the range), the truth blurred (sigma 1.5 px), a
    colour-only transfer (Reinhard) of the source, and the source unchanged. uint8 (N, H, W, 3) each."""
    from culturegan.evaluation.baselines import reinhard

    noisy, blurred = _damaged(truth, [seed, 7])
    return {
        "truth": truth,
        "truth_noise": noisy,
        "truth_blur": blurred,
        "colour_transfer": reinhard(sources, target_refs),
        "source": sources,
    }


def _damaged(images: np.ndarray, rng_key: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """`images` with Gaussian noise (sigma 0.1 of the range), and blurred (sigma 1.5 px); uint8."""
    from scipy import ndimage

    rng = np.random.default_rng(rng_key)
    noisy = np.clip(images.astype(np.float64) + rng.normal(0.0, 25.5, images.shape), 0, 255)
    blurred = ndimage.gaussian_filter(images.astype(np.float64), sigma=(0, 1.5, 1.5, 0), mode="reflect")
    return np.rint(noisy).astype(np.uint8), np.clip(np.rint(blurred), 0, 255).astype(np.uint8)


def source_controls(sources: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Damaged sources for data without a truth, with the same damage as the truth's controls
    (`control_outputs`): noise and blur. uint8 (N, H, W, 3) each."""
    noisy, blurred = _damaged(sources, [seed, 8])
    return {"source_noise": noisy, "source_blur": blurred}


def _feature_spaces(params: Params, classifier: Any) -> dict[str, metrics.FeatureFn]:
    spaces: dict[str, metrics.FeatureFn] = {"classifier": classifier.features}
    texture = params.evaluation.texture
    if texture is not None:
        spaces["texture"] = metrics.TextureFeatures(
            texture.filters,
            texture.kernel_size,
            tuple(texture.scales),
            texture.seed,
            params.evaluation.batch_size,
        )
    if params.evaluation.inception_weights is not None:
        spaces["inception"] = metrics.InceptionFeatures(
            params.evaluation.inception_weights, params.evaluation.batch_size
        )
    return spaces


def evaluate_pair(
    params: Params,
    pair: Pair,
    data_root: Path,
    model_dir: Path | None,
    classifier_path: Path,
    out_dir: Path,
    translate: Translate | None = None,
    generator_file: str = "generator.pt",
) -> dict[str, Any]:
    """Score the GAN of `pair` and every baseline on the source TEST images; write metrics.json and grid.png.

    The GAN is `translate` if given, else `model_dir/generator_file` (e.g. generator_reverse.pt for
    CycleGAN's target->source direction, evaluated under the reversed pair name); with neither,
    only the baselines are scored. Ground-truth metrics are added when source and target test
    images share scene keys (the synthetic benchmark).
    """
    start = time.perf_counter()
    cfg = params.evaluation
    source, target = pair.source, pair.target
    data_root, out_dir = Path(data_root), Path(out_dir)
    if translate is None and model_dir is not None:
        translate = load_translator(Path(model_dir) / generator_file, cfg.batch_size)

    src = load_split(data_root, source, "test")
    tgt = load_split(data_root, target, "test")
    refs = load_split(data_root, target, "train")
    if src.images.shape[1:] != tgt.images.shape[1:]:
        raise ConfigError(
            f"{source} and {target} test images differ in size: {src.images.shape[1:]} vs {tgt.images.shape[1:]}",
            hint="prepare both styles with the same data.image_size",
        )
    classifier = load_classifier(classifier_path, cfg.batch_size)
    if target not in classifier.styles:
        raise CheckpointError(
            f"the style classifier {classifier_path} does not know style {target!r} (it has {classifier.styles})",
            hint="retrain the classifier on data that includes the target style",
        )
    target_index = classifier.styles.index(target)
    spaces = _feature_spaces(params, classifier)
    aligned = scene_pairs(src, tgt)

    # Scoring runs on fixed tiles when evaluation.tile_size is set (few large paintings: many
    # samples, at the scale the GAN was trained on); every method translates whole images first.
    tile = cfg.tile_size

    def tiled(images: np.ndarray) -> np.ndarray:
        return imageops.tiles(images, tile)

    src_t, tgt_t, refs_t = tiled(src.images), tiled(tgt.images), tiled(refs.images)
    per_image = len(src_t) // len(src)

    def tile_index(index: np.ndarray) -> np.ndarray:
        return (np.asarray(index)[:, None] * per_image + np.arange(per_image)[None, :]).reshape(-1)

    methods, skipped = make_baselines(cfg, params.seed)
    if translate is not None:
        methods = {GAN: translate, **methods}
    else:
        skipped[GAN] = "no model_dir given: baselines only"

    kid_args = {"subsets": cfg.kid_subsets, "subset_size": cfg.kid_subset_size, "seed": params.seed}
    target_feats = {name: fn(tgt_t) for name, fn in spaces.items()}
    source_feats = {name: fn(src_t) for name, fn in spaces.items()}
    reference: dict[str, Any] = {"target_real": {}, "source_vs_target": {}}
    kid_identity: dict[str, float] = {}
    with_fid = {name: getattr(fn, "with_fid", True) for name, fn in spaces.items()}
    for name in spaces:
        floor = metrics.real_floor(target_feats[name], **kid_args, with_fid=with_fid[name])
        reference["target_real"].update(
            {
                f"kid_{name}_floor": floor["kid"],
                f"kid_{name}_floor_std": floor["kid_std"],
                "floor_n_per_half": floor["n_per_half"],
            }
        )
        kid_identity[name], kid_std = metrics.kid(
            source_feats[name], target_feats[name], **kid_args
        )
        reference["source_vs_target"].update(
            {f"kid_{name}": kid_identity[name], f"kid_{name}_std": kid_std}
        )
        if with_fid[name]:
            reference["target_real"][f"fid_{name}_floor"] = floor["fid"]
            reference["source_vs_target"][f"fid_{name}"] = metrics.fid(
                source_feats[name], target_feats[name]
            )
    reference["target_real"]["style_accuracy"] = metrics.style_accuracy(
        classifier.predict_proba(tgt_t), target_index
    )
    target_hf = float(imageops.high_frequency_share(tgt_t).mean())
    reference["target_real"]["hf_share"] = target_hf

    # An ensemble classifier: each member's columns of the classifier space are also scored alone,
    # so the analysis can show how a verdict varies with the classifier's training run.
    member_cols = classifier.member_columns()

    def member_identity(ref_feats: np.ndarray) -> list[float]:
        """KID(source, reference) in each member's space: the gap a relative gain is taken of."""
        src_feats = source_feats["classifier"]
        return [metrics.kid(src_feats[:, c], ref_feats[:, c], **kid_args)[0] for c in member_cols]

    member_gains: dict[str, dict[str, list[float | None]]] = {"methods": {}, "controls": {}}

    def score(
        out: np.ndarray,
        inputs: np.ndarray,
        against: dict[str, Any],
        truth: tuple[np.ndarray, np.ndarray] | None,
        member_out: list[float | None] | None = None,
    ) -> dict[str, Any]:
        """Every metric of one output set. `against`: the distribution reference per space, and
        under "members" each ensemble member's KID(source, reference); `truth`: (indices into
        `out`, the true renderings of those outputs' scenes); `member_out`: filled with each
        ensemble member's relative KID gain."""
        record: dict[str, Any] = {"n_images": len(out)}
        for space, fn in spaces.items():
            ref_feats, ref_identity = against[space]
            feats = fn(out)
            record.update(
                metrics.distribution_metrics(
                    space, feats, ref_feats, ref_identity, **kid_args, with_fid=with_fid[space]
                )
            )
            if space == "classifier" and member_out is not None:
                member_out[:] = [
                    metrics.relative_gain(metrics.kid(feats[:, c], ref_feats[:, c], **kid_args)[0], ident)
                    for c, ident in zip(member_cols, against["members"], strict=True)
                ]
        proba = classifier.predict_proba(out)
        record["style_accuracy"] = metrics.style_accuracy(proba, target_index)
        record["target_probability"] = float(proba[:, target_index].mean())
        record.update(metrics.content_preservation(inputs, out))
        record.update(metrics.high_frequency(out, target_hf))
        if truth is not None:
            record.update(metrics.ground_truth_metrics(out[truth[0]], truth[1], cfg.hist_bins))
        return record

    test_ref: dict[str, Any] = {space: (target_feats[space], kid_identity[space]) for space in spaces}
    test_ref["members"] = member_identity(target_feats["classifier"])
    records: dict[str, dict[str, Any]] = {}
    outputs: dict[str, np.ndarray] = {}
    for name, method in methods.items():
        t0 = time.perf_counter()
        out = method(src.images) if name == GAN else method(src.images, refs.images)
        seconds = time.perf_counter() - t0
        if out.shape != src.images.shape or out.dtype != np.uint8:
            raise ValueError(
                f"method {name!r} returned {out.dtype} {out.shape}, expected uint8 {src.images.shape}"
            )
        outputs[name] = out
        truth = None
        if aligned is not None:
            truth = (tile_index(aligned[0]), tgt_t[tile_index(aligned[1])])
        gains: list[float | None] = []
        record = score(tiled(out), src_t, test_ref, truth, gains)
        if member_cols:
            member_gains["methods"][name] = gains
        record["seconds"] = round(seconds, 3)
        records[name] = record
        log.info(
            "%s %s: kid_classifier %.4f, style accuracy %.2f",
            pair,
            name,
            record["kid_classifier"],
            record["style_accuracy"],
        )

    controls: dict[str, dict[str, Any]] = {}
    if aligned is not None:
        # Metric validity (RESEARCH.md, trap 7): the true rendering and outputs that must lose to it,
        # scored by every metric. Their distribution metrics use the target's TRAIN images as the
        # reference, since the truth IS the test reference and would match it trivially. The
        # truth's own content scores are the ceiling a transfer into this style can reach.
        ia, ib = aligned
        train_ref: dict[str, Any] = {}
        for space, fn in spaces.items():
            ref_feats = fn(refs_t)
            train_ref[space] = (ref_feats, metrics.kid(source_feats[space], ref_feats, **kid_args)[0])
        train_ref["members"] = member_identity(train_ref["classifier"][0])
        src_a, truth_a = tiled(src.images[ia]), tiled(tgt.images[ib])
        control_refs = train_ref
        pending = control_outputs(src.images[ia], tgt.images[ib], refs.images, params.seed)
        control_truth: tuple[np.ndarray, np.ndarray] | None = (np.arange(len(src_a)), truth_a)
        control_inputs = src_a
    else:
        # Real data has no truth, but two outputs that are certainly not style transfers still
        # test the metrics: the source with noise and the source blurred, scored like the methods.
        # A quality metric that rates them near a GAN's score cannot tell that GAN's transfer from
        # damage to the source (the validity question of RESEARCH.md, trap 7, without a truth).
        control_refs = test_ref
        pending = source_controls(src.images, params.seed)
        control_truth = None
        control_inputs = src_t
    for name, out in pending.items():
        gains = []
        controls[name] = score(tiled(out), control_inputs, control_refs, control_truth, gains)
        if member_cols:
            member_gains["controls"][name] = gains

    result = {
        "pair": str(pair),
        "source": source,
        "target": target,
        "seed": params.seed,
        "image_size": int(src.images.shape[1]),
        "tile_size": tile,
        "n_images": {
            "source_test": len(src),
            "target_test": len(tgt),
            "target_train_refs": len(refs),
            "ground_truth_pairs": 0 if aligned is None else len(aligned[0]),
        },
        "n_scored": {"source_test": len(src_t), "target_test": len(tgt_t), "target_train_refs": len(refs_t)},
        "feature_spaces": list(spaces),
        "ground_truth": aligned is not None,
        "methods": records,
        "controls": controls,
        "reference": reference,
        "skipped": skipped,
        "classifier": str(classifier_path),
        "seconds": round(time.perf_counter() - start, 3),
    }
    if member_cols:
        result["classifier_members"] = {
            "seeds": classifier.seeds,
            "measure": "kid_classifier_relative_gain",
            "note": "each ensemble member's relative KID gain in its own feature space (its columns "
            "of the classifier space), against the same references as the methods and controls",
            **member_gains,
        }
    atomic_write_text(out_dir / METRICS_FILE, json.dumps(result, indent=2) + "\n")
    _write_grid(
        out_dir / GRID_FILE, src.images, outputs, tgt.images, aligned, source, target, cfg.grid_rows
    )
    log.info("evaluated %s in %.1f s", pair, result["seconds"])
    return {
        "metrics": str(out_dir / METRICS_FILE),
        "grid": str(out_dir / GRID_FILE),
        "methods": list(records),
        "ground_truth": aligned is not None,
        "seconds": result["seconds"],
    }


def _write_grid(
    path: Path,
    sources: np.ndarray,
    outputs: dict[str, np.ndarray],
    truth_set: np.ndarray,
    aligned: tuple[np.ndarray, np.ndarray] | None,
    source: str,
    target: str,
    rows: int,
) -> None:
    """Rows: test scenes; columns: source | each method | the true target rendering when known."""
    from culturegan.imagegrid import preview_grid

    if aligned is not None:
        src_idx, truth_idx = aligned[0][:rows], aligned[1][:rows]
    else:
        src_idx, truth_idx = np.arange(min(rows, len(sources))), None
    labels = [f"source ({source})", *outputs]
    columns = [sources[src_idx], *(out[src_idx] for out in outputs.values())]
    if truth_idx is not None:
        labels.append(f"truth ({target})")
        columns.append(truth_set[truth_idx])
    grid_rows = [[col[i] for col in columns] for i in range(len(src_idx))]
    with atomic_path(path) as tmp:
        preview_grid(grid_rows, labels).save(tmp, format="PNG")
