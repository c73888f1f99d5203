"""The `tracking`, `registry` and `pipeline` sections: MLflow runs, the model registry's
promotion gate, and the Kubeflow pipeline's image, resources and retries."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from culturegan.config.base import StrictModel
from culturegan.config.measures import metric_direction


class TrackingConfig(StrictModel):
    """MLflow tracking: where runs go. MLFLOW_TRACKING_URI in the environment overrides tracking_uri."""

    tracking_uri: str | None = Field(
        None,
        description="None: env MLFLOW_TRACKING_URI if set, else sqlite:///mlflow.db; e.g. http://mlflow:5000",
    )
    experiment: str = Field("culturegan", min_length=1, max_length=500)
    artifact_location: str | None = Field(
        "mlartifacts",
        description="artifact root given to a NEW experiment: a local folder (local stores only) or s3://...;"
        " None: the store's default (a tracking server's --artifacts-destination)",
    )
    log_system_metrics: bool = Field(True, description="log CPU/memory/disk/GPU use to each training run")
    system_metrics_interval_s: float = Field(10.0, gt=0, le=3600, description="system metrics sampling period")

    @field_validator("tracking_uri", "artifact_location")
    @classmethod
    def _no_credentials(cls, uri: str | None) -> str | None:
        if uri is not None and not uri.strip():
            raise ValueError("must not be empty: leave it out (null) for the default")
        if uri is not None and re.search(r"://[^/@\s]+@", uri):
            raise ValueError(
                "must not contain credentials: set MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD or"
                " the AWS variables in the environment instead"
            )
        return uri


class RegistryConfig(StrictModel):
    """Model registry: one registered model per direction, promoted to `champion` by a metric gate."""

    model_prefix: str = Field(
        "culturegan",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="registered models are named <model_prefix>-<source>-to-<target>",
    )
    metric: str = Field(
        "kid_classifier_relative_gain",
        pattern=r"^[a-z][a-z0-9_]{0,63}$",
        description="the GAN's metric in the evaluate stage's metrics.json that decides promotion",
    )
    direction: Literal["auto", "higher", "lower"] = Field(
        "auto", description="which metric values are better; auto: known from the metric's name"
    )
    min_improvement: float = Field(
        0.01, ge=0, description="a candidate must beat the champion by more than this (metric units)"
    )
    max_side: int = Field(
        1024, ge=8, le=16384, description="the served model refuses images with a longer side (400)"
    )
    max_images: int = Field(
        4,
        ge=1,
        le=4096,
        description="images per request the served model accepts; with max_side it bounds the request"
        " body `culturegan serve` reads (413 above): 4 images of 1024 px as JSON are about 75 MB",
    )
    batch_size: int = Field(8, ge=1, le=1024, description="images per forward pass inside the served model")

    @model_validator(mode="after")
    def _known_direction(self) -> RegistryConfig:
        known = metric_direction(self.metric)
        if self.direction == "auto" and known is None:
            raise ValueError(
                f"the direction of metric {self.metric!r} is unknown: set registry.direction to higher"
                " or lower, or use a metric of metrics.json such as kid_classifier_relative_gain or gt_ssim"
            )
        if known is not None and self.direction not in ("auto", known):
            raise ValueError(
                f"{self.metric} is better when {known}, but registry.direction is {self.direction!r}"
            )
        return self

    @property
    def higher_is_better(self) -> bool:
        if self.direction != "auto":
            return self.direction == "higher"
        return metric_direction(self.metric) == "higher"


# Kubernetes quantities in the forms kfp's set_cpu_*/set_memory_* accept.
_K8S_CPU = r"^([0-9]*\.)?[0-9]+m?$"
_K8S_MEMORY = r"^[0-9]+(E|Ei|P|Pi|T|Ti|G|Gi|M|Mi|K|Ki)?$"


class StepResources(StrictModel):
    """CPU and memory of one pipeline step's container (Kubernetes quantities, e.g. '500m', '8Gi')."""

    cpu_request: str = Field("1", pattern=_K8S_CPU, description="CPUs reserved for the step")
    cpu_limit: str = Field("2", pattern=_K8S_CPU, description="CPUs the step may use at most")
    memory_request: str = Field("2Gi", pattern=_K8S_MEMORY, description="memory reserved for the step")
    memory_limit: str = Field("4Gi", pattern=_K8S_MEMORY, description="memory above which the step is killed")


class PipelineConfig(StrictModel):
    """The Kubeflow pipeline (`culturegan pipeline compile|submit`): image, resources, retries.

    Applied when the pipeline is compiled; `kfp.local` (`culturegan pipeline run-local`) ignores
    all of it but the step order.
    """

    image: str = Field(
        "culturegan:0.1.0",
        # a tag (repo:tag) or, to pin the exact build, a digest (repo@sha256:<64 hex>)
        pattern=r"^[A-Za-z0-9][^\s@]*(@sha256:[0-9a-f]{64})?$",
        description="image every step runs in (infra/docker, pushed to a registry the cluster can pull from); "
        "repo:tag or repo@sha256:<digest>",
    )
    name: str = Field(
        "culturegan", pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,127}$", description="pipeline name in KFP"
    )
    steps: StepResources = Field(default_factory=StepResources, description="every step but train")
    train: StepResources = Field(
        default_factory=lambda: StepResources(
            cpu_request="4", cpu_limit="8", memory_request="8Gi", memory_limit="16Gi"
        ),
        description="each train step",
    )
    accelerator_type: str = Field(
        "nvidia.com/gpu", min_length=1, description="Kubernetes resource name of the GPU a train step requests"
    )
    gpus: int = Field(
        1, ge=0, le=1,
        description="GPUs per train step (one training process; multi-GPU DDP runs as a PyTorchJob); 0: CPU",
    )
    retries: int = Field(2, ge=0, le=10, description="retries of a failed train step (e.g. a preempted node)")
    retry_backoff_s: int = Field(60, ge=0, le=3600, description="wait before the first retry; doubles each retry")
    parallelism: int = Field(0, ge=0, le=64, description="pairs trained at the same time; 0: all at once")
    cache: bool = Field(
        True, description="reuse the outputs of unchanged steps (prepare, validate, classifier, culture, evaluate)"
    )

    @model_validator(mode="after")
    def _requests_within_limits(self) -> PipelineConfig:
        for section in ("steps", "train"):
            res: StepResources = getattr(self, section)
            if _k8s_quantity(res.cpu_request) > _k8s_quantity(res.cpu_limit):
                raise ValueError(f"{section}.cpu_request {res.cpu_request} exceeds {section}.cpu_limit {res.cpu_limit}")
            if _k8s_quantity(res.memory_request) > _k8s_quantity(res.memory_limit):
                raise ValueError(
                    f"{section}.memory_request {res.memory_request} exceeds {section}.memory_limit {res.memory_limit}"
                )
        return self


_QUANTITY_SUFFIX = {
    "m": 1e-3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}


def _k8s_quantity(text: str) -> float:
    number = re.match(r"^[0-9.]+", text)
    assert number is not None  # the field patterns guarantee a leading number
    return float(number.group()) * _QUANTITY_SUFFIX.get(text[number.end():], 1.0)
