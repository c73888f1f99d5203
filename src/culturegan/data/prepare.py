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

    result = {"kind": "ingest", "source": params.data.source, **ingest(params, root)}
    result["preview"] = str(write_contact_sheet(root, params.data.synthetic.preview_scenes))
    return result


def write_contact_sheet(root: Path, rows: int) -> Path:
    """`root/preview.png` for ingested data: one column per style, its first `rows` train images
    (by path), so that every source, not only the benchmark, shows what it holds at a glance."""
    import numpy as np
    from PIL import Image

    from culturegan.data.manifest import read_manifest
    from culturegan.fileio import atomic_path
    from culturegan.imagegrid import preview_grid

    manifest = read_manifest(root)
    styles = sorted(manifest["style"].unique())
    columns = []
    for style in styles:
        rows_of = manifest[(manifest["style"] == style)].sort_values(["split", "path"], ascending=[False, True])
        columns.append([np.asarray(Image.open(root / p).convert("RGB")) for p in rows_of["path"][:rows]])
    depth = max((len(c) for c in columns), default=0)
    if depth == 0:
        from culturegan.errors import IngestError

        raise IngestError(f"no image of the source was accepted into {root}", hint=f"see {root / 'rejects.csv'}")
    size = columns[0][0].shape
    blank = np.full(size, 255, dtype=np.uint8)  # a style with fewer images than rows
    grid = [[c[i] if i < len(c) else blank for c in columns] for i in range(depth)]
    path = root / "preview.png"
    with atomic_path(path) as tmp:
        preview_grid(grid, styles).save(tmp, format="PNG")
    return path
