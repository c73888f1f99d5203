"""The tests' one tiny configuration, and the helpers that build params from it with per-test
overrides: `tiny_raw` (params.yaml + TINY: a whole params file, for `dvc repro` and the KFP
pipeline end to end) and `tiny_params` (the schema's defaults + TINY: unit tests, independent of
what params.yaml says)."""

from __future__ import annotations

from typing import Any

import yaml
from conftest import REPO_ROOT

from culturegan.config import Params, parse_params

SIZE = 32  # stored and trained image side: a multiple of 4, as the generator needs
NETS = {"generator": {"ngf": 8, "n_blocks": 1}, "discriminator": {"ndf": 8, "n_layers": 2}}

# Small enough for the whole pipeline to run in about a minute on 2 cores.
TINY: dict[str, Any] = {
    "data": {
        "image_size": SIZE,
        "workers": 1,
        "synthetic": {"styles": ["photo", "inkwash"], "train_scenes": 8, "test_scenes": 4, "preview_scenes": 2},
    },
    "validation": {"min_train_per_style": 5, "min_test_per_style": 2},
    "train": {
        "pairs": ["photo-inkwash"],
        "steps": 4,
        "batch_size": 2,
        "checkpoint_every": 2,
        "log_every": 2,
        "sample_every": 4,
        "sample_count": 2,
        **NETS,
    },
    "evaluation": {
        "kid_subsets": 5,
        "kid_subset_size": 4,
        "grid_rows": 2,
        "batch_size": 8,
        "classifier": {"epochs": 1, "width": 4, "feature_dim": 8, "input_size": SIZE, "batch_size": 8},
    },
    "analysis": {"bootstrap_samples": 100, "permutation_samples": 100},
    "tracking": {"log_system_metrics": False},
}


def merge(base: dict[str, Any], *overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` with each override merged in, section by section (a new dict; nothing is mutated).
    A mapping merges into a mapping; any other value (a list, a scalar) replaces."""
    out = dict(base)
    for over in overrides:
        for key, value in over.items():
            old = out.get(key)
            out[key] = merge(old, value) if isinstance(value, dict) and isinstance(old, dict) else value
    return out


def tiny_raw(*overrides: dict[str, Any], **sections: Any) -> dict[str, Any]:
    """params.yaml with TINY and the overrides merged in, as a mapping to dump to a params file."""
    return merge(yaml.safe_load((REPO_ROOT / "params.yaml").read_text()), TINY, *overrides, sections)


def tiny_params(*overrides: dict[str, Any], **sections: Any) -> Params:
    """The schema's defaults with TINY and the overrides merged in, validated."""
    return parse_params(merge(TINY, *overrides, sections), "tiny params")
