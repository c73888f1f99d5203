"""The analysis's figures: matplotlib Figure objects on the Agg canvas (no pyplot state)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from culturegan.evaluation.measures import BAR_MEASURES, COMBINED, GAN, MEASURES
from culturegan.fileio import atomic_path


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return path


def _arrow(direction: str | None) -> str:
    return {"higher": " (higher is better)", "lower": " (lower is better)"}.get(direction or "", "")


def _mpl(text: str) -> str:
    # A '$' would start matplotlib mathtext and can fail to parse: style names come from data.
    return str(text).replace("$", r"\$")


def _short(pair: dict[str, Any]) -> str:
    return _mpl(f"{pair['source']}\u2192{pair['target']}")


def _place_labels(
    ax: Any, xy: list[tuple[float, float]], labels: list[str], fontsize: float = 7
) -> None:
    """Annotate points greedily at the corner (right/left, above/below) that overlaps least.

    A->B and B->A share a distance, so their points often sit on one vertical line; a fixed
    offset would print their labels over each other.
    """
    if not xy:
        return
    ax.get_xlim(), ax.get_ylim()  # settles autoscaling so transData is final
    scale = ax.figure.dpi / 72.0
    pts = ax.transData.transform(np.asarray(xy, dtype=float))
    frame = tuple(ax.bbox.extents)
    placed: list[tuple[float, float, float, float]] = [
        (x - 4 * scale, y - 4 * scale, x + 4 * scale, y + 4 * scale) for x, y in pts
    ]

    def overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
        w = min(a[2], b[2]) - max(a[0], b[0])
        h = min(a[3], b[3]) - max(a[1], b[1])
        return max(w, 0.0) * max(h, 0.0)

    for (x, y), text in zip(pts, labels, strict=True):
        w, h = 0.6 * fontsize * len(text) * scale, 1.2 * fontsize * scale
        best = None
        for dx, dy in (
            (4, 3),
            (4, -3 - 1.2 * fontsize),
            (-4 - w / scale, 3),
            (-4 - w / scale, -3 - 1.2 * fontsize),
        ):
            box = (x + dx * scale, y + dy * scale, x + dx * scale + w, y + dy * scale + h)
            inside = overlap(box, frame)
            cost = sum(overlap(box, other) for other in placed) + (w * h - inside)
            if best is None or cost < best[0] - 1e-9:
                best = (cost, dx, dy, box)
        assert best is not None
        _, dx, dy, box = best
        placed.append(box)
        ax.annotate(
            text,
            ax.transData.inverted().transform((x, y)),
            textcoords="offset points",
            xytext=(dx, dy),
            fontsize=fontsize,
            va="bottom",
        )


def plot_scatter(
    pairs: list[dict[str, Any]], correlations: list[dict[str, Any]], measure: str, path: Path
) -> Path:
    """The GAN's `measure` per directed pair against each distance view; bars span the seeds."""
    views = list(dict.fromkeys(r["view"] for r in correlations))
    by_view = {r["view"]: r for r in correlations if r["measure"] == measure}
    cols = min(4, max(1, len(views)))
    rows = -(-max(1, len(views)) // cols)
    fig = _figure(3.6 * cols, 3.2 * rows)
    info = MEASURES[measure]
    pending: list[tuple[Any, list[tuple[float, float]], list[str]]] = []
    for k, view in enumerate(views):
        ax = fig.add_subplot(rows, cols, k + 1)
        pts = [
            p
            for p in pairs
            if (p["measures"].get(GAN) or {}).get(measure) is not None
            and p["distance"].get(view) is not None
        ]
        for p in pts:
            s = p["measures"][GAN][measure]
            ax.errorbar(
                p["distance"][view],
                s["mean"],
                yerr=[[s["mean"] - s["min"]], [s["max"] - s["mean"]]],
                fmt="o",
                color="#1f5f8b",
                ecolor="#7aa6c2",
                capsize=3,
                markersize=5,
            )
        r = by_view.get(view)
        if r is not None and r["status"] == "estimated":
            title = f"{view.replace('_', ' ')}: \u03c1 = {r['rho']:.2f}, p = {r['permutation']['p']:.2g}"
        else:
            title = f"{view.replace('_', ' ')}: \u03c1 not estimable"
        ax.set_title(title, fontsize=9, fontweight="bold" if view == COMBINED else "normal")
        ax.set_xlabel(f"{view.replace('_', ' ')} distance", fontsize=8)
        if k % cols == 0:
            ax.set_ylabel(info["label"], fontsize=8)
        ax.tick_params(labelsize=7)
        ax.margins(x=0.25, y=0.15)
        ax.grid(alpha=0.3)
        pending.append(
            (
                ax,
                [(p["distance"][view], p["measures"][GAN][measure]["mean"]) for p in pts],
                [_short(p) for p in pts],
            )
        )
        if not pts:
            ax.text(0.5, 0.5, "no scored pairs", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(
        f"GAN {info['label']}{_arrow(info['direction'])} vs cultural distance; bars: range over seeds",
        fontsize=10,
    )
    fig.tight_layout()
    for ax, xy, labels in pending:  # after the layout, so label positions are final
        _place_labels(ax, xy, labels)
    return _save(fig, path)


def plot_asymmetry(asym: list[dict[str, Any]], measure: str, path: Path) -> Path:
    """A->B and B->A side by side for each pair evaluated both ways (bars: range over seeds)."""
    rows = [e for e in asym if measure in e["measures"]]
    fig = _figure(6.5, 0.6 * max(1, len(rows)) + 1.4)
    ax = fig.add_subplot(1, 1, 1)
    for y, e in enumerate(rows):
        m = e["measures"][measure]
        f, b = m["forward"], m["backward"]
        ax.plot([f["mean"], b["mean"]], [y, y], color="#bbbbbb", zorder=1)
        for s, colour, lab in (
            (f, "#1f5f8b", _mpl(f"{e['a']}\u2192{e['b']}")),
            (b, "#c0562b", _mpl(f"{e['b']}\u2192{e['a']}")),
        ):
            ax.errorbar(
                s["mean"],
                y,
                xerr=[[s["mean"] - s["min"]], [s["max"] - s["mean"]]],
                fmt="o",
                color=colour,
                capsize=3,
                zorder=2,
            )
            # Forward label above, backward below: close means would print one over the other.
            dy = 7 if s is f else -13
            ax.annotate(
                lab,
                (s["mean"], y),
                textcoords="offset points",
                xytext=(0, dy),
                fontsize=7,
                ha="center",
                color=colour,
            )
    ax.set_yticks(range(len(rows)), [_mpl(f"{e['a']} / {e['b']}") for e in rows], fontsize=8)
    ax.set_ylim(-0.7, len(rows) - 0.3)
    info = MEASURES[measure]
    ax.set_xlabel(f"GAN {info['label']}{_arrow(info['direction'])}", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Asymmetry: each pair in both directions", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_methods(pairs: list[dict[str, Any]], path: Path) -> Path:
    """Grouped bars per directed pair: the GAN and every baseline on each headline measure (bars: seed SD)."""
    measures = [
        m
        for m in BAR_MEASURES
        if any((p["measures"].get(meth) or {}).get(m) for p in pairs for meth in p["measures"])
    ]
    methods = list(dict.fromkeys(m for p in pairs for m in p["methods"]))
    cols = min(3, max(1, len(measures)))
    rows = -(-max(1, len(measures)) // cols)
    width = max(3.8, 0.55 * len(pairs) * max(1, len(methods)) / 2.2)
    fig = _figure(width * cols, 3.0 * rows + 0.6)
    palette = ["#1f5f8b", "#9a9a9a", "#d4a03a", "#5a9a5a", "#a05a9a", "#c0562b", "#4aa0a0"]
    bar = 0.8 / max(1, len(methods))
    for k, measure in enumerate(measures):
        ax = fig.add_subplot(rows, cols, k + 1)
        for j, method in enumerate(methods):
            xs, ys, es = [], [], []
            for i, p in enumerate(pairs):
                s = (p["measures"].get(method) or {}).get(measure)
                if s is not None:
                    xs.append(i + (j - (len(methods) - 1) / 2) * bar)
                    ys.append(s["mean"])
                    es.append(s["sd"] or 0.0)
            if xs:
                ax.bar(
                    xs,
                    ys,
                    bar,
                    yerr=es if any(es) else None,  # one seed: no spread to draw
                    capsize=2,
                    label=_mpl(method),
                    color=palette[j % len(palette)],
                    edgecolor="black" if method == GAN else "none",
                    linewidth=0.8,
                )
        info = MEASURES[measure]
        ax.set_title(f"{info['label']}{_arrow(info['direction'])}", fontsize=9)
        ax.set_xticks(
            range(len(pairs)), [_short(p) for p in pairs], rotation=30, ha="right", fontsize=7
        )
        ax.tick_params(axis="y", labelsize=7)
        ax.axhline(0, color="black", linewidth=0.5)
        ax.grid(axis="y", alpha=0.3)
    if measures:
        handles, labels = fig.axes[0].get_legend_handles_labels()
        fig.legend(
            handles, labels, loc="upper center", ncol=len(methods), fontsize=8, frameon=False
        )
        fig.tight_layout(rect=(0, 0, 1, 0.93))
    return _save(fig, path)
