"""params.yaml schema: pydantic models, the one place where parameters and their defaults live.

Every stage reads its own section of the same `Params` object. Unknown or misspelt keys, wrong
types and bad values are rejected before any work starts, with the key path and the closest
valid key in the message.

The package holds, one module each: the style names and the culture `Pair` (`pair`); the strict
base model and the generator's size rule (`base`); the sections, `data` (data, validation),
`train`, `evaluation` (evaluation, analysis) and `operations` (tracking, registry, pipeline); and
`params`: the whole file, the rules across sections, loading and error messages. Import the
names from `culturegan.config`; the modules import one another, never this package.
"""

from culturegan.config.base import GENERATOR_STRIDE, StrictModel, patch_output_size
from culturegan.config.data import DataConfig, DownloadConfig, SyntheticConfig, ValidationConfig
from culturegan.config.evaluation import (
    AnalysisConfig,
    ClassifierConfig,
    CultureConfig,
    EvaluationConfig,
    GatysConfig,
    QualityMeasure,
)
from culturegan.config.operations import (
    PipelineConfig,
    RegistryConfig,
    StepResources,
    TrackingConfig,
)
from culturegan.config.pair import STYLE_PATTERN, SYNTHETIC_STYLES, Pair, StyleName
from culturegan.config.params import (
    Params,
    dump_params,
    format_validation_error,
    load_params,
    parse_params,
    unknown_pair_styles,
)
from culturegan.config.train import (
    CUTConfig,
    CycleGANConfig,
    DiscriminatorConfig,
    GeneratorConfig,
    TrainConfig,
    size_problem,
)

__all__ = [
    "GENERATOR_STRIDE",
    "STYLE_PATTERN",
    "SYNTHETIC_STYLES",
    "AnalysisConfig",
    "CUTConfig",
    "ClassifierConfig",
    "CultureConfig",
    "CycleGANConfig",
    "DataConfig",
    "DiscriminatorConfig",
    "DownloadConfig",
    "EvaluationConfig",
    "GatysConfig",
    "GeneratorConfig",
    "Pair",
    "Params",
    "PipelineConfig",
    "QualityMeasure",
    "RegistryConfig",
    "StepResources",
    "StrictModel",
    "StyleName",
    "SyntheticConfig",
    "TrackingConfig",
    "TrainConfig",
    "ValidationConfig",
    "dump_params",
    "format_validation_error",
    "load_params",
    "parse_params",
    "patch_output_size",
    "size_problem",
    "unknown_pair_styles",
]
