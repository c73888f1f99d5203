"""The culturegan Kubeflow pipeline: the stages of dvc.yaml as KFP tasks, built from params.yaml.

    exit handler (close-run) ─────────────────────────────────────────────────────────┐
      start-run (MLflow parent run)                                                   │
      prepare → validate → if passed: classifier → culture                            │
                                for each (pair, seed): train → evaluate → register    │
                                      analyze(Collected models, evaluations) → report │
                           else: gate-failed (the run fails with the gate's summary)  │
    ───────────────────────────────────────────────────────────────────────────────────┘

The pipeline only wires steps; resources, image, retries and caching come from
`params.pipeline` when it is compiled. The whole params mapping travels as the pipeline
parameter `params` (default: params.yaml at compile time), and every step validates it again;
the parameter `runs` lists the {"pair", "seed"} items the loop trains (default: every pair of
`train.pairs` with every seed of `train.seeds`).
It is JSON text rather than a `dict` parameter because KFP's compiler refuses null values in
a struct default, and null is meaningful in params.yaml (e.g. `tracking.artifact_location: null`).
"""

# No `from __future__ import annotations`: kfp reads the pipeline signature's annotations as objects.
from typing import TYPE_CHECKING

from kfp import dsl, kubernetes

from culturegan.config import Params, StepResources
from culturegan.orchestration import components as c
from culturegan.orchestration.kfp_io import params_text

if TYPE_CHECKING:
    from kfp.dsl.graph_component import GraphComponent

S3_SECRET = "culturegan-s3"
MLFLOW_SECRET = "culturegan-mlflow"
# secret -> (keys a step cannot start without, keys passed on when the secret has them).
# Created by infra/k8s/secrets in the namespace where KFP runs the steps (docs/cluster.md).
SECRET_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    S3_SECRET: (
        ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
        ("AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION"),  # absent for AWS S3 itself
    ),
    MLFLOW_SECRET: (
        ("MLFLOW_TRACKING_URI",),
        ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"),  # only for servers with auth
    ),
}
TRACKED = (MLFLOW_SECRET, S3_SECRET)  # steps that log to MLflow (artifacts may go to S3 directly)


def _use_secrets(task: dsl.PipelineTask, secrets: tuple[str, ...]) -> None:
    for name in secrets:
        required, optional = SECRET_KEYS[name]
        kubernetes.use_secret_as_env(task, secret_name=name, secret_key_to_env={k: k for k in required})
        # optional=True becomes `secretKeyRef.optional`: a missing key leaves the variable unset.
        kubernetes.use_secret_as_env(
            task, secret_name=name, secret_key_to_env={k: k for k in optional}, optional=True
        )


def default_run_items(settings: Params) -> list[dict]:
    """The loop's items: every pair of `train.pairs` with every seed of `train.seeds`, pair-major."""
    return [{"pair": str(pair), "seed": seed} for pair in settings.train.pairs for seed in settings.train.seeds]


def build_pipeline(settings: Params) -> "GraphComponent":
    """The pipeline for `settings` (parsed params.yaml): its defaults, image and resources."""
    cfg = settings.pipeline
    default_params = params_text(settings)
    default_runs: list[dict] = default_run_items(settings)

    def step(
        task: dsl.PipelineTask,
        display_name: str,
        *,
        cache: bool,
        resources: StepResources = cfg.steps,
        secrets: tuple[str, ...] = (),
    ) -> dsl.PipelineTask:
        (
            task.set_display_name(display_name)
            .set_container_image(cfg.image)
            .set_cpu_request(resources.cpu_request)
            .set_cpu_limit(resources.cpu_limit)
            .set_memory_request(resources.memory_request)
            .set_memory_limit(resources.memory_limit)
            .set_caching_options(cache)
        )
        _use_secrets(task, secrets)
        return task

    @dsl.pipeline(
        name=cfg.name,
        description="Style transfer between cultural art styles: data, validation gate, one GAN per "
        "culture pair, evaluation, registry, and quality vs cultural distance (culturegan).",
    )
    def culturegan_pipeline(params: str = default_params, runs: list = default_runs):
        # KFP's exit task may not depend on other tasks: it finds the parent run by the KFP run id.
        closer = step(
            c.close_run(params=params, pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER),
            "Close MLflow run", cache=False, secrets=TRACKED,
        )
        with dsl.ExitHandler(closer, name="pipeline"):
            run = step(
                c.start_run(
                    params=params,
                    pipeline_job=dsl.PIPELINE_JOB_NAME_PLACEHOLDER,
                    pipeline_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                ),
                "Start MLflow run", cache=False, secrets=TRACKED,
            )
            # S3: data.source may be s3://bucket/prefix.
            prepared = step(c.prepare(params=params), "Prepare data", cache=cfg.cache, secrets=(S3_SECRET,))
            data = prepared.outputs["data"]
            gate = step(c.validate(params=params, data=data), "Validate data", cache=cfg.cache)
            with dsl.If(gate.outputs["passed"] == True, name="data-passed"):
                clf = step(c.classifier(params=params, data=data), "Style classifier", cache=cfg.cache)
                style_classifier = clf.outputs["model"]
                distances = step(
                    c.culture(params=params, data=data, style_classifier=style_classifier),
                    "Cultural distances", cache=cfg.cache,
                ).outputs["distances"]
                with dsl.ParallelFor(runs, parallelism=cfg.parallelism, name="runs") as item:
                    trained = step(
                        c.train(params=params, pair=item.pair, seed=item.seed, parent_run_id=run.output, data=data),
                        "Train GAN", cache=False, resources=cfg.train, secrets=TRACKED,
                    )
                    trained.set_retry(
                        num_retries=cfg.retries,
                        backoff_duration=f"{cfg.retry_backoff_s}s",
                        backoff_factor=2.0,
                    )
                    if cfg.gpus > 0:
                        trained.set_accelerator_type(cfg.accelerator_type).set_accelerator_limit(cfg.gpus)
                        # GPU nodes are commonly tainted with the GPU resource name.
                        kubernetes.add_toleration(
                            trained, key=cfg.accelerator_type, operator="Exists", effect="NoSchedule"
                        )
                    scored = step(
                        c.evaluate(
                            params=params, pair=item.pair, seed=item.seed, data=data,
                            model=trained.outputs["model"], style_classifier=style_classifier,
                        ),
                        "Evaluate", cache=cfg.cache,
                    )
                    step(
                        c.register(
                            params=params, pair=item.pair, seed=item.seed, parent_run_id=run.output,
                            data=data, model=trained.outputs["model"], evaluation=scored.outputs["evaluation"],
                        ),
                        "Register model", cache=False, secrets=TRACKED,
                    )
                step(
                    c.analyze(
                        params=params,
                        parent_run_id=run.output,
                        style_classifier=style_classifier,
                        distances=distances,
                        models=dsl.Collected(trained.outputs["model"]),
                        evaluations=dsl.Collected(scored.outputs["evaluation"]),
                    ),
                    "Analyze and report", cache=False, secrets=TRACKED,
                )
            with dsl.Else(name="data-failed"):
                step(c.gate_failed(message=gate.outputs["message"]), "Validation failed", cache=False)

    return culturegan_pipeline
