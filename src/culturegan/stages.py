"""The pipeline's stages after data preparation, one function each, with their standard paths.

`dvc.yaml` (through the CLI), the KFP components and the end-to-end tests call these functions;
each composes package pieces (training + MLflow tracking, evaluation of both directions, the
analysis + report + MLflow logging) and returns a small JSON-able dict.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from culturegan.config import Pair, Params

log = logging.getLogger(__name__)

# Standard locations, relative to the working directory (the repository root for `dvc repro`).
RUNS_ROOT = Path("runs/gan")
CLASSIFIER_DIR = Path("runs/style_classifier")
CULTURE_DIR = Path("reports/culture")
EVAL_ROOT = Path("reports/eval")
REPORT_DIR = Path("report")


def classifier_stage(params: Params, data_root: Path, out_dir: Path = CLASSIFIER_DIR) -> dict[str, Any]:
    """Train the style classifier whose features are the pipeline's own FID/KID space."""
    from culturegan.evaluation.classifier import train_style_classifier

    return train_style_classifier(params, Path(data_root), Path(out_dir))


def culture_stage(
    params: Params, data_root: Path, classifier_dir: Path = CLASSIFIER_DIR, out_dir: Path = CULTURE_DIR
) -> dict[str, Any]:
    """The cultural distance matrix from real held-out images, fixed before any GAN is trained."""
    from culturegan.evaluation.classifier import CLASSIFIER_FILE
    from culturegan.evaluation.culture import write_culture

    return write_culture(params, Path(data_root), Path(classifier_dir) / CLASSIFIER_FILE, Path(out_dir))


def seed_dir(root: Path, pair: Pair, seed: int) -> Path:
    """`root/<pair>/seed<seed>`: one training seed of a pair, under `runs/` and `reports/eval/` alike."""
    return Path(root) / str(pair) / f"seed{seed}"


def check_seed(seed: int) -> int:
    """The training seed of a (pair, seed) run, checked. It is passed to the trainer and recorded
    with the run; params.seed stays the global seed (evaluation's KID subsets, baselines, controls
    and the analysis' resampling), so those do not change with the training seed."""
    from culturegan.errors import ConfigError

    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"bad training seed {seed!r}", hint="use a non-negative integer, e.g. one of train.seeds")
    return seed


def checkpoint_dir(params: Params, pair: Pair, seed: int) -> Path:
    """Where a pair's checkpoints live: outside DVC's outputs (which DVC deletes before re-running
    a stage), keyed by the run's fingerprint so that changed params start a new run instead of
    colliding with an incompatible checkpoint, while a killed run resumes on `dvc repro`."""
    import hashlib
    import json

    from culturegan.training.trainer import run_fingerprint

    key = hashlib.sha256(json.dumps(run_fingerprint(params, pair, seed), sort_keys=True).encode()).hexdigest()
    return Path(params.data.cache_dir) / "checkpoints" / str(pair) / key[:16]


def train_stage(
    params: Params,
    pair: Pair,
    seed: int,
    data_root: Path,
    runs_root: Path = RUNS_ROOT,
    resume: bool = True,
    track: bool = True,
) -> dict[str, Any]:
    """Train the GAN of `pair` with training seed `seed` into `runs_root/<pair>/seed<seed>`,
    tracked as a nested MLflow run under the pipeline's parent run (the open parent of this
    workspace, or CULTUREGAN_PARENT_RUN_ID: `tracking.start_or_resume_parent`).

    A killed training resumes from its last checkpoint (see `checkpoint_dir`), in the same MLflow
    run; the MLflow run id is also written to `<that folder>/run_id.txt` for later stages.
    """
    from culturegan.fileio import atomic_write_text
    from culturegan.training.dataset import check_pair_styles
    from culturegan.training.trainer import train_pair

    check_pair_styles(Path(data_root), pair)  # before any MLflow run exists: it would be FAILED
    seed = check_seed(seed)
    out_dir = seed_dir(runs_root, pair, seed)
    ckpt_dir = checkpoint_dir(params, pair, seed)
    if not track:
        return train_pair(params, pair, Path(data_root), out_dir, None, resume, checkpoint_dir=ckpt_dir, seed=seed)

    from culturegan.tracking.pair_run import pair_run
    from culturegan.tracking.parent_run import start_or_resume_parent

    parent = start_or_resume_parent(params.tracking, params)
    with pair_run(
        params.tracking,
        parent,
        pair,
        # MLflow's `seed` of a training run is its training seed; the global one beside it.
        {**params.model_dump(mode="json"), "seed": seed, "global_seed": params.seed},
        objective=params.train.objective,
        run_id_file=ckpt_dir / "run_id.txt" if resume else None,
    ) as tracker:
        result = train_pair(
            params, pair, Path(data_root), out_dir, tracker, resume, checkpoint_dir=ckpt_dir, seed=seed
        )
        for name in ("generator.pt", "generator_reverse.pt"):
            if (out_dir / name).is_file():
                tracker.log_artifact(out_dir / name, "model")
    atomic_write_text(out_dir / "run_id.txt", tracker.run_id + "\n")
    return {**result, "mlflow_run_id": tracker.run_id, "mlflow_parent_run_id": parent}


def run_concurrency(n_runs: int, cpus: int, setting: int = 0) -> tuple[int, int]:
    """(processes at once, torch threads each) for `n_runs` trainings on `cpus` CPU cores.

    Small GAN steps use a core far better in a process of their own than as a share of one
    process's threads (Python's interpreter lock and the per-operator split cost the rest): on
    2 cores, two single-threaded trainings at once make ~1.5x the images/s of one training with
    both threads, three at once a little more (docs/benchmarks.md). So by default (`setting` 0) every run starts
    at once, up to two per core, each with cpus // processes threads (at least one); `setting`
    caps the processes (1: one after the other, each with every core).
    """
    cap = setting or 2 * cpus
    processes = max(1, min(n_runs, cap))
    return processes, max(1, cpus // processes)


def _train_worker(
    params: Params,
    pair: Pair,
    seed: int,
    data_root: Path,
    runs_root: Path,
    resume: bool,
    track: bool,
    parent_run_id: str | None,
    threads: int,
    log_level: int = logging.INFO,
) -> dict[str, Any]:
    """One run of `train_all_stage` in a process of its own (spawned: nothing of the parent's
    torch state is inherited), with `threads` torch threads, nested under the parent's MLflow run,
    logging as the CLI does (culturegan's messages at `log_level`, other libraries' warnings)."""
    import torch

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("culturegan").setLevel(log_level)
    torch.set_num_threads(threads)
    if parent_run_id is not None:
        from culturegan.tracking.parent_run import use_parent_run

        use_parent_run(parent_run_id)
    return train_stage(params, pair, seed, data_root, runs_root, resume=resume, track=track)


def train_all_stage(
    params: Params,
    data_root: Path,
    runs_root: Path = RUNS_ROOT,
    resume: bool = True,
    track: bool = True,
) -> dict[str, Any]:
    """Train every (pair, seed) of train.pairs x train.seeds into `runs_root/<pair>/seed<seed>`
    (`train_stage` for each), the `dvc repro` train stage.

    On a CPU the runs train at once, each in its own process with its share of the cores
    (`run_concurrency`, capped by train.concurrent_runs); on a GPU, under torchrun, or with one
    process, one after the other in this process. Every run nests under the pipeline's one
    MLflow parent run, resolved here before any run starts. A run that fails does not stop the
    others: they finish and keep their final checkpoints, so that after the cause is fixed a
    rerun only rewrites their outputs; the error then names every failed run.
    Returns {"<pair>/seed<k>": train_stage result}, in train.pairs x train.seeds order.
    """
    import os
    import time
    from functools import partial

    from culturegan.cpus import usable_cpus
    from culturegan.errors import CultureganError
    from culturegan.training.dataset import check_pair_styles
    from culturegan.training.runtime import resolve_device

    runs = [(pair, check_seed(seed)) for pair in params.train.pairs for seed in params.train.seeds]
    for pair in params.train.pairs:
        check_pair_styles(Path(data_root), pair)  # every pair before any training starts
    key = {run: f"{run[0]}/seed{run[1]}" for run in runs}
    # Under torchrun every rank runs this: the runs go in turn, each data-parallel over the ranks.
    in_turn = resolve_device(params.train.device).type != "cpu" or "WORLD_SIZE" in os.environ
    processes, threads = run_concurrency(len(runs), usable_cpus(), params.train.concurrent_runs)
    parent = None
    if track:
        from culturegan.tracking.parent_run import start_or_resume_parent

        parent = start_or_resume_parent(params.tracking, params)
    results: dict[str, Any] = {}
    failed: dict[str, BaseException] = {}
    t0 = time.perf_counter()

    def done(name: str, get: Callable[[], dict[str, Any]]) -> None:
        try:
            results[name] = get()
        except Exception as exc:  # noqa: BLE001 - reported after the other runs finish
            failed[name] = exc
            log.error("training %s failed: %s", name, exc)
        else:
            log.info("trained %s (%.0f s into the stage)", name, time.perf_counter() - t0)

    if in_turn or processes == 1:
        for pair, seed in runs:
            run = partial(train_stage, params, pair, seed, data_root, runs_root, resume, track)
            done(key[pair, seed], run)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        log.info("training %d runs, %d at once, %d thread(s) each", len(runs), processes, threads)
        pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))
        with pool:
            futures = {
                pool.submit(
                    _train_worker,
                    *(params, pair, seed, Path(data_root), Path(runs_root)),
                    *(resume, track, parent, threads, logging.getLogger("culturegan").getEffectiveLevel()),
                ): key[pair, seed]
                for pair, seed in runs
            }
            for future in as_completed(futures):
                done(futures[future], future.result)
    if failed:
        first = next(iter(failed.values()))
        if len(runs) == 1:
            raise first
        names = "; ".join(f"{name}: {type(exc).__name__}: {exc}" for name, exc in failed.items())
        raise CultureganError(
            f"training failed for {len(failed)} of {len(runs)} runs ({names})",
            hint="the other runs finished and keep their final checkpoints; fix the cause and "
            "rerun: finished runs then only rewrite their outputs",
        ) from first
    return {key[run]: results[key[run]] for run in runs}


def directions(params: Params, pair: Pair, model_dir: Path) -> dict[Pair, str]:
    """The directed pairs a trained model serves, each with its generator file in `model_dir`."""
    found = {pair: "generator.pt"}
    if params.train.objective == "cyclegan" and (Path(model_dir) / "generator_reverse.pt").is_file():
        found[pair.reversed()] = "generator_reverse.pt"
    return found


def evaluate_stage(
    params: Params,
    pair: Pair,
    seed: int,
    data_root: Path,
    runs_root: Path = RUNS_ROOT,
    classifier_dir: Path = CLASSIFIER_DIR,
    eval_root: Path = EVAL_ROOT,
) -> dict[str, Any]:
    """Score the GAN of `pair` trained with seed `seed` and the baselines; CycleGAN's reverse
    direction too.

    Writes `eval_root/<pair>/seed<seed>/<direction>/metrics.json` + `grid.png` for the direction
    `pair` and, for a CycleGAN model (whose second generator models the reversed direction), for
    `<target>-<source>` as well: one folder per (pair, seed), as dvc.yaml declares it. The
    metrics record the training `seed`, which the analysis groups by; the sampling (KID subsets,
    baselines, controls) uses the global params.seed, the same for every training seed.
    """
    from culturegan.evaluation.classifier import CLASSIFIER_FILE
    from culturegan.evaluation.evaluate import evaluate_pair

    seed = check_seed(seed)
    model_dir = seed_dir(runs_root, pair, seed)
    out_root = seed_dir(eval_root, pair, seed)
    classifier = Path(classifier_dir) / CLASSIFIER_FILE
    result = {}
    for direction, generator in directions(params, pair, model_dir).items():
        name = str(direction)
        result[name] = evaluate_pair(
            params, direction, Path(data_root), model_dir, classifier, out_root / name, generator_file=generator
        )
        _record_training_seed(Path(result[name]["metrics"]), seed, params.seed)
    return result


def _record_training_seed(metrics_file: Path, seed: int, global_seed: int) -> None:
    # evaluate_pair records the seed it sampled with (params.seed) as `seed`; the record's `seed`
    # names the training run instead (the analysis groups by it), and `eval_seed` keeps the other.
    import json

    from culturegan.fileio import atomic_write_text

    record = json.loads(metrics_file.read_text(encoding="utf-8"))
    record["seed"], record["eval_seed"] = seed, global_seed
    atomic_write_text(metrics_file, json.dumps(record, indent=2) + "\n")


def register_stage(
    params: Params,
    pair: Pair,
    seed: int,
    runs_root: Path = RUNS_ROOT,
    eval_root: Path = EVAL_ROOT,
    data_root: Path | None = None,
) -> dict[str, Any]:
    """Register every direction the model of (`pair`, `seed`) was evaluated in; promote by the gate.

    The model is logged into its training run when that run's id is known.
    """
    from culturegan.registry.mlflow_models import register_pair

    seed = check_seed(seed)
    model_dir = seed_dir(runs_root, pair, seed)
    metrics_root = seed_dir(eval_root, pair, seed)
    run_id_file = model_dir / "run_id.txt"
    run_id = run_id_file.read_text().strip() if run_id_file.is_file() else None
    return {
        str(d): register_pair(
            params, d, model_dir, metrics_root / str(d) / "metrics.json", run_id, data_root=data_root
        )
        for d in directions(params, pair, model_dir)
    }


def train_summary(result: dict[str, Any]) -> dict[str, Any]:
    """The numbers of a train_stage result for `culturegan train --summary` (a DVC metrics file):
    the run's train_metrics.json (final losses, images/s, steps). DVC cannot declare that file
    where it lies, inside the stage's output folder; dvc.yaml declares this copy instead."""
    import json

    return json.loads(Path(result["metrics"]).read_text(encoding="utf-8"))


def train_all_summary(results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """train_summary of every run of a train_all_stage result, by "<pair>/seed<k>" (one DVC
    metrics file for the train stage)."""
    return {name: train_summary(result) for name, result in results.items()}


def evaluation_summary(result: dict[str, Any]) -> dict[str, Any]:
    """The metrics.json of every direction an evaluate_stage result scored, by direction, for
    `culturegan evaluate --summary` (a DVC metrics file; see train_summary for why a copy)."""
    import json

    return {d: json.loads(Path(r["metrics"]).read_text(encoding="utf-8")) for d, r in result.items()}


def analyze_stage(
    params: Params,
    runs_root: Path = RUNS_ROOT,
    classifier_dir: Path = CLASSIFIER_DIR,
    culture_dir: Path = CULTURE_DIR,
    eval_root: Path = EVAL_ROOT,
    out_dir: Path = REPORT_DIR,
    track: bool = True,
) -> dict[str, Any]:
    """Quality vs cultural distance over every evaluated pair; the HTML report, logged to MLflow.

    With `track`, the report goes to the pipeline's parent MLflow run (the open parent of this
    workspace, see `tracking.start_or_resume_parent`), which is then ended: the next execution of
    the pipeline starts a new parent.
    """
    from culturegan.evaluation.analysis import write_analysis
    from culturegan.evaluation.classifier import CLASSIFIER_REPORT
    from culturegan.evaluation.culture import CULTURE_JSON

    result = write_analysis(
        params,
        Path(eval_root),
        Path(culture_dir) / CULTURE_JSON,
        Path(classifier_dir) / CLASSIFIER_REPORT,
        Path(runs_root),
        Path(out_dir),
    )
    if track:
        from culturegan.evaluation.report import log_report_to_mlflow
        from culturegan.tracking.parent_run import finish_run, start_or_resume_parent

        parent = start_or_resume_parent(params.tracking, params)
        log_report_to_mlflow(Path(out_dir), params.tracking, parent)
        finish_run(params.tracking, parent)
        result["mlflow_parent_run_id"] = parent
    return result
