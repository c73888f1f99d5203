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

from culturegan.errors import CultureganError, ValidationFailed

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
bench_app = typer.Typer(no_args_is_help=True, help="Speed measurements (separate from tests).")
app.add_typer(bench_app, name="bench")

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="params.yaml to read")]
log = logging.getLogger("culturegan")


def _emit(result: dict[str, Any], out: Path | None = None) -> None:
    """Print a stage's result dict as JSON, and write it atomically to `out` if given."""
    text = json.dumps(result, indent=2, sort_keys=True, default=str)
    if out is not None:
        from culturegan.fileio import atomic_write_text

        atomic_write_text(out, text + "\n")
    typer.echo(text)


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
    from culturegan.config import load_params
    from culturegan.data.prepare import prepare as prepare_stage

    p = load_params(params)
    _emit(prepare_stage(p), summary)


@app.command()
def validate(
    params: ParamsOpt = Path("params.yaml"),
    result: Annotated[Path | None, typer.Option(help="write the validation result JSON here")] = None,
) -> None:
    """Run the Great Expectations gate on the manifest; exit 1 if it fails. Data Docs either way."""
    from culturegan.config import load_params
    from culturegan.validation import validate_data

    p = load_params(params)
    report = validate_data(p, p.data.root, result_path=result)
    typer.echo(report.summary)
    typer.echo(f"Data Docs: {report.docs_index}")
    if not report.success:
        raise ValidationFailed("data validation failed", hint=f"see {report.docs_index}")


@bench_app.command("ingest")
def bench_ingest_cmd(
    n: Annotated[int, typer.Option(help="number of generated JPEG sources")] = 600,
    size: Annotated[int, typer.Option(help="source side in pixels")] = 256,
    workers: Annotated[int, typer.Option(help="ingest processes; 0 = one per core")] = 0,
) -> None:
    """Ingest throughput (images/s) on generated JPEG files in a temporary folder."""
    from culturegan.bench import bench_ingest

    _emit(bench_ingest(n=n, size=size, workers=workers))


def run() -> None:
    """Console entry point: user errors are one clear line plus a hint, not a traceback."""
    try:
        app(standalone_mode=False)
    except CultureganError as err:
        typer.echo(f"error: {err.message}", err=True)
        if err.hint:
            typer.echo(f"hint: {err.hint}", err=True)
        sys.exit(1 if isinstance(err, ValidationFailed) else 2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        sys.exit(130)
