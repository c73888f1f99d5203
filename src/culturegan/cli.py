"""The `culturegan` command: one subcommand per pipeline stage, plus benchmarks.

Every subcommand loads and validates params.yaml first, then calls the stage function that the
DVC stages, the KFP components and the tests call too.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from culturegan.config import Pair
from culturegan.errors import CultureganError, ValidationFailed

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
bench_app = typer.Typer(no_args_is_help=True, help="Speed measurements (separate from tests).")
app.add_typer(bench_app, name="bench")
pipeline_app = typer.Typer(
    no_args_is_help=True, help="Kubeflow pipeline: compile, run here (kfp.local), submit to a cluster."
)
app.add_typer(pipeline_app, name="pipeline")

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="params.yaml to read")]
log = logging.getLogger("culturegan")


def _emit(result: dict[str, Any], out: Path | None = None) -> None:
    """Print a stage's result dict as JSON, and write it atomically to `out` if given."""
    text = json.dumps(result, indent=2, sort_keys=True, default=str)
    if out is not None:
        from culturegan.fileio import atomic_write_text

        atomic_write_text(out, text + "\n")
    typer.echo(text)


SummaryOpt = Annotated[Path | None, typer.Option(help="also write the stage's metrics JSON here (for DVC)")]


def _write_summary(out: Path | None, data: dict[str, Any]) -> None:
    if out is not None:
        from culturegan.fileio import atomic_write_text

        atomic_write_text(out, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


@app.callback()
def main(
    log_level: Annotated[str, typer.Option(help="logging level: DEBUG, INFO, WARNING")] = "INFO",
) -> None:
    # Third-party libraries (GX, MLflow, DVC) log chatty INFO lines; show only their warnings.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("culturegan").setLevel(log_level.upper())


@app.command()
def prepare(
    params: ParamsOpt = Path("params.yaml"),
    summary: Annotated[Path | None, typer.Option(help="also write the summary JSON here")] = None,
) -> None:
    """Render the embedded benchmark or ingest real data (data.source in params.yaml)."""
    from culturegan.data.prepare import prepare as prepare_stage

    p = _load(params)
    _emit(prepare_stage(p), summary)


@app.command()
def validate(
    params: ParamsOpt = Path("params.yaml"),
    result: Annotated[Path | None, typer.Option(help="write the validation result JSON here")] = None,
) -> None:
    """Run the Great Expectations gate on the manifest; exit 1 if it fails. Data Docs either way."""
    from culturegan.validation.gate import validate_data

    p = _load(params)
    report = validate_data(p, p.data.root, result_path=result)
    typer.echo(report.summary)
    typer.echo(f"Data Docs: {report.docs_index}")
    if not report.success:
        raise ValidationFailed("data validation failed", hint=f"see {report.docs_index}")


# A pair is parsed here, at the edge (a bad one is a ConfigError: one line and a hint, exit 2).
PAIR_METAVAR = "SOURCE-TARGET"
PairOpt = Annotated[
    Pair,
    typer.Option(
        "--pair",
        parser=Pair.parse,
        metavar=PAIR_METAVAR,
        help="culture pair '<source>-<target>', e.g. photo-inkwash",
    ),
]
NoTrackOpt = Annotated[bool, typer.Option("--no-track", help="do not log to MLflow")]
SeedOpt = Annotated[
    int | None, typer.Option("--seed", min=0, help="training seed of the run (default: the first of train.seeds)")
]


def _load(params: Path):
    from culturegan.config import load_params

    return load_params(params)


def _seed(p, seed: int | None) -> int:
    return p.train.seeds[0] if seed is None else seed


@app.command()
def classifier(params: ParamsOpt = Path("params.yaml")) -> None:
    """Train the style classifier: the pipeline's own feature space for FID/KID and deception rate."""
    from culturegan.stages import classifier_stage

    p = _load(params)
    _emit(classifier_stage(p, p.data.root))


@app.command()
def culture(params: ParamsOpt = Path("params.yaml")) -> None:
    """Cultural distance matrix between the styles, from real held-out images (before any training)."""
    from culturegan.stages import culture_stage

    p = _load(params)
    _emit(culture_stage(p, p.data.root))


@app.command()
def train(
    pair: PairOpt,
    params: ParamsOpt = Path("params.yaml"),
    seed: SeedOpt = None,
    resume: Annotated[bool, typer.Option(help="continue from the pair's last compatible checkpoint")] = True,
    no_track: NoTrackOpt = False,
    summary: SummaryOpt = None,
) -> None:
    """Train the GAN of one culture pair with one seed (runs under torchrun for multi-process DDP too)."""
    from culturegan.stages import train_stage, train_summary

    p = _load(params)
    result = train_stage(p, pair, _seed(p, seed), p.data.root, resume=resume, track=not no_track)
    _emit(result)
    _write_summary(summary, train_summary(result))


@app.command("train-all")
def train_all(
    params: ParamsOpt = Path("params.yaml"),
    resume: Annotated[bool, typer.Option(help="continue each run from its last compatible checkpoint")] = True,
    no_track: NoTrackOpt = False,
    summary: SummaryOpt = None,
) -> None:
    """Train every pair of train.pairs with every seed of train.seeds: at once on a CPU, one
    process each (train.concurrent_runs); the `dvc repro` train stage."""
    from culturegan.stages import train_all_stage, train_all_summary

    p = _load(params)
    result = train_all_stage(p, p.data.root, resume=resume, track=not no_track)
    _emit(result)
    _write_summary(summary, train_all_summary(result))


@app.command()
def evaluate(
    pair: PairOpt, params: ParamsOpt = Path("params.yaml"), seed: SeedOpt = None, summary: SummaryOpt = None
) -> None:
    """Metrics of the pair's GAN (one training seed) and of every baseline on the held-out test split."""
    from culturegan.stages import evaluate_stage, evaluation_summary

    p = _load(params)
    result = evaluate_stage(p, pair, _seed(p, seed), p.data.root)
    _emit(result)
    _write_summary(summary, evaluation_summary(result))


@app.command()
def analyze(
    params: ParamsOpt = Path("params.yaml"), no_track: NoTrackOpt = False, summary: SummaryOpt = None
) -> None:
    """Transfer quality vs cultural distance over all pairs; writes report/index.html."""
    from culturegan.stages import analyze_stage

    p = _load(params)
    _emit(analyze_stage(p, track=not no_track), summary)


@app.command()
def register(
    pair: PairOpt,
    params: ParamsOpt = Path("params.yaml"),
    seed: SeedOpt = None,
    summary: Annotated[Path | None, typer.Option(help="also write the decisions JSON here")] = None,
) -> None:
    """Register the model(s) of one pair and seed in MLflow; alias `champion` only if it beats the current one."""
    from culturegan.stages import register_stage

    p = _load(params)
    _emit(register_stage(p, pair, _seed(p, seed)), summary)


@app.command()
def stylize(
    inputs: Annotated[Path, typer.Argument(help="an image or a folder of images")],
    out: Annotated[Path, typer.Argument(help="folder for the stylised PNGs")],
    model: Annotated[str, typer.Option("--model", help="e.g. models:/culturegan-photo-to-inkwash@champion")],
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Stylise images with a registered model (local sqlite store or a tracking server)."""
    from culturegan.registry.inference import stylize as run_stylize

    _emit(run_stylize(model, inputs, out, _load(params).tracking))


@app.command()
def serve(
    model: Annotated[str, typer.Option("--model", "-m", help="e.g. models:/culturegan-photo-to-inkwash@champion")],
    params: ParamsOpt = Path("params.yaml"),
    host: Annotated[str, typer.Option("--host", "-h", help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="port to listen on")] = 5001,
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, help="worker processes")] = 1,
) -> None:
    """Serve a registered model over HTTP (MLflow's scoring protocol) with a request size limit."""
    from culturegan.model_server import serve as run_server
    from culturegan.tracking.store import resolve_tracking_uri

    run_server(model, resolve_tracking_uri(_load(params).tracking), host, port, workers)


@app.command()
def promote(
    name: Annotated[str, typer.Argument(help="registered model name")],
    version: Annotated[str, typer.Argument(help="model version to make champion")],
    reason: Annotated[str, typer.Option(help="why the gate is overruled (recorded as a tag)")],
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Make a version the champion by hand, e.g. after the evaluation set changed."""
    from culturegan.registry.mlflow_models import promote as run_promote

    _emit(run_promote(_load(params).tracking, name, version, reason))


@bench_app.command("train")
def bench_train_cmd(
    params: ParamsOpt = Path("params.yaml"),
    pair: Annotated[
        Pair | None,
        typer.Option(parser=Pair.parse, metavar=PAIR_METAVAR, help="pair (default: the first of train.pairs)"),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="prepared data root: time steps on the pair's images through the training loader (default: random tensors)"),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    precision: Annotated[str | None, typer.Option(help="fp32, bf16, bf16-full, fp16 (default: train.precision)")] = None,
    channels_last: Annotated[bool | None, typer.Option(help="NHWC memory format")] = None,
    compile: Annotated[bool | None, typer.Option(help="torch.compile")] = None,
    batch_size: Annotated[int | None, typer.Option(help="batch size (default: train.batch_size)")] = None,
    steps: Annotated[int | None, typer.Option(help="timed steps per round")] = None,
    baseline: Annotated[bool, typer.Option(help="plain PyTorch: fp32, eager, no channels_last")] = False,
    side_by_side: Annotated[
        bool | None,
        typer.Option(help="CycleGAN's two directions in two threads (default: as training decides: on a multi-threaded CPU)"),
    ] = None,
) -> None:
    """Training throughput (images/s) and peak memory for a config; JSON."""
    from culturegan.hostspeed import host_speed
    from culturegan.hoststeal import StealMeter
    from culturegan.training.bench import bench_train

    with StealMeter() as steal:
        result = bench_train(
            _load(params), pair=pair, device=device, precision=precision, channels_last=channels_last,
            compile=compile, batch_size=batch_size, steps=steps, baseline=baseline, data_root=data,
            side_by_side=side_by_side,
        )
    # the host's share of CPU time over the whole command (warm-up included): figures taken at a
    # high share are not comparable with others (docs/benchmarks.md); and its speed at fixed
    # one-thread work right after, to set figures from different sessions side by side
    _emit({**result, "steal_share": steal.share, "host_speed": host_speed()})


@bench_app.command("gpu-check")
def bench_gpu_check_cmd(
    device: Annotated[str, typer.Option(help="cuda (the check) or cpu (a dry run)")] = "cuda",
    quick: Annotated[bool, typer.Option(help="tiny sizes, 1-2 steps: every part, in seconds")] = False,
    out: Annotated[Path | None, typer.Option(help="result folder (default: $OUT, else ./gpu_check)")] = None,
    budget_s: Annotated[float, typer.Option(help="seconds for the whole check")] = 360.0,
    compile: Annotated[bool, typer.Option(help="include the torch.compile rows")] = True,
    batches: Annotated[str, typer.Option(help="comma-separated batch sizes instead of the mode's")] = "",
    parts: Annotated[str, typer.Option(help="comma-separated parts: matrix,train_eval,compile")] = (
        "matrix,train_eval,compile"),
) -> None:
    """Issue 13's GPU check: plain vs tuned steps at 256 px (batch 1/4/8, fp16/bf16, compile),
    peak memory, a short training + evaluation; gpu_check.json + gpu_check.md (scripts/gpu_check.sh)."""
    from culturegan.gpucheck import parse_selection, run_gpu_check

    try:
        sizes, chosen = parse_selection(batches, parts)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    _emit(run_gpu_check(out, device, quick, budget_s, compile, sizes, chosen))


@bench_app.command("quality")
def bench_quality_cmd(
    params: ParamsOpt = Path("params.yaml"),
    pair: Annotated[
        Pair, typer.Option(parser=Pair.parse, metavar=PAIR_METAVAR, help="pair to train, '<source>-<target>'")
    ] = "photo-ukiyoe",
    steps: Annotated[str, typer.Option(help="comma-separated step budgets, one full run each")] = "240",
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="params override key=value (repeatable)")
    ] = None,
    label: Annotated[str, typer.Option(help="name of this variant in the output")] = "default",
    work_dir: Annotated[Path, typer.Option(help="where runs and their evaluations go")] = Path(".staging/quality"),
    out: Annotated[Path | None, typer.Option(help="append the rows as JSON lines to this file")] = None,
) -> None:
    """Transfer quality against training steps for one pair (needs prepared data and the classifier)."""
    import json

    from culturegan.evaluation.classifier import CLASSIFIER_FILE
    from culturegan.quality import override, quality_curve
    from culturegan.stages import CLASSIFIER_DIR

    p = override(_load(params), set_ or [])
    budgets = [int(s) for s in steps.split(",") if s.strip()]
    rows = quality_curve(
        p, pair, budgets, Path(p.data.root), CLASSIFIER_DIR / CLASSIFIER_FILE, work_dir, label
    )
    if out is not None:
        with out.open("a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    _emit(rows)


@bench_app.command("ingest")
def bench_ingest_cmd(
    n: Annotated[int, typer.Option(help="number of generated JPEG sources")] = 600,
    size: Annotated[int, typer.Option(help="source side in pixels")] = 256,
    workers: Annotated[int, typer.Option(help="ingest processes; 0 = one per core")] = 0,
) -> None:
    """Ingest throughput (images/s) on generated JPEG files in a temporary folder."""
    from culturegan.bench import bench_ingest

    _emit(bench_ingest(n=n, size=size, workers=workers))


@pipeline_app.command("compile")
def pipeline_compile(
    params: ParamsOpt = Path("params.yaml"),
    out: Annotated[Path, typer.Option(help="the KFP package (IR YAML) to write")] = Path(
        "pipelines/culturegan_pipeline.yaml"
    ),
    components_dir: Annotated[
        Path, typer.Option(help="folder for each component's reusable spec (<step>.yaml)")
    ] = Path("components"),
) -> None:
    """Compile the pipeline and its components; params.yaml becomes the default of the `params` parameter."""
    from culturegan.orchestration.commands import compile_pipeline

    _emit(compile_pipeline(_load(params), out, components_dir))


@pipeline_app.command("run-local")
def pipeline_run_local(
    params: ParamsOpt = Path("params.yaml"),
    workdir: Annotated[
        Path | None, typer.Option(help="outputs, cache and MLflow store (default: a new temporary folder)")
    ] = None,
    tracking_uri: Annotated[
        str | None, typer.Option(help="MLflow store (default: sqlite in the work dir, apart from ./mlflow.db)")
    ] = None,
) -> None:
    """Run the whole pipeline on this machine with kfp.local, each step a subprocess in this venv."""
    from culturegan.orchestration.commands import run_local

    _emit(run_local(_load(params), workdir, tracking_uri))


@pipeline_app.command("submit")
def pipeline_submit(
    host: Annotated[str, typer.Option(help="KFP API/UI URL, e.g. http://localhost:8080")],
    params: ParamsOpt = Path("params.yaml"),
    package: Annotated[
        Path | None, typer.Option(help="a compiled package to upload (default: compile params.yaml first)")
    ] = None,
    experiment: Annotated[str | None, typer.Option(help="KFP experiment (default: tracking.experiment)")] = None,
    pipeline_name: Annotated[str | None, typer.Option(help="KFP pipeline (default: pipeline.name)")] = None,
    version: Annotated[str | None, typer.Option(help="name of the new pipeline version")] = None,
    run_name: Annotated[str | None, typer.Option(help="name of the run (default: the version)")] = None,
    namespace: Annotated[str | None, typer.Option(help="your profile namespace (multi-user Kubeflow)")] = None,
) -> None:
    """Upload the pipeline (new pipeline or new version), then start a run; prints its URL."""
    from culturegan.orchestration.commands import submit

    _emit(
        submit(
            _load(params), host, package=package, experiment=experiment, pipeline_name=pipeline_name,
            version=version, run_name=run_name, namespace=namespace,
        )
    )


def _usage_error(err: Exception) -> None:
    """One line, the usage and where to find help, exit 2: like params errors, not a traceback."""
    ctx = getattr(err, "ctx", None)
    message = err.format_message() if hasattr(err, "format_message") else str(err)
    if type(err).__name__ == "NoArgsIsHelpError":  # `culturegan` alone: the help (rich prints
        if message.strip():  # it to stdout itself, plain click returns it as the message)
            typer.echo(message, err=True)
    else:
        typer.echo(f"error: {message}", err=True)
        if ctx is not None:
            typer.echo(ctx.get_usage(), err=True)
            typer.echo(f"hint: {ctx.command_path} --help lists every option", err=True)
    sys.exit(getattr(err, "exit_code", 2))


def run() -> None:
    """Console entry point: user errors are one clear line plus a hint, not a traceback."""
    try:
        app(standalone_mode=False, prog_name="culturegan")
    except CultureganError as err:
        typer.echo(f"error: {err.message}", err=True)
        if err.hint:
            typer.echo(f"hint: {err.hint}", err=True)
        sys.exit(1 if isinstance(err, ValidationFailed) else 2)
    except typer.TyperException as err:  # a usage error (typer's click): missing/bad option
        _usage_error(err)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        sys.exit(130)
