"""Labelled image grids: one row per item, one column per label, the label above each column.

The data previews (a column per style: the benchmark's preview and the contact sheet of ingested
data) and the evaluation's grid (a column per method) draw with it. It needs only numpy and
Pillow, so that neither of those users imports the other.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def _label_font(
    text_width: int, texts: Sequence[str]
) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """The largest default font (up to 16 px) in which every label fits its column."""
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    for px in range(16, 6, -1):
        try:
            font = ImageFont.load_default(size=px)
        except (TypeError, OSError):  # a Pillow built without FreeType has one fixed bitmap font
            return ImageFont.load_default()
        if all(probe.textlength(t, font=font) <= text_width for t in texts):
            return font
    return font


def preview_grid(
    rows: Sequence[Sequence[np.ndarray]], styles: Sequence[str], min_tile: int = 128
) -> Image.Image:
    """A grid with one row per scene and one column per style, the style name above each column.

    Small images are enlarged by a whole factor (nearest neighbour) so their pixels stay visible.
    """
    size = rows[0][0].shape[0]
    factor = max(1, -(-min_tile // size))
    tile, gap, head = size * factor, 4, 22
    width = len(styles) * (tile + gap) + gap
    height = head + len(rows) * (tile + gap) + gap
    grid = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    font = _label_font(tile, styles)
    for j, style in enumerate(styles):
        x = gap + j * (tile + gap)
        draw.text((x + tile / 2, head / 2 + 1), style, fill=(20, 20, 20), font=font, anchor="mm")
        for i, row in enumerate(rows):
            im = Image.fromarray(row[j], "RGB").resize((tile, tile), Image.Resampling.NEAREST)
            grid.paste(im, (x, head + i * (tile + gap)))
    return grid
