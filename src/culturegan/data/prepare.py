"""The `prepare` stage: the embedded synthetic benchmark or an ingest of real data, from params."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from culturegan.config import Params


def prepare(params: Params, root: Path | None = None) -> dict[str, Any]:
    """Fill `root` (default `params.data.root`) with styles/, manifest.parquet and rejects.csv.

    `data.source: synthetic` renders the procedural benchmark; anything else is ingested.
    """
    root = Path(root if root is not None else params.data.root)
    if params.data.is_synthetic:
        from culturegan.data.synthetic import prepare_synthetic

        return {"kind": "synthetic", **prepare_synthetic(params, root)}
    from culturegan.data.ingest import ingest

    return {"kind": "ingest", "source": params.data.source, **ingest(params, root)}
