"""The metric-validity table: a metric passes only if the truth beats every control in every pair."""

from __future__ import annotations

from culturegan.evaluation.measures import CONTENT_MEASURES, MEASURES, measures_of
from culturegan.evaluation.validity import metric_validity


def _record(pair: str, gt: dict[str, float], kid: dict[str, float], edge: dict[str, float]) -> dict:
    controls = {
        name: {"gt_ssim": gt[name], "kid_classifier_relative_gain": kid[name], "content_edge_ssim": edge[name]}
        for name in gt
    }
    return {"pair": pair, "seed": 0, "methods": {}, "controls": controls, "reference": {}}


NAMES = ("truth", "truth_noise", "truth_blur", "colour_transfer", "source")


def test_a_metric_passes_when_the_truth_wins_everywhere_and_fails_on_one_lost_pair():
    gt = dict(zip(NAMES, (1.0, 0.6, 0.6, 0.3, 0.2), strict=True))
    edge = dict(zip(NAMES, (0.2, 0.1, 0.1, 0.9, 1.0), strict=True))  # source wins: by construction
    fooled = dict(zip(NAMES, (1.0, 0.5, 0.5, 1.1, 0.0), strict=True))  # colour transfer beats truth
    fine = dict(zip(NAMES, (1.0, 0.5, 0.5, 0.2, 0.0), strict=True))
    records = [_record("a-b", gt, fine, edge), _record("b-a", gt, fooled, edge)]
    v = metric_validity(records, MEASURES, measures_of, CONTENT_MEASURES, "kid_gain")
    rows = {r["measure"]: r for r in v["rows"]}
    assert rows["gt_ssim"]["passes"] is True
    assert rows["gt_ssim"]["controls"]["source"] == {"mean_margin": 0.8, "min_margin": 0.8, "wins": 2, "pairs": 2}
    kid = rows["kid_gain"]
    assert kid["passes"] is False and kid["primary"] is True
    assert kid["controls"]["colour_transfer"]["wins"] == 1
    assert v["primary_passes"] is False
    # content metrics are tested only against noise and blur (the source scores 1 by construction)
    assert set(rows["content_edge_ssim"]["controls"]) == {"truth_noise", "truth_blur"}
    assert rows["content_edge_ssim"]["passes"] is True


def test_records_without_a_truth_give_no_rows():
    v = metric_validity([{"pair": "a-b", "methods": {}, "controls": {}}], MEASURES, measures_of, CONTENT_MEASURES, "kid_gain")
    assert v == {"rows": [], "controls": v["controls"], "primary_passes": None}


def test_a_failing_primary_metric_leads_the_findings_with_what_it_lost_to():
    from culturegan.config import AnalysisConfig
    from culturegan.evaluation.findings import validity_findings

    gt = dict(zip(NAMES, (1.0, 0.6, 0.6, 0.3, 0.2), strict=True))
    edge = dict(zip(NAMES, (0.2, 0.1, 0.1, 0.9, 1.0), strict=True))
    fooled = dict(zip(NAMES, (1.0, 0.5, 0.5, 1.1, 0.0), strict=True))
    v = metric_validity([_record("a-b", gt, fooled, edge)], MEASURES, measures_of, CONTENT_MEASURES, "kid_gain")
    (line,) = validity_findings(v, AnalysisConfig(primary_metric="kid_gain"))
    assert "FAILS" in line and "colour-only transfer (0/1 pairs)" in line
    passing = metric_validity([_record("a-b", gt, gt, edge)], MEASURES, measures_of, CONTENT_MEASURES, "gt_ssim")
    assert "ranks the true rendering above every control" in validity_findings(passing, AnalysisConfig(primary_metric="gt_ssim"))[0]
