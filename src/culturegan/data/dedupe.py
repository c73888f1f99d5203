"""Duplicates among the accepted images: exact copies (sha256), near copies (pHash distance),
train/test leaks within a style, and images filed under two styles (an ambiguous label)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from culturegan.data.layout import SPLIT_ORDER
from culturegan.data.manifest import Reason, phash_ints


def _sort_key(r: dict[str, Any]) -> tuple[int, str]:
    return SPLIT_ORDER[r["split"]], r["origin"]


def dedupe(accepted: list[dict[str, Any]], max_bits: int) -> dict[int, tuple[str, str]]:
    """Indices into `accepted` to reject -> (reason, detail).

    An image under two styles (the same sha256, or a pHash distance <= max_bits) has an
    ambiguous label: every copy of it is refused, in every style. Then exact copies, then near
    copies within a style: the first by (train before test, origin) is kept; a copy in the other
    split of the same style is a train/test leak.
    """
    rejected = _ambiguous(accepted, max_bits)
    by_sha: dict[str, list[int]] = defaultdict(list)
    for i in sorted(range(len(accepted)), key=lambda i: _sort_key(accepted[i])):
        if i not in rejected:
            by_sha[accepted[i]["sha256"]].append(i)
    for group in by_sha.values():
        kept = accepted[group[0]]
        for i in group[1:]:
            r = accepted[i]
            leak = r["style"] == kept["style"] and r["split"] != kept["split"]
            reason = Reason.LEAK if leak else Reason.DUPLICATE
            rejected[i] = (
                reason,
                f"same bytes as {kept['origin']} ({kept['style']}/{kept['split']})",
            )

    by_style: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(accepted):
        if i not in rejected:
            by_style[r["style"]].append(i)
    for idx in by_style.values():
        idx.sort(key=lambda i: _sort_key(accepted[i]))
        hashes = phash_ints(accepted[i]["phash"] for i in idx)
        neighbours = _near_pairs(hashes, max_bits)
        gone = np.zeros(len(idx), dtype=bool)
        for pos in sorted(neighbours):
            cands = [(j, d) for j, d in neighbours[pos] if not gone[j]]
            if not cands:
                continue
            r = accepted[idx[pos]]
            cross = [(j, d) for j, d in cands if accepted[idx[j]]["split"] != r["split"]]
            j, d = min(cross or cands, key=lambda jd: (jd[1], jd[0]))
            kept = accepted[idx[j]]
            gone[pos] = True
            reason = Reason.LEAK if cross else Reason.NEAR_DUPLICATE
            rejected[idx[pos]] = (
                reason,
                f"pHash distance {d} to {kept['origin']} ({kept['style']}/{kept['split']})",
            )
    return rejected


def _ambiguous(accepted: list[dict[str, Any]], max_bits: int) -> dict[int, tuple[str, str]]:
    """Every image with a copy or near copy in another style -> (AMBIGUOUS, the closest one)."""
    order = sorted(range(len(accepted)), key=lambda i: _sort_key(accepted[i]))
    closest: dict[int, tuple[int, int]] = {}  # i -> (distance, position in `order` of the match)

    def note(a: int, b: int, d: int) -> None:
        i, j = order[a], order[b]
        if accepted[i]["style"] != accepted[j]["style"]:
            closest[i] = min(closest.get(i, (d, b)), (d, b))
            closest[j] = min(closest.get(j, (d, a)), (d, a))

    hashes = phash_ints(accepted[i]["phash"] for i in order)
    for a, pairs in _near_pairs(hashes, max_bits).items():
        for b, d in pairs:
            note(a, b, d)
    # The same bytes always decode to the same pHash, but say so when it is the same file.
    out = {}
    for i, (d, b) in closest.items():
        other = accepted[order[b]]
        where = f"{other['origin']} ({other['style']}/{other['split']})"
        same = other["sha256"] == accepted[i]["sha256"]
        detail = f"same bytes as {where}" if same else f"pHash distance {d} to {where}"
        out[i] = (Reason.AMBIGUOUS, f"{detail} in another style")
    return out


def _near_pairs(hashes: np.ndarray, max_bits: int) -> dict[int, list[tuple[int, int]]]:
    """For each position i: the earlier positions j < i within `max_bits`, with the distance."""
    n = len(hashes)
    out: dict[int, list[tuple[int, int]]] = defaultdict(list)
    if n < 2:
        return out
    rows = max(1, (1 << 22) // n)  # a (rows, n) block of XORs stays within 32 MB
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        # Only the columns before each row: the lower triangle, half the work of all pairs.
        dist = np.bitwise_count(hashes[start:stop, None] ^ hashes[None, :stop])
        close = dist <= max_bits
        close[:, start:stop] &= np.tri(stop - start, k=-1, dtype=bool)
        for bi, j in zip(*np.nonzero(close), strict=True):
            out[start + int(bi)].append((int(j), int(dist[bi, j])))
    return out
