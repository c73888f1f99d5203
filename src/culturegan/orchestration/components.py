"""KFP components: one lightweight Python component per stage, each a thin call of its stage function.

KFP copies each body into the compiled pipeline and runs it in the project image (with
`kfp.local`, in this virtualenv), so the bodies import what they use. A body only validates the
params, maps artifact paths to the stage's roots, calls the stage and records the result;
stage logic stays in the package. `params` is the JSON text of the whole params mapping
(see pipeline.py for why it is not a `dict` parameter). Artifact folders mirror the DVC layout: `data` is `data/`,
a train `model` holds `<pair>/seed<seed>/` as `runs/` does, an `evaluation` holds
`<pair>/seed<seed>/<direction>/` as `reports/eval/` does.
"""

# No `from __future__ import annotations`: kfp reads the signatures' annotations as objects.
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from culturegan.config import PipelineConfig

# Every task gets params.pipeline.image with set_container_image when the pipeline is compiled;
# this default only names the image for a component used on its own.
IMAGE = PipelineConfig.model_fields["image"].default
# The components in pipeline order; `culturegan pipeline compile` writes components/<step>.yaml for each.
STEPS = (
    "start_run", "close_run", "prepare", "validate", "gate_failed", "classifier", "culture",
    "train", "evaluate", "register", "analyze",
)


def component(func):
    # The image has culturegan and kfp installed: no pip install at start-up (no network needed).
    return dsl.component(func, base_image=IMAGE, install_kfp_package=False)


@component
def start_run(params: str, pipeline_job: str, pipeline_run_id: str) -> str:
    """Open the MLflow parent run that every step's runs nest under; returns its id."""
    from culturegan.orchestration import kfp_io

    return kfp_io.open_parent(kfp_io.parse(params), pipeline_job, pipeline_run_id)


@component
def close_run(params: str, pipeline_run_id: str, status: dsl.PipelineTaskFinalStatus) -> str:
    """Exit handler: the parent run of a failed or cancelled pipeline is marked so, not left running."""
    from culturegan.orchestration import kfp_io

    return kfp_io.close_parent(kfp_io.parse(params), pipeline_run_id, status.state)


@component
def prepare(params: str, data: Output[Dataset], metrics: Output[Metrics]):
    """Render the embedded benchmark or ingest real data (data.source) into the `data` folder."""
    from pathlib import Path

    from culturegan.data.prepare import prepare as prepare_stage
    from culturegan.orchestration import kfp_io

    result = prepare_stage(kfp_io.parse(params), Path(data.path))
    kfp_io.record(result, metrics, data)


@component
def validate(
    params: str,
    data: Input[Dataset],
    data_docs: Output[Artifact],
    summary: Output[Markdown],
    result: Output[Artifact],
    metrics: Output[Metrics],
) -> NamedTuple("Outputs", [("passed", bool), ("message", str)]):
    """The Great Expectations gate; Data Docs and the result are written whether it passes or not."""
    from collections import namedtuple
    from pathlib import Path

    from culturegan.orchestration import kfp_io
    from culturegan.validation.gate import validate_data

    report = validate_data(
        kfp_io.parse(params), Path(data.path), docs_dir=Path(data_docs.path), result_path=Path(result.path)
    ).to_dict()
    Path(summary.path).write_text(kfp_io.validation_markdown(report), encoding="utf-8")
    kfp_io.record(report, metrics, result, data_docs)
    metrics.log_metric("passed", float(report["success"]))
    return namedtuple("Outputs", ["passed", "message"])(report["success"], report["summary"])


@component
def gate_failed(message: str):
    """Fail the pipeline run with the gate's summary (nothing is trained on data that failed it)."""
    from culturegan.errors import ValidationFailed

    raise ValidationFailed(
        f"data validation failed:\n{message}", hint="see the data_docs artifact of the validate step"
    )


@component
def classifier(params: str, data: Input[Dataset], model: Output[Model], metrics: Output[Metrics]):
    """Train the style classifier whose features are the pipeline's own FID/KID space."""
    from pathlib import Path

    from culturegan.orchestration import kfp_io
    from culturegan.stages import classifier_stage

    result = classifier_stage(kfp_io.parse(params), Path(data.path), out_dir=Path(model.path))
    kfp_io.record(result, metrics, model, framework="pytorch")


@component
def culture(
    params: str, data: Input[Dataset], style_classifier: Input[Model], distances: Output[Artifact]
):
    """The cultural distance matrix from real held-out images, fixed before any GAN is trained."""
    from pathlib import Path

    from culturegan.orchestration import kfp_io
    from culturegan.stages import culture_stage

    result = culture_stage(
        kfp_io.parse(params), Path(data.path), Path(style_classifier.path), out_dir=Path(distances.path)
    )
    kfp_io.record(result, None, distances)


@component
def train(
    params: str,
    pair: str,
    seed: int,
    parent_run_id: str,
    data: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
):
    """Train the GAN of one culture pair and seed into `model/<pair>/seed<seed>/`, tracked as a
    nested MLflow run."""
    from pathlib import Path

    from culturegan.orchestration import kfp_io
    from culturegan.stages import train_stage

    kfp_io.use_parent_run(parent_run_id)
    result = train_stage(
        kfp_io.parse(params),
        kfp_io.run_pair(pair),
        kfp_io.run_seed(seed),
        Path(data.path),
        runs_root=Path(model.path),
    )
    kfp_io.record(result, metrics, model, framework="pytorch")


@component
def evaluate(
    params: str,
    pair: str,
    seed: int,
    data: Input[Dataset],
    model: Input[Model],
    style_classifier: Input[Model],
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
):
    """Score the GAN of one pair and seed (both directions for CycleGAN) and the baselines on the test split."""
    from pathlib import Path

    from culturegan.orchestration import kfp_io
    from culturegan.stages import evaluate_stage

    result = evaluate_stage(
        kfp_io.parse(params),
        kfp_io.run_pair(pair),
        kfp_io.run_seed(seed),
        Path(data.path),
        runs_root=Path(model.path),
        classifier_dir=Path(style_classifier.path),
        eval_root=Path(evaluation.path),
    )
    for name, value in kfp_io.evaluation_numbers(result).items():
        metrics.log_metric(name, value)
    evaluation.metadata.update({"pair": pair, "seed": kfp_io.run_seed(seed), "directions": sorted(result)})


@component
def register(
    params: str,
    pair: str,
    seed: int,
    parent_run_id: str,
    data: Input[Dataset],
    model: Input[Model],
    evaluation: Input[Artifact],
    decisions: Output[Artifact],
):
    """Register the model(s) of one pair and seed in MLflow; alias `champion` only if the gate says so."""
    from pathlib import Path

    from culturegan.orchestration import kfp_io
    from culturegan.stages import register_stage

    kfp_io.use_parent_run(parent_run_id)
    result = register_stage(
        kfp_io.parse(params),
        kfp_io.run_pair(pair),
        kfp_io.run_seed(seed),
        runs_root=Path(model.path),
        eval_root=Path(evaluation.path),
        data_root=Path(data.path),
    )
    kfp_io.write_json(decisions.path, result)
    for direction, decision in result.items():
        decisions.metadata[direction] = kfp_io.facts(decision)


@component
def analyze(
    params: str,
    parent_run_id: str,
    style_classifier: Input[Model],
    distances: Input[Artifact],
    models: Input[list[Model]],
    evaluations: Input[list[Artifact]],
    report: Output[HTML],
    report_files: Output[Artifact],
    metrics: Output[Metrics],
):
    """Quality vs cultural distance over every pair: the report; ends the MLflow parent run."""
    import tempfile
    from pathlib import Path

    from culturegan.orchestration import kfp_io
    from culturegan.stages import analyze_stage

    kfp_io.use_parent_run(parent_run_id)
    with tempfile.TemporaryDirectory() as tmp:
        result = analyze_stage(
            kfp_io.parse(params),
            runs_root=kfp_io.gather([m.path for m in models], Path(tmp) / "runs"),
            classifier_dir=Path(style_classifier.path),
            culture_dir=Path(distances.path),
            eval_root=kfp_io.gather([e.path for e in evaluations], Path(tmp) / "eval"),
            out_dir=Path(report_files.path),
        )
    Path(report.path).write_text(kfp_io.inline_html(Path(result["report"])), encoding="utf-8")
    kfp_io.record(result, metrics, report, report_files)
