"""The analysis in words: the one-sentence answer, the findings list and the standing caveats,
each built from the numbers only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from culturegan.config import AnalysisConfig
from culturegan.evaluation.measures import MEASURES

TEXTURE_MEASURE = "kid_gain_texture"

SYNTHETIC_CAVEAT = (
    "Synthetic data: the procedural benchmark renders the same scenes in every style, which removes "
    "the subject-matter confound but does not show how the results carry over to real art."
)
CAVEATS = [
    (
        "The style classifier is closed-set: it only knows these styles, so it can reward a colour "
        "shift alone. Read KID and the deception rate together with the content and ground-truth "
        "metrics."
    ),
    (
        "Raw KID and FID grow with the distance between source and target by construction "
        "(identity scores worse the farther apart the styles are); the relative gain corrects for that."
    ),
    (
        "Few domains: with k styles a style-relabelling test has only k! outcomes, so a strong-looking "
        "correlation can be chance. More styles help more than more seeds."
    ),
    "The cultural distance is symmetric, so it cannot explain differences between A->B and B->A.",
    SYNTHETIC_CAVEAT,
    "FID at small N is biased, and the bias depends on N: compare FIDs only at equal image counts.",
]


# A classifier whose held-out accuracy a one-sided binomial test cannot tell from guessing at
# this level has no feature space worth measuring KID, FID or the deception rate in.
CHANCE_ALPHA = 0.01


def classifier_at_chance(classifier: dict[str, Any] | None) -> str | None:
    """The caveat for a style classifier (its classifier.json) whose test accuracy is not above
    chance (1/k for k styles) at CHANCE_ALPHA; None when it is, or when the report is missing."""
    if not classifier or classifier.get("test_accuracy") is None:
        return None
    k = len(classifier.get("styles") or [])
    n = int(sum((classifier.get("n_test") or {}).values()))
    if k < 2 or n < 1:
        return None
    from scipy.stats import binomtest

    accuracy = float(classifier["test_accuracy"])
    hits = round(accuracy * n)
    p = binomtest(hits, n, 1.0 / k, alternative="greater").pvalue
    if p < CHANCE_ALPHA:
        return None
    return (
        f"The style classifier is at chance: test accuracy {accuracy:.3f} on {n} held-out images "
        f"of {k} styles, where guessing gives {1 / k:.3f} (one-sided binomial p = {p:.2g}). KID, "
        "FID, the relative KID gain and the deception rate are measured in its feature space and "
        "say nothing here; read the content and ground-truth metrics only, and train the "
        "classifier longer (evaluation.classifier.epochs) or on more images."
    )


def caveats(
    synthetic: bool,
    source_cycle_scale: float | None = None,
    classifier: dict[str, Any] | None = None,
) -> list[str]:
    """The standing caveats; the one about synthetic data only when the data are synthetic, one
    about the recipe when CycleGAN weighted the two cycles of each pair unequally
    (`source_cycle_scale`: the CycleGAN runs' train.cyclegan.source_cycle_scale; None for CUT),
    and, first, one when the style classifier (`classifier`: its classifier.json) is at chance."""
    at_chance = classifier_at_chance(classifier)
    out = [at_chance] if at_chance else []
    out += [c for c in CAVEATS if synthetic or c != SYNTHETIC_CAVEAT]
    if source_cycle_scale is not None and source_cycle_scale != 1.0:
        out.append(
            f"Unequal recipe: train.cyclegan.source_cycle_scale is {source_cycle_scale:g}, so each "
            f"pair's source -> target -> source cycle weighed {source_cycle_scale:g} times its "
            "target -> source -> target cycle. A->B and B->A were trained unequally, and part of "
            "any difference between them (the asymmetry figure) is the recipe's, not the styles'."
        )
    return out


def _p_text(perm: dict[str, Any]) -> str:
    if perm["exact"] and "/" in perm["p_fraction"]:
        return f"{perm['p_fraction']} = {perm['p']:.3g}"
    return f"{perm['p']:.3g}"


def _pmin_text(perm: dict[str, Any]) -> str:
    if perm["exact"]:
        return f"{perm['p_min_fraction']} = {perm['p_min']:.3g}"
    return f"about {perm['p_min']:.3g}"


def _relabel_text(perm: dict[str, Any]) -> str:
    if perm["exact"]:
        return f"all {perm['k']}! = {perm['relabellings']} relabellings of the styles"
    return f"{perm['relabellings'] - 1} random relabellings of the {perm['k']} styles"


def honest_sentence(
    design: dict[str, Any], corr: dict[str, Any] | None, cfg: AnalysisConfig
) -> str:
    """The plain-words answer to 'does quality follow cultural distance?', built from the numbers only."""
    n, k = design["n_pairs_scored"], design["n_styles"]
    label = MEASURES[cfg.primary_metric]["label"]
    head = f"With {n} directed pair{'s' if n != 1 else ''} among {k} style{'s' if k != 1 else ''}"
    if not design["has_gan"]:
        return (
            "No GAN output was evaluated (baselines only), so nothing can be said about how the "
            "GAN's quality relates to cultural distance."
        )
    if corr is None or corr["status"] != "estimated":
        why = f" ({corr['reason']})" if corr and corr.get("reason") else ""
        return (
            f"{head}, no correlation between {label} and cultural distance can be estimated{why}; "
            "the figures below are descriptive."
        )
    perm, boot = corr["permutation"], corr["bootstrap"]
    level = f"{boot['level'] * 100:g} %"
    if boot["ci"] is None:
        ci = f"no {level} bootstrap interval (too few resamples with distinct pairs)"
    else:
        lo, hi = boot["ci"]
        ci = f"{level} bootstrap CI {lo:.2f} to {hi:.2f}, width {hi - lo:.2f}"
    stat = (
        f"Spearman's \u03c1 between {label} and the combined cultural distance is "
        f"{corr['rho']:.2f} ({ci})"
    )
    if perm["p_min"] > cfg.alpha:
        return (
            f"{head}, no correlation can be distinguished from chance whatever the results: the "
            f"smallest p-value this design can give is {_pmin_text(perm)} ({_relabel_text(perm)}), "
            f"above \u03b1 = {cfg.alpha:g}. {stat}; the observed p is {_p_text(perm)}. "
            "The figures below are descriptive."
        )
    tail = f"the permutation test over {_relabel_text(perm)} gives p = {_p_text(perm)} (smallest achievable {_pmin_text(perm)})"
    if perm["p"] <= cfg.alpha:
        covers = boot["ci"] is not None and boot["ci"][0] <= 0.0 <= boot["ci"][1]
        return (
            f"{head}, {stat}; {tail}, so at \u03b1 = {cfg.alpha:g} this association is unlikely to "
            "come from an arbitrary assignment of the styles"
            + (", although the bootstrap interval includes 0" if covers else "")
            + ". It is one pre-specified test; the other measures and views are exploratory and "
            "uncorrected, and with so few styles one style can drive it."
        )
    return (
        f"{head}, {stat}; {tail}, so the data do not distinguish this correlation from chance. "
        "The figures below are descriptive."
    )


def validity_findings(validity: dict[str, Any], cfg: AnalysisConfig) -> list[str]:
    """One line on whether the primary metric passed the metric-validity test, if it was run."""
    ok = validity.get("primary_passes")
    if ok is None:
        return []
    label = MEASURES[cfg.primary_metric]["label"]
    if ok:
        return [
            f"The primary metric ({label}) ranks the true rendering above every control in every directed pair."
        ]
    row = next(r for r in validity["rows"] if r["primary"])
    lost = [
        f"{validity['controls'][c]} ({v['wins']}/{v['pairs']} pairs)"
        for c, v in row["controls"].items()
        if v["wins"] < v["pairs"]
    ]
    sentence = (
        f"The primary metric ({label}) FAILS the metric-validity test: the true rendering does not "
        f"beat {', '.join(lost)}. Its results below cannot be trusted as a measure of transfer quality."
    )
    return [sentence]


def study_findings(
    pairs: list[dict[str, Any]],
    design: dict[str, Any],
    asym: list[dict[str, Any]],
    difficulty: dict[str, Any],
    cfg: AnalysisConfig,
) -> list[str]:
    measure = cfg.primary_metric
    label = MEASURES[measure]["label"]
    lines = []
    seeds = design["seeds_per_pair"]
    if seeds:
        lo, hi = min(seeds.values()), max(seeds.values())
        span = f"{lo}" if lo == hi else f"{lo} to {hi}"
        lines.append(
            f"{design['n_pairs']} directed pair{'s' if design['n_pairs'] != 1 else ''} evaluated, "
            f"{span} seed{'s' if hi != 1 else ''} each, among the {design['n_styles']} styles of the "
            "distance matrix."
        )
        if lo < 3:
            lines.append(
                "Fewer than 3 seeds for some pairs: the spread between training restarts is barely "
                "or not estimated (RESEARCH.md, trap 4)."
            )
    if design["pairs_without_distance"]:
        lines.append(
            "Left out of the correlations (a style missing from the distance matrix): "
            + ", ".join(design["pairs_without_distance"])
            + "."
        )
    margins = [p["margin"].get(measure) for p in pairs if p["margin"].get(measure) is not None]
    if margins:
        wins = sum(m["value"] > 0 for m in margins)
        med = float(np.median([m["value"] for m in margins]))
        lines.append(
            f"On {label}, the GAN beats the best baseline in {wins} of {len(margins)} directed "
            f"pair{'s' if len(margins) != 1 else ''} (median margin {med:+.3f}; positive = GAN better)."
        )
    lines += texture_findings(pairs, measure)
    if asym:
        entries = [e for e in asym if measure in e["measures"]]
        if entries:
            worst = max(entries, key=lambda e: abs(e["measures"][measure]["difference"]))
            d = worst["measures"][measure]["difference"]
            lines.append(
                f"{len(asym)} pair{'s were' if len(asym) != 1 else ' was'} evaluated in both directions; "
                f"the largest difference in {label} is {d:+.3f} ({worst['forward']} minus {worst['backward']})."
            )
    else:
        lines.append("No pair was evaluated in both directions, so asymmetry cannot be shown.")
    targets = [t for t in difficulty["per_target"] if t["mean"] is not None]
    if len(targets) >= 2:
        lo_t = min(targets, key=lambda t: t["mean"])
        hi_t = max(targets, key=lambda t: t["mean"])
        lines.append(
            f"Per-target mean {label} ranges from {lo_t['mean']:.3f} (target {lo_t['style']}) to "
            f"{hi_t['mean']:.3f} (target {hi_t['style']}): part of any trend with distance may be "
            "target difficulty."
        )
    return lines


def texture_findings(pairs: list[dict[str, Any]], primary: str) -> list[str]:
    """The GAN against the best baseline in the training-free texture space, when it was scored and
    is not the primary measure: a second judge that no training run moves, blind to colour."""
    if primary == TEXTURE_MEASURE:
        return []
    scored = [(p["pair"], p["margin"][TEXTURE_MEASURE]) for p in pairs if p["margin"].get(TEXTURE_MEASURE)]
    if not scored:
        return []
    lost = [name for name, m in scored if not m["value"] > 0]
    wins = len(scored) - len(lost)
    return [
        f"In the training-free texture space (no training run; blind to colour), the GAN beats the "
        f"best baseline in {wins} of {len(scored)} directed pair{'s' if len(scored) != 1 else ''}"
        + (f"; not in {', '.join(lost)}." if lost else ".")
    ]


def classifier_run_findings(runs: dict[str, Any] | None) -> list[str]:
    """The GAN-vs-baselines verdict across the style classifier's training runs (an ensemble's
    members, each on its own): how many directed pairs it wins in the worst and best run, and
    which pairs hold in every run."""
    if not runs:
        return []
    label = MEASURES[runs["measure"]]["label"]
    lo, hi, n = runs["wins_min"], runs["wins_max"], runs["n_pairs"]
    span = f"{lo}" if lo == hi else f"{lo} to {hi} (median {runs['wins_median']:g})"
    line = (
        f"Across {runs['members']} training runs of the style classifier (seeds "
        f"{', '.join(str(s) for s in runs['seeds'])}), each its own feature space, the GAN beats the "
        f"best baseline on {label} in {span} of {n} directed pair{'s' if n != 1 else ''}."
    )
    parts = []
    for key, what in (
        ("won_in_every_run", "won in every run"),
        ("lost_in_every_run", "lost in every run"),
        ("depends_on_the_run", "won or lost depending on the run"),
    ):
        if runs[key]:
            parts.append(f"{what}: {', '.join(runs[key])}")
    if parts:
        text = "; ".join(parts)
        line += f" {text[0].upper()}{text[1:]}."
    if runs["depends_on_the_run"]:
        line += " A verdict that flips with the classifier's training run is not a finding."
    lines = [line]
    all_rhos = runs.get("rho_per_member") or []
    rhos = [r for r in all_rhos if r is not None]
    if rhos:
        lo_r, hi_r = min(rhos), max(rhos)
        runs_text = f"{len(rhos)} classifier run{'s' if len(rhos) != 1 else ''}"
        span_r = (
            f"is {lo_r:+.2f} in each of the {runs_text}"
            if lo_r == hi_r
            else f"ranges from {lo_r:+.2f} to {hi_r:+.2f} over the {runs_text}"
        )
        missing = len(all_rhos) - len(rhos)
        lines.append(
            f"Spearman's ρ between the GAN's {label} and the combined cultural distance {span_r}"
            + (f" ({missing} without an estimate)" if missing else "")
            + (": its sign depends on the classifier's training run." if lo_r < 0 < hi_r else ".")
        )
    agree = runs.get("rank_agreement") or []
    if agree:
        lo_a, hi_a = runs["rank_agreement_min"], runs["rank_agreement_max"]
        span_a = (
            f"{lo_a:+.2f}"
            if len(agree) == 1
            else f"{lo_a:+.2f} to {hi_a:+.2f} (median {runs['rank_agreement_median']:+.2f}, "
            f"{len(agree)} pairs of runs)"
        )
        lines.append(
            f"How the classifier runs rank the directed pairs by the GAN's {label} agrees with "
            f"Spearman's ρ {span_a}, where 1 is the same order in every run: a difference "
            "between two directed pairs is only as reproducible as that order."
        )
    return lines
