"""The tables GX validates besides the manifest: image counts per (style, split) and train/test
perceptual-hash leaks; and the styles that params require."""

from __future__ import annotations

import pandas as pd

from culturegan.config import Params
from culturegan.data.manifest import SPLITS


def required_styles(params: Params) -> list[str]:
    """Styles that params say must be present: the synthetic styles, or the renamed source domains."""
    if params.data.is_synthetic:
        return list(params.data.synthetic.styles)
    return sorted(set(params.data.style_names.values()))


def style_split_counts(manifest: pd.DataFrame, required: list[str]) -> pd.DataFrame:
    """One row per (style, split) with its image count; absent combinations count 0.

    `imbalance` is the count over the smallest count of the same split, so its maximum is the
    split's largest / smallest ratio; it is null where the smallest count is 0 (undefined).
    """
    columns = ["style", "split", "count", "smallest", "imbalance"]
    if not {"style", "split"} <= set(manifest.columns):
        return pd.DataFrame(
            {c: pd.Series(dtype="float64" if c == "imbalance" else "object") for c in columns}
        )
    styles = sorted(set(manifest["style"].dropna().astype(str)) | set(required))
    index = pd.MultiIndex.from_product([styles, list(SPLITS)], names=["style", "split"])
    counts = (
        manifest.groupby(["style", "split"])
        .size()
        .reindex(index, fill_value=0)
        .rename("count")
        .reset_index()
    )
    counts["count"] = counts["count"].astype("int64")
    counts["smallest"] = counts.groupby("split")["count"].transform("min").astype("int64")
    counts["imbalance"] = counts["count"] / counts["smallest"].where(counts["smallest"] > 0)
    return counts[columns]


def phash_leaks(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per test image; `train_match` is a train image of the same style with the same
    perceptual hash (null when there is none, which is what the gate expects)."""
    columns = ["style", "path", "phash", "train_match"]
    if not {"style", "split", "path", "phash"} <= set(manifest.columns):
        return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})
    known = manifest.dropna(subset=["style", "phash"])
    test = known.loc[known["split"] == "test", ["style", "path", "phash"]]
    train = (
        known.loc[known["split"] == "train", ["style", "phash", "path"]]
        .sort_values("path")
        .drop_duplicates(["style", "phash"])
        .rename(columns={"path": "train_match"})
    )
    leaks = test.merge(train, on=["style", "phash"], how="left")
    return leaks[columns].reset_index(drop=True)
