"""The analyze stage's statistics on constructed data whose answer is known, and its edge cases."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from culturegan.config import AnalysisConfig, Params
from culturegan.errors import SourceError
from culturegan.evaluation.analysis import analyze, analyze_records, load_metrics
from culturegan.evaluation.findings import honest_sentence
from culturegan.evaluation.measures import measures_of
from culturegan.evaluation.report import render_report
from culturegan.evaluation.stats import correlate, permutation_test, spearman

STYLES4 = ["impressionist", "inkwash", "photo", "ukiyoe"]


def distinct_matrix(k: int, seed: int = 0) -> np.ndarray:
    """A symmetric k x k distance matrix with distinct off-diagonal entries (no accidental ties)."""
    rng = np.random.default_rng(seed)
    m = np.zeros((k, k))
    iu = np.triu_indices(k, 1)
    m[iu] = rng.permutation(len(iu[0])) + 1.0 + rng.uniform(0, 0.1, len(iu[0]))
    return m + m.T


def culture_dict(styles: list[str], matrix: np.ndarray) -> dict[str, Any]:
    """A culture.json-shaped dict: the combined matrix and two views (one of them reversed)."""
    m = np.asarray(matrix, dtype=float)
    return {
        "styles": styles,
        "views": {
            "colour": {"styles": styles, "matrix": (2 * m).tolist(), "scale": 1.0},
            "texture": {
                "styles": styles,
                "matrix": (m.max() + 1 - m - np.eye(len(m)) * (m.max() + 1)).tolist(),
                "scale": 1.0,
            },
        },
        "combined": {"styles": styles, "matrix": m.tolist(), "views": ["colour", "texture"]},
    }


def fake_record(
    pair: str,
    seed: int,
    gain: float,
    *,
    deception: float = 0.5,
    edge: float = 0.8,
    gt: bool = True,
    source_kid: float = 0.02,
    floor: float = 0.0,
    baseline_gain: float = 0.3,
) -> dict[str, Any]:
    """A metrics.json-shaped dict whose GAN has relative KID gain `gain` (KID values consistent with it)."""
    source, target = pair.split("-", 1) if pair.count("-") == 1 else (pair, "x")

    def method(g: float, dec: float, edge_ssim: float, ssim: float) -> dict[str, float]:
        kid = source_kid * (1 - g)
        out = {
            "n_images": 8,
            "kid_classifier": kid,
            "kid_classifier_std": 0.0,
            "fid_classifier": 40 * kid,
            "kid_classifier_relative_gain": g,
            "style_accuracy": dec,
            "target_probability": dec,
            "content_ssim": edge_ssim,
            "content_edge_ssim": edge_ssim,
            "seconds": 0.01,
        }
        if gt:
            out |= {"gt_ssim": ssim, "gt_psnr": 10 + 10 * ssim, "gt_hist_hellinger": 1 - ssim}
        return out

    return {
        "pair": pair,
        "source": source,
        "target": target,
        "seed": seed,
        "image_size": 32,
        "n_images": {
            "source_test": 8,
            "target_test": 8,
            "target_train_refs": 12,
            "ground_truth_pairs": 8,
        },
        "feature_spaces": ["classifier"],
        "ground_truth": gt,
        "methods": {
            "gan": method(gain, deception, edge, 0.3 + 0.1 * gain),
            "identity": method(0.0, 0.0, 1.0, 0.2),
            "reinhard": method(baseline_gain, 0.4, 0.7, 0.25),
            "histogram": method(baseline_gain / 2, 0.3, 0.5, 0.2),
        },
        "reference": {
            "target_real": {
                "kid_classifier_floor": floor,
                "fid_classifier_floor": 0.01,
                "floor_n_per_half": 4,
                "style_accuracy": 0.9,
            },
            "source_vs_target": {
                "kid_classifier": source_kid,
                "kid_classifier_std": 0.0,
                "fid_classifier": 1.0,
            },
        },
        "skipped": {"gatys": "evaluation.vgg_weights is not set"},
    }


def all_pairs(styles: list[str]) -> list[tuple[int, int]]:
    return [(i, j) for i, j in itertools.permutations(range(len(styles)), 2)]


def params(**analysis: Any) -> Params:
    return Params.model_validate({"analysis": {"bootstrap_samples": 500, **analysis}})


def no_nan(text: str) -> None:
    """Fail on NaN/Infinity anywhere in a JSON document (json.loads accepts them by default)."""

    def refuse(token: str) -> None:
        raise AssertionError(f"non-finite number {token} in JSON")

    json.loads(text, parse_constant=refuse)


# --- rank statistics ---------------------------------------------------------------------------------


def _design(k: int, quality_of, spread: float = 0.0, seed: int = 0):
    """Every directed pair among k styles, quality_of(distance) +- `spread` over 3 seeds; correlate's inputs.

    A->B and B->A share a distance, so the seed offsets are the same for every pair: their means
    tie exactly as their distances do.
    """
    matrix = distinct_matrix(k, seed)
    pairs = all_pairs(list(range(k)))
    src = np.array([i for i, _ in pairs])
    tgt = np.array([j for _, j in pairs])
    distance = matrix[src, tgt]
    values = [quality_of(d) + spread * np.array([-1.0, 0.0, 1.0]) for d in distance]
    return values, distance, matrix, src, tgt


def test_perfectly_monotone_quality_gives_rho_one_ci_near_one_and_the_smallest_p():
    cfg = AnalysisConfig(bootstrap_samples=1000)
    values, d, m, src, tgt = _design(4, lambda d: 0.1 * d)
    exact = correlate(values, d, m, src, tgt, cfg, np.random.default_rng(0))
    assert exact["bootstrap"]["ci"] == pytest.approx([1.0, 1.0])
    # With seed spread, resampled seeds split the tie between A->B and B->A (one distance), so a
    # few resamples fall just short of 1.
    values, d, m, src, tgt = _design(4, lambda d: 0.1 * d, spread=0.001)
    r = correlate(values, d, m, src, tgt, cfg, np.random.default_rng(0))
    assert r["status"] == "estimated"
    assert r["rho"] == pytest.approx(1.0)
    lo, hi = r["bootstrap"]["ci"]
    assert 0.9 < lo <= hi <= 1.0
    # Every directed pair among 4 styles with distinct distances: only the identity relabelling
    # reproduces the ranking, so p = 1/4! exactly and that is also the design's floor.
    assert r["permutation"]["exact"] and r["permutation"]["relabellings"] == 24
    assert r["permutation"]["p"] == pytest.approx(1 / 24)
    assert r["permutation"]["p_min"] == pytest.approx(1 / 24)
    assert r["permutation"]["p_fraction"] == "1/24"


def test_reversed_quality_gives_rho_minus_one_and_a_ci_near_minus_one():
    values, d, m, src, tgt = _design(4, lambda d: -d, spread=0.001)
    r = correlate(
        values, d, m, src, tgt, AnalysisConfig(bootstrap_samples=1000), np.random.default_rng(1)
    )
    assert r["rho"] == pytest.approx(-1.0)
    lo, hi = r["bootstrap"]["ci"]
    assert -1.0 <= lo <= hi < -0.9
    assert r["permutation"]["p"] == pytest.approx(1 / 24)  # two-sided


def test_quality_independent_of_distance_gives_a_ci_that_covers_zero_and_a_large_p():
    rng = np.random.default_rng(5)
    values, d, m, src, tgt = _design(5, lambda d: 0.0)
    values = [rng.normal(size=3) for _ in values]
    r = correlate(
        values, d, m, src, tgt, AnalysisConfig(bootstrap_samples=1000), np.random.default_rng(2)
    )
    lo, hi = r["bootstrap"]["ci"]
    assert lo < 0 < hi
    assert r["permutation"]["p"] > 0.05
    assert r["permutation"]["relabellings"] == 120


@pytest.mark.parametrize("k", [4, 5, 6])
def test_smallest_achievable_p_is_one_over_k_factorial_with_every_directed_pair(k: int):
    m = distinct_matrix(k, seed=k)
    pairs = all_pairs(list(range(k)))
    src, tgt = np.array([i for i, _ in pairs]), np.array([j for _, j in pairs])
    quality = m[src, tgt]  # quality ranked exactly as distance: the most extreme outcome
    r = permutation_test(m, src, tgt, quality, 100, np.random.default_rng(0))
    assert r["relabellings"] == math.factorial(k)
    assert r["p"] == pytest.approx(1 / math.factorial(k))
    assert r["p_min"] == pytest.approx(1 / math.factorial(k))


def test_with_three_styles_the_reversed_ranking_is_a_relabelling_so_p_cannot_go_below_one_third():
    # Swapping the two styles of the middle distance swaps the shortest and the longest: rho = -1,
    # which a two-sided test counts as extreme as rho = +1. (With 4+ styles no relabelling reverses.)
    m = distinct_matrix(3, seed=3)
    pairs = all_pairs(list(range(3)))
    src, tgt = np.array([i for i, _ in pairs]), np.array([j for _, j in pairs])
    r = permutation_test(m, src, tgt, m[src, tgt], 100, np.random.default_rng(0))
    assert r["relabellings"] == 6
    assert r["p"] == pytest.approx(1 / 3) and r["p_min"] == pytest.approx(1 / 3)


def test_three_pairs_from_one_source_can_never_reach_p_below_one_third():
    """photo -> three targets among 4 styles: 8 of the 24 relabellings rank the distances the same or reversed."""
    m = distinct_matrix(4, seed=3)
    src, tgt = np.array([2, 2, 2]), np.array([0, 1, 3])
    r = permutation_test(m, src, tgt, m[src, tgt], 100, np.random.default_rng(0))
    assert r["p_min"] == pytest.approx(1 / 3) and r["p_min_fraction"] == "1/3"
    assert r["p"] == pytest.approx(1 / 3)
    for q in itertools.permutations([0.1, 0.2, 0.3]):  # no outcome does better than p_min
        assert (
            permutation_test(m, src, tgt, np.array(q), 100, np.random.default_rng(0))["p"]
            >= r["p_min"] - 1e-12
        )


def test_more_than_seven_styles_sample_relabellings_and_never_give_p_zero():
    k = 8
    m = distinct_matrix(k, seed=8)
    pairs = all_pairs(list(range(k)))
    src, tgt = np.array([i for i, _ in pairs]), np.array([j for _, j in pairs])
    r = permutation_test(m, src, tgt, m[src, tgt], 300, np.random.default_rng(0))
    assert not r["exact"] and r["relabellings"] == 301
    assert r["p"] == pytest.approx(1 / 301)  # the observed labelling is counted


def test_spearman_handles_ties_and_constant_inputs():
    assert spearman([1, 2, 2, 3], [1, 2, 2, 3]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [5, 5, 5]) is None
    assert spearman([1], [2]) is None


def test_too_few_pairs_or_constant_distance_is_not_estimable_with_a_reason():
    m = distinct_matrix(4)
    cfg = AnalysisConfig(bootstrap_samples=100)
    rng = np.random.default_rng(0)
    two = correlate(
        [np.array([0.1]), np.array([0.2])],
        np.array([1.0, 2.0]),
        m,
        np.array([0, 1]),
        np.array([1, 2]),
        cfg,
        rng,
    )
    assert two["status"] == "not_estimable" and "at least 3" in two["reason"] and two["rho"] is None
    flat = correlate(
        [np.array([v]) for v in (0.1, 0.2, 0.3)],
        np.ones(3),
        m,
        np.array([0, 1, 2]),
        np.array([1, 2, 3]),
        cfg,
        rng,
    )
    assert flat["status"] == "not_estimable" and "same distance" in flat["reason"]


# --- measures, asymmetry, target difficulty ------------------------------------------------------------


def test_measures_derive_the_floor_normalised_gain_and_deception_against_its_ceiling():
    r = fake_record("photo-inkwash", 0, 0.5, deception=0.45, source_kid=0.02, floor=0.004)
    m = measures_of(r, "gan")
    assert m["kid_gain"] == pytest.approx(0.5)
    # KID(G(A), B) = 0.01: (0.01 - 0.004) / (0.02 - 0.004) of the gap above the floor remains
    assert m["kid_gain_floor"] == pytest.approx(1 - 0.006 / 0.016)
    assert m["deception_vs_ceiling"] == pytest.approx(0.45 / 0.9)
    r["reference"]["target_real"]["style_accuracy"] = 0.0
    assert measures_of(r, "gan")["deception_vs_ceiling"] is None


def _analysis(tmp_path: Path, records: list[dict], styles=STYLES4, matrix=None, **cfg) -> dict:
    matrix = distinct_matrix(len(styles)) if matrix is None else matrix
    return analyze_records(params(**cfg), records, culture_dict(styles, matrix), tmp_path / "out")


def test_findings_give_the_gans_verdict_in_the_texture_space_and_name_the_pairs_it_loses(tmp_path: Path):
    records = []
    for pair, texture in (("photo-inkwash", 0.6), ("photo-ukiyoe", -0.2), ("ukiyoe-photo", 0.4)):
        r = fake_record(pair, 0, 0.5)
        gains = {"gan": texture, "identity": 0.0, "reinhard": 0.1, "histogram": -0.1}
        for method, gain in gains.items():
            if method in r["methods"]:
                r["methods"][method]["kid_texture_relative_gain"] = gain
        records.append(r)
    a = _analysis(tmp_path, records)
    finding = next(f for f in a["summary"]["findings"] if f.startswith("In the training-free texture space"))
    assert "beats the best baseline in 2 of 3 directed pairs; not in photo-ukiyoe." in finding
    rows = {p["pair"]: p for p in a["pairs"]}
    assert rows["photo-ukiyoe"]["margin"]["kid_gain_texture"]["value"] == pytest.approx(-0.3)
    # the primary measure itself: no second sentence about it; without the space: none at all
    same = _analysis(tmp_path, records, primary_metric="kid_gain_texture")
    assert not any(f.startswith("In the training-free") for f in same["summary"]["findings"])
    plain = _analysis(tmp_path, [fake_record("photo-inkwash", 0, 0.5)])
    assert not any(f.startswith("In the training-free") for f in plain["summary"]["findings"])


def test_asymmetry_table_has_both_directions_and_the_signed_difference(tmp_path: Path):
    records = []
    for seed in range(3):
        records += [
            fake_record("inkwash-photo", seed, 0.8 + 0.01 * seed),
            fake_record("photo-inkwash", seed, 0.3 + 0.01 * seed),
            fake_record("photo-ukiyoe", seed, 0.5),  # one direction only: not in the table
        ]
    a = _analysis(tmp_path, records)
    assert len(a["asymmetry"]) == 1
    row = a["asymmetry"][0]
    assert (row["forward"], row["backward"]) == ("inkwash-photo", "photo-inkwash")
    gain = row["measures"]["kid_gain"]
    assert gain["difference"] == pytest.approx(0.5)
    assert gain["se"] == pytest.approx(math.sqrt(2 * 0.01**2 / 3))  # seed SD 0.01 on each side
    # A lower-is-better measure keeps the same convention: forward minus backward.
    hell = row["measures"]["gt_hist_hellinger"]
    assert (
        hell["difference"] == pytest.approx(hell["forward"]["mean"] - hell["backward"]["mean"])
        and hell["difference"] < 0
    )
    assert row["distance"] == pytest.approx(a["pairs"][0]["distance"]["combined"])
    assert (tmp_path / "out" / "asymmetry.png").is_file()


def test_margin_over_the_best_baseline_is_signed_and_leaves_identity_out_of_content(tmp_path: Path):
    a = _analysis(tmp_path, [fake_record("photo-inkwash", 0, 0.6, edge=0.8, baseline_gain=0.9)])
    margin = a["pairs"][0]["margin"]
    assert margin["kid_gain"]["value"] == pytest.approx(0.6 - 0.9)
    assert margin["kid_gain"]["best_baseline"] == "reinhard"
    # identity keeps content perfectly (1.0) by doing nothing; the best real rival is reinhard (0.7)
    assert margin["content_edge_ssim"]["best_baseline"] == "reinhard"
    assert margin["content_edge_ssim"]["value"] == pytest.approx(0.1)
    # lower is better: a positive margin still means the GAN is better
    assert margin["gt_hist_hellinger"]["value"] > 0


def with_members(record: dict[str, Any], gan: list[float], rival: list[float]) -> dict[str, Any]:
    """`record` scored by an ensemble of len(gan) classifiers: per member, the GAN's relative KID
    gain and reinhard's (histogram scores half of reinhard's, identity 0), as evaluate writes them."""
    record["classifier_members"] = {
        "seeds": [7 + k for k in range(len(gan))],
        "measure": "kid_classifier_relative_gain",
        "methods": {
            "gan": list(gan),
            "identity": [0.0] * len(gan),
            "reinhard": list(rival),
            "histogram": [r / 2 for r in rival],
        },
        "controls": {},
    }
    return record


def test_the_verdict_is_reported_per_classifier_run_with_pairs_won_lost_or_split(tmp_path: Path):
    """An ensemble's members each give a verdict; the analysis counts wins per member and says
    which directed pairs are won in every run, lost in every run, or depend on the run."""
    records = []
    for seed in range(2):
        records += [
            # won in all three runs; the margin is the mean over the two training seeds
            with_members(
                fake_record("photo-ukiyoe", seed, 0.5),
                [0.6 + 0.1 * seed, 0.7, 0.8],
                [0.4, 0.5, 0.6],
            ),
            # the best rival is identity (0) when reinhard's gain is negative: lost in every run
            with_members(
                fake_record("photo-inkwash", seed, 0.5), [-0.2, -0.1, -0.3], [-0.5, -0.4, -0.6]
            ),
            # split: won in run 1 only
            with_members(fake_record("ukiyoe-photo", seed, 0.5), [0.3, 0.5, 0.2], [0.4, 0.4, 0.4]),
        ]
    a = _analysis(tmp_path, records)
    runs = a["classifier_runs"]
    assert runs["members"] == 3 and runs["seeds"] == [7, 8, 9] and runs["n_pairs"] == 3
    rows = {r["pair"]: r for r in runs["pairs"]}
    assert [r["pair"] for r in runs["pairs"]] == ["photo-inkwash", "photo-ukiyoe", "ukiyoe-photo"]
    assert rows["photo-ukiyoe"]["margins"] == pytest.approx([0.65 - 0.4, 0.2, 0.2])
    assert rows["photo-ukiyoe"]["best_baselines"] == ["reinhard"] * 3
    assert rows["photo-inkwash"]["margins"] == pytest.approx([-0.2, -0.1, -0.3])
    assert rows["photo-inkwash"]["best_baselines"] == ["identity"] * 3
    assert rows["ukiyoe-photo"]["wins"] == 1 and rows["ukiyoe-photo"]["runs"] == 3
    assert rows["ukiyoe-photo"]["mean"] == pytest.approx((-0.1 + 0.1 - 0.2) / 3)
    assert rows["ukiyoe-photo"]["sd"] == pytest.approx(np.std([-0.1, 0.1, -0.2], ddof=1))
    assert runs["wins_per_member"] == [1, 2, 1]
    assert (runs["wins_min"], runs["wins_median"], runs["wins_max"]) == (1, 1.0, 2)
    assert runs["won_in_every_run"] == ["photo-ukiyoe"]
    assert runs["lost_in_every_run"] == ["photo-inkwash"]
    assert runs["depends_on_the_run"] == ["ukiyoe-photo"]
    finding = next(f for f in a["summary"]["findings"] if f.startswith("Across"))
    assert "Across 3 training runs of the style classifier (seeds 7, 8, 9)" in finding
    assert "in 1 to 2 (median 1) of 3 directed pairs" in finding
    assert (
        "of 3 directed pairs. Won in every run: photo-ukiyoe; lost in every run: photo-inkwash; "
        in finding
    )
    assert "won or lost depending on the run: ukiyoe-photo." in finding


def test_the_correlation_with_distance_is_given_per_classifier_run_and_a_flipping_sign_is_said(
    tmp_path: Path,
):
    """Each classifier run's Spearman rho between the GAN's gain and the combined distance: here
    run 0 ranks the pairs exactly as the distance, run 1 exactly reversed."""
    matrix = distinct_matrix(4)
    pairs = [(i, j) for i, j in all_pairs(STYLES4) if i < j]  # distinct distances: no ties
    dist = [matrix[i, j] for i, j in pairs]
    order = np.argsort(np.argsort(dist)) / 10  # 0 .. 0.4, rising with the distance
    records = [
        with_members(
            fake_record(f"{STYLES4[i]}-{STYLES4[j]}", 0, 0.5), [0.3 + o, 0.7 - o], [0.0, 0.0]
        )
        for (i, j), o in zip(pairs, order, strict=True)
    ]
    a = _analysis(tmp_path, records, matrix=matrix)
    assert a["classifier_runs"]["rho_per_member"] == pytest.approx([1.0, -1.0])
    rows = {r["pair"]: r for r in a["classifier_runs"]["pairs"]}
    assert rows["impressionist-inkwash"]["gan_gains"] == pytest.approx(
        [0.3 + order[0], 0.7 - order[0]]
    )
    finding = next(f for f in a["summary"]["findings"] if f.startswith("Spearman's ρ between the GAN"))
    assert finding.startswith(
        "Spearman's ρ between the GAN's relative KID gain and the combined cultural"
    )
    assert "distance ranges from -1.00 to +1.00 over the 2 classifier runs:" in finding
    assert finding.endswith("its sign depends on the classifier's training run.")
    # the two runs rank the directed pairs in opposite orders
    assert a["classifier_runs"]["rank_agreement"] == pytest.approx([-1.0])
    agreement = a["summary"]["findings"][-1]
    assert agreement.startswith(
        "How the classifier runs rank the directed pairs by the GAN's relative KID gain agrees "
        "with Spearman's ρ -1.00, where 1 is the same order in every run"
    )


def test_how_alike_the_classifier_runs_rank_the_directed_pairs_is_given_for_every_two_runs(
    tmp_path: Path,
):
    """Three runs over four directed pairs: runs 0 and 1 rank the pairs alike, run 2 in reverse
    order, so the three pairs of runs agree with rho 1, -1 and -1. A pair that one run could not
    score is left out of that run's comparisons only."""
    gains = {
        "photo-inkwash": [0.1, 0.2, 0.9],
        "photo-ukiyoe": [0.2, 0.3, 0.8],
        "inkwash-photo": [0.3, 0.4, 0.7],
        "ukiyoe-photo": [0.4, 0.5, 0.6],
    }
    records = [with_members(fake_record(pair, 0, 0.5), g, [0.0] * 3) for pair, g in gains.items()]
    a = _analysis(tmp_path / "three", records)
    runs = a["classifier_runs"]
    assert runs["rank_agreement"] == pytest.approx([1.0, -1.0, -1.0])
    assert (runs["rank_agreement_min"], runs["rank_agreement_median"], runs["rank_agreement_max"]) == (
        pytest.approx(-1.0),
        pytest.approx(-1.0),
        pytest.approx(1.0),
    )
    finding = a["summary"]["findings"][-1]
    assert "Spearman's ρ -1.00 to +1.00 (median -1.00, 3 pairs of runs)" in finding
    html = render_report(a, tmp_path / "three").read_text(encoding="utf-8")
    assert "(Spearman's &rho; between every two runs, 3 in all; 1: the same order): <b>-1.000 to +1.000</b>, median -1.000." in html

    # run 1 lost one pair's score: runs 0 and 2 still compare over four pairs, run 1 over three
    records[1]["classifier_members"]["methods"]["gan"][1] = float("nan")
    runs = _analysis(tmp_path / "missing", records)["classifier_runs"]
    assert runs["rank_agreement"] == pytest.approx([1.0, -1.0, -1.0])
    # with two pairs left a run's order says nothing (MIN_PAIRS): no agreement, no finding
    two = _analysis(tmp_path / "two", records[:2])
    assert two["classifier_runs"]["rank_agreement"] == []
    assert two["classifier_runs"]["rank_agreement_median"] is None
    assert not any(f.startswith("How the classifier runs rank") for f in two["summary"]["findings"])


def test_without_an_ensemble_there_is_no_per_run_verdict_and_a_partial_one_is_an_error(
    tmp_path: Path,
):
    a = _analysis(tmp_path / "plain", [fake_record("photo-ukiyoe", 0, 0.5)])
    assert a["classifier_runs"] is None
    assert not any("training runs of the style classifier" in f for f in a["summary"]["findings"])
    # an ensemble, but baselines only (no GAN evaluated): no verdict, and no error
    only = with_members(fake_record("photo-ukiyoe", 0, 0.5), [0.5, 0.5], [0.1, 0.1])
    del only["methods"]["gan"], only["classifier_members"]["methods"]["gan"]
    assert _analysis(tmp_path / "baselines", [only])["classifier_runs"] is None
    mixed = [
        with_members(fake_record("photo-ukiyoe", 0, 0.5), [0.5, 0.5], [0.1, 0.1]),
        fake_record("photo-inkwash", 0, 0.5),
    ]
    with pytest.raises(SourceError, match="photo-inkwash.*no per-classifier GAN scores"):
        _analysis(tmp_path / "mixed", mixed)
    sizes = [
        with_members(fake_record("photo-ukiyoe", 0, 0.5), [0.5, 0.5], [0.1, 0.1]),
        with_members(fake_record("photo-inkwash", 0, 0.5), [0.5, 0.5, 0.5], [0.1, 0.1, 0.1]),
    ]
    with pytest.raises(SourceError, match=r"ensembles of different sizes \[2, 3\]"):
        _analysis(tmp_path / "sizes", sizes)


def test_target_difficulty_averages_each_target_over_its_sources(tmp_path: Path):
    records = [
        fake_record("photo-ukiyoe", 0, 0.2),
        fake_record("inkwash-ukiyoe", 0, 0.4),
        fake_record("photo-inkwash", 0, 0.9, floor=0.001),
    ]
    a = _analysis(tmp_path, records)
    per_target = {row["style"]: row for row in a["target_difficulty"]["per_target"]}
    assert per_target["ukiyoe"]["mean"] == pytest.approx(0.3)
    assert per_target["ukiyoe"]["pairs"] == ["inkwash-ukiyoe", "photo-ukiyoe"]
    assert per_target["inkwash"]["kid_floor"] == pytest.approx(0.001)


# --- the whole analysis --------------------------------------------------------------------------------


def test_known_correlation_over_all_directed_pairs_is_found_and_stated_without_overclaiming(
    tmp_path: Path,
):
    m = distinct_matrix(4, seed=1)
    records = [
        fake_record(f"{STYLES4[i]}-{STYLES4[j]}", seed, 0.9 - 0.05 * m[i, j] + 0.001 * seed)
        for i, j in all_pairs(STYLES4)
        for seed in range(3)
    ]
    a = _analysis(tmp_path, records, matrix=m)
    p = a["primary_correlation"]
    assert p["rho"] == pytest.approx(-1.0)
    assert p["permutation"]["p"] == pytest.approx(1 / 24)
    sentence = a["summary"]["sentence"]
    assert "12 directed pairs among 4 styles" in sentence and "p = 1/24" in sentence
    assert "pre-specified" in sentence and "significan" not in sentence.lower()
    # the reversed 'texture' view turns the sign around
    texture = next(
        r for r in a["correlations"] if r["measure"] == "kid_gain" and r["view"] == "texture"
    )
    assert texture["rho"] == pytest.approx(1.0)


def test_three_photo_pairs_are_called_indistinguishable_from_chance_whatever_the_result(
    tmp_path: Path,
):
    m = distinct_matrix(4, seed=2)
    photo = STYLES4.index("photo")
    records = [
        fake_record(f"photo-{t}", s, 0.1 * m[photo, STYLES4.index(t)] + 0.01 * s)
        for t in ("inkwash", "ukiyoe", "impressionist")
        for s in range(3)
    ]
    a = _analysis(tmp_path, records, matrix=m)
    assert a["primary_correlation"]["rho"] == pytest.approx(1.0)
    sentence = a["summary"]["sentence"]
    assert sentence.startswith(
        "With 3 directed pairs among 4 styles, no correlation can be distinguished from chance"
    )
    assert "1/3" in sentence and "descriptive" in sentence


def test_one_pair_one_seed_says_no_correlation_can_be_estimated_and_writes_no_nan(tmp_path: Path):
    metrics = tmp_path / "eval" / "anything" / "metrics.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text(json.dumps(fake_record("photo-inkwash", 0, 0.4, gt=False)))
    culture = tmp_path / "culture.json"
    culture.write_text(json.dumps(culture_dict(STYLES4, distinct_matrix(4))))
    a = analyze(params(), [metrics], culture, tmp_path / "out")
    assert "1 directed pair among 4 styles, no correlation" in a["summary"]["sentence"]
    assert "can be estimated" in a["summary"]["sentence"]
    assert all(r["status"] == "not_estimable" for r in a["correlations"])
    assert a["asymmetry"] == [] and a["within_target"]["status"] == "not_estimable"
    no_nan((tmp_path / "out" / "analysis.json").read_text())
    for name in ("scatter.png", "methods.png", "culture.png", "tidy.csv"):
        assert (tmp_path / "out" / name).is_file()


def test_pairs_and_seeds_come_from_file_content_not_paths(tmp_path: Path):
    paths = []
    for k, (pair, seed) in enumerate(
        [("photo-ukiyoe", 4), ("photo-ukiyoe", 1), ("inkwash-photo", 4)]
    ):
        path = tmp_path / f"misleading-{k}" / "seed9" / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(fake_record(pair, seed, 0.5)))
        paths.append(path)
    records = load_metrics(paths)
    a = analyze_records(
        params(), records, culture_dict(STYLES4, distinct_matrix(4)), tmp_path / "out"
    )
    seeds = {p["pair"]: p["seeds"] for p in a["pairs"]}
    assert seeds == {"photo-ukiyoe": [1, 4], "inkwash-photo": [4]}


def test_the_same_pair_and_seed_twice_is_an_error_naming_both_files(tmp_path: Path):
    paths = []
    for k in range(2):
        path = tmp_path / f"copy{k}" / "metrics.json"
        path.parent.mkdir()
        path.write_text(json.dumps(fake_record("photo-ukiyoe", 0, 0.5)))
        paths.append(path)
    with pytest.raises(SourceError, match=r"copy0.*copy1|copy1.*copy0"):
        load_metrics(paths)


def test_malformed_metrics_and_culture_files_are_source_errors_naming_the_file(tmp_path: Path):
    bad = tmp_path / "metrics.json"
    bad.write_text("{not json")
    with pytest.raises(SourceError, match="metrics.json is not valid JSON"):
        load_metrics([bad])
    bad.write_text(
        json.dumps({"pair": "a-b", "source": "a", "target": "b", "seed": "zero", "methods": {}})
    )
    with pytest.raises(SourceError, match="'seed' is missing or not a int"):
        load_metrics([bad])
    good = tmp_path / "good" / "metrics.json"
    good.parent.mkdir()
    good.write_text(json.dumps(fake_record("photo-ukiyoe", 0, 0.5)))
    culture = tmp_path / "culture.json"
    culture.write_text(json.dumps({"styles": STYLES4}))
    with pytest.raises(SourceError, match="culture.json: keys 'styles' and 'combined'"):
        analyze(params(), [good], culture, tmp_path / "out")
    with pytest.raises(SourceError, match="not found"):
        analyze(params(), [good], tmp_path / "missing.json", tmp_path / "out")


def test_baselines_only_say_nothing_about_the_gan():
    design = {"n_pairs_scored": 0, "n_styles": 4, "has_gan": False}
    assert honest_sentence(design, None, AnalysisConfig()).startswith("No GAN output was evaluated")


def test_analysis_is_deterministic_for_a_seed(tmp_path: Path):
    records = [
        fake_record(f"photo-{t}", s, 0.2 * i + 0.05 * s)
        for i, t in enumerate(STYLES4)
        if t != "photo"
        for s in range(2)
    ]
    records += [fake_record("inkwash-ukiyoe", s, 0.7) for s in range(2)]
    first = _analysis(tmp_path / "a", records)
    second = _analysis(tmp_path / "b", records)
    assert first["correlations"] == second["correlations"]
