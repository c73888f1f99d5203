"""The HTML report: self-contained, escaped, one metrics table per pair; its MLflow upload; the whole stage on tiny real data."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from test_analysis import STYLES4, culture_dict, distinct_matrix, fake_record, params, with_members

from culturegan.config import Pair, Params, TrackingConfig
from culturegan.evaluation.analysis import analyze_records, write_analysis
from culturegan.evaluation.report import fmt, log_report_to_mlflow, render_report


class Page(HTMLParser):
    """Collects <img src>, every href/src, element names, and each <table> as header and body rows."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.imgs: list[str] = []
        self.refs: list[str] = []
        self.tags: list[str] = []
        self.tables: list[dict[str, Any]] = []
        self._table: dict[str, Any] | None = None
        self._row: list[dict[str, Any]] | None = None
        self._cell: dict[str, Any] | None = None
        self._section = "body"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        for key in ("src", "href"):
            if a.get(key) is not None:
                self.refs.append(a[key])
        if tag == "img":
            self.imgs.append(a.get("src") or "")
        elif tag == "table":
            self._table = {"attrs": a, "head": [], "body": []}
        elif tag in ("thead", "tbody"):
            self._section = "head" if tag == "thead" else "body"
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("th", "td") and self._row is not None:
            self._cell = {"tag": tag, "text": "", "class": a.get("class") or ""}

    def handle_endtag(self, tag: str) -> None:
        if tag in ("th", "td") and self._cell is not None and self._row is not None:
            self._cell["text"] = " ".join(self._cell["text"].split())
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            self._table[self._section].append(self._row)
            self._row = None
        elif tag == "table" and self._table is not None:
            self.tables.append(self._table)
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell["text"] += data


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    return page


def write_grid(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 48, 3), 128, np.uint8)).save(folder / "grid.png")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    """Four directed pairs x 2 seeds (one pair with an Inception space), grids beside the metrics, rendered."""
    root = tmp_path_factory.mktemp("report")
    records = []
    for pair, gain in (
        ("photo-inkwash", 0.8),
        ("inkwash-photo", 0.6),
        ("photo-ukiyoe", 0.2),
        ("photo-impressionist", 0.5),
    ):
        for seed in range(2):
            r = fake_record(pair, seed, gain + 0.01 * seed)
            if pair == "photo-ukiyoe":
                for method in r["methods"].values():
                    method |= {
                        "kid_inception": 0.5,
                        "fid_inception": 20.0,
                        "kid_inception_relative_gain": 0.1,
                    }
            folder = root / "eval" / pair / f"seed{seed}"
            write_grid(folder)
            r["_file"] = str(folder / "metrics.json")
            records.append(r)
    classifier = {
        "styles": STYLES4,
        "test_accuracy": 0.9,
        "test_accuracy_per_style": dict.fromkeys(STYLES4, 0.9),
        "confusion": {
            "rows": "true style",
            "columns": "predicted style",
            "matrix": (np.eye(4, dtype=int) * 9 + 1).tolist(),
        },
    }
    out = root / "out"
    analysis = analyze_records(
        params(),
        records,
        culture_dict(STYLES4, distinct_matrix(4)),
        out,
        classifier,
        {"photo-inkwash": "0123abcd"},
    )
    index = render_report(analysis, out)
    return out, analysis, index.read_text(encoding="utf-8")


def test_every_image_is_a_file_inside_the_report_folder(report):
    out, analysis, html = report
    page = parse(html)
    assert len(page.imgs) >= 4 + 3  # a grid per pair, scatter, heatmap, methods (+ asymmetry)
    for src in page.imgs:
        assert not src.startswith(("/", "http", "file:")) and ".." not in src
        assert (out / src).is_file(), src
    grids = [s for s in page.imgs if s.startswith("grids/")]
    assert len(grids) == len(analysis["pairs"])


def test_report_folder_is_portable_and_loads_nothing_from_the_network(report, tmp_path: Path):
    out, _, html = report
    page = parse(html)
    assert "script" not in page.tags and "link" not in page.tags
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|@import|url\(", html, re.IGNORECASE)
    assert all(r.startswith("#") or not re.match(r"[a-z]+:", r) for r in page.refs)
    moved = tmp_path / "copy"
    shutil.copytree(out, moved)
    for src in page.imgs:
        assert (moved / src).is_file()


def test_each_pair_has_one_metrics_table_with_a_row_per_method_and_named_feature_spaces(report):
    _, analysis, html = report
    tables = [t for t in parse(html).tables if t["attrs"].get("class") == "metrics"]
    assert [t["attrs"]["data-pair"] for t in tables] == [p["pair"] for p in analysis["pairs"]]
    for table, pair in zip(tables, analysis["pairs"], strict=True):
        groups, metrics = (" | ".join(c["text"] for c in row) for row in table["head"])
        assert "classifier feature space (trained in this pipeline)" in groups
        for label in (
            "KID \u2193",
            "FID \u2193",
            "relative KID gain \u2191",
            "deception rate \u2191",
            "content edge SSIM \u2191",
            "SSIM to truth \u2191",
            "histogram distance to truth \u2193",
        ):
            assert label in metrics
        assert [row[0]["text"] for row in table["body"]] == [
            "gan",
            "identity",
            "reinhard",
            "histogram",
        ]
        assert all(len(row) == len(table["head"][1]) + 1 for row in table["body"])
    ukiyoe = tables[[p["pair"] for p in analysis["pairs"]].index("photo-ukiyoe")]
    assert "Inception-v3 (local weights)" in " ".join(c["text"] for c in ukiyoe["head"][0])


def test_best_value_per_metric_is_bold_in_the_right_direction(report):
    _, analysis, html = report
    table = next(t for t in parse(html).tables if t["attrs"].get("data-pair") == "photo-inkwash")
    header = [c["text"] for c in table["head"][1]]
    rows = {row[0]["text"]: row[1:] for row in table["body"]}
    gain = header.index("relative KID gain \u2191")
    kid = header.index("KID \u2193")
    # the GAN closes 80 % of the gap, reinhard 30 %: highest gain and lowest KID are the GAN's
    assert "best" in rows["gan"][gain]["class"] and "best" not in rows["reinhard"][gain]["class"]
    assert "best" in rows["gan"][kid]["class"] and "best" not in rows["identity"][kid]["class"]
    edge = header.index("content edge SSIM \u2191")
    assert "best" in rows["identity"][edge]["class"]  # doing nothing keeps every edge
    stats = next(p for p in analysis["pairs"] if p["pair"] == "photo-inkwash")["metrics"]["gan"]
    s = stats["kid_classifier_relative_gain"]
    assert (
        rows["gan"][gain]["text"] == f"{fmt(s['mean'])} \u00b1 {fmt(s['sd'], 2)}"
    )  # mean and seed SD


def test_summary_statistics_asymmetry_classifier_and_run_sections_are_filled(report):
    _, analysis, html = report
    page = parse(html)
    assert analysis["summary"]["sentence"].replace("'", "&#39;") in html
    by_id = {t["attrs"].get("id"): t for t in page.tables}
    primary = by_id["correlations-primary"]["body"]
    assert primary[0][0]["text"].endswith("(pre-specified)") and len(primary) == len(
        analysis["culture"]["views"]
    )
    asym = by_id["asymmetry-table"]["body"]
    assert [(r[0]["text"], r[1]["text"]) for r in asym] == [("inkwash-photo", "photo-inkwash")]
    assert asym[0][4]["text"].startswith("-")  # 0.6 - 0.8
    confusion = by_id["confusion"]
    assert [c["text"] for c in confusion["head"][0]][1:5] == STYLES4
    assert [c["text"] for c in confusion["body"][0]][1:5] == ["10", "1", "1", "1"]
    runs = [[c["text"] for c in row] for row in by_id["run-ids"]["body"]]
    assert ["photo-inkwash", "photo-inkwash", "0123abcd"] in runs
    assert ["inkwash-photo", "\u2014", "\u2014"] in runs  # evaluated, but no run id was found
    assert "<details><summary>Effective parameters" in html and "primary_metric: kid_gain" in html
    for words in ("closed-set", "Few domains", "Synthetic data"):
        assert words in html


def test_text_from_metrics_files_is_escaped_not_injected(tmp_path: Path):
    evil = fake_record("<script>alert(1)</script>-photo", 0, 0.5)
    evil["source"] = "<script>alert(1)</script>"
    evil["methods"]['<img src=x onerror="boom">'] = evil["methods"].pop("histogram")
    evil["skipped"] = {"gatys": "</p><iframe src=javascript:alert(2)>"}
    culture = culture_dict(STYLES4, distinct_matrix(4))
    analysis = analyze_records(
        params(), [evil], culture, tmp_path / "out", run_ids={"<b>x</b>": "<i>id</i>"}
    )
    html = render_report(analysis, tmp_path / "out").read_text(encoding="utf-8")
    page = parse(html)
    assert "script" not in page.tags and "iframe" not in page.tags and "i" not in page.tags
    assert all(src in ("scatter.png", "methods.png", "culture.png") for src in page.imgs)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=&#34;boom&#34;&gt;" in html
    table = next(t for t in page.tables if t["attrs"].get("class") == "metrics")
    assert (
        table["attrs"]["data-pair"] == "<script>alert(1)</script>-photo"
    )  # escaped in the attribute, decoded by the parser


def test_one_pair_one_seed_report_has_no_nan_and_says_no_correlation(tmp_path: Path):
    analysis = analyze_records(
        params(),
        [fake_record("photo-inkwash", 0, 0.4, gt=False)],
        culture_dict(STYLES4, distinct_matrix(4)),
        tmp_path,
    )
    html = render_report(analysis, tmp_path).read_text(encoding="utf-8")
    assert not re.search(r"\b(nan|NaN|inf|Infinity|None)\b", html)
    assert "no correlation between relative KID gain and cultural distance can be estimated" in html
    assert "No pair was evaluated in both directions" in html
    assert fmt(float("nan")) == fmt(None) == "\u2014"


def test_the_synthetic_data_caveat_is_shown_only_for_synthetic_data(tmp_path: Path):
    records = [fake_record("photo-inkwash", 0, 0.5)]
    culture = culture_dict(STYLES4, distinct_matrix(4))
    for source, shown in (("synthetic", True), (str(tmp_path / "paintings"), False)):
        real = Params.model_validate(
            {"data": {"source": source}, "analysis": {"bootstrap_samples": 200}}
        )
        out = tmp_path / ("synthetic" if shown else "real")
        analysis = analyze_records(real, records, culture, out)
        html = render_report(analysis, out).read_text(encoding="utf-8")
        assert ("Synthetic data" in html) is shown, source
        assert any(c.startswith("Synthetic data") for c in analysis["caveats"]) is shown
        assert "Few domains" in html  # the other caveats hold for any data


def test_an_unequal_cycle_weighting_is_named_as_a_caveat_on_the_asymmetry(tmp_path: Path):
    """source_cycle_scale != 1 trains A->B and B->A unequally: the report must say so, since its
    asymmetry figure compares exactly those two. Not for the symmetric recipe, nor for CUT (one
    model per direction, no cycle)."""
    records = [fake_record("photo-inkwash", 0, 0.5)]
    culture = culture_dict(STYLES4, distinct_matrix(4))
    for name, train, shown in (
        ("half", {"cyclegan": {"source_cycle_scale": 0.5}}, True),
        ("equal", {}, False),
        ("cut", {"objective": "cut", "cyclegan": {"source_cycle_scale": 0.5}}, False),
    ):
        params = Params.model_validate({"train": train, "analysis": {"bootstrap_samples": 200}})
        out = tmp_path / name
        analysis = analyze_records(params, records, culture, out)
        unequal = [c for c in analysis["caveats"] if c.startswith("Unequal recipe")]
        assert bool(unequal) is shown, name
        html = render_report(analysis, out).read_text(encoding="utf-8")
        assert ("Unequal recipe" in html) is shown, name
        if shown:
            assert "source_cycle_scale is 0.5" in unequal[0]


def test_a_style_classifier_at_chance_is_the_first_caveat(tmp_path: Path):
    """KID, FID and the deception rate live in the classifier's feature space: a classifier that a
    binomial test cannot tell from guessing (the GPU check's 256 px run at stop 42: 0.50 on two
    styles) must be named, first, and a good one must not be."""
    records = [fake_record("photo-inkwash", 0, 0.5)]
    culture = culture_dict(STYLES4, distinct_matrix(4))
    n_test = {s: 24 for s in STYLES4}  # 96 held-out images, guessing gives 0.25
    for name, accuracy, shown in (("chance", 0.25, True), ("weak", 0.30, True),
                                  ("above", 0.40, False), ("good", 0.97, False)):
        clf = {"styles": STYLES4, "test_accuracy": accuracy, "n_test": n_test,
               "test_accuracy_per_style": {s: accuracy for s in STYLES4},
               "confusion": {"matrix": [[6] * 4] * 4}}
        out = tmp_path / name
        analysis = analyze_records(params(), records, culture, out, classifier=clf)
        first = analysis["caveats"][0]
        assert first.startswith("The style classifier is at chance") is shown, name
        html = render_report(analysis, out).read_text(encoding="utf-8")
        assert ("The style classifier is at chance" in html) is shown, name
        if shown:
            assert f"test accuracy {accuracy:.3f} on 96 held-out images of 4 styles" in first
            assert "guessing gives 0.250" in first
    no_report = analyze_records(params(), records, culture, tmp_path / "none")
    assert not any("at chance" in c for c in no_report["caveats"])


def test_every_directed_pair_lists_its_training_run_the_reverse_of_a_cyclegan_included(
    tmp_path: Path,
):
    """The stage's layout: runs/<pair>/seed<k>/run_id.txt; a CycleGAN trained on photo-inkwash is
    evaluated in both directions, in eval/photo-inkwash/seed<k>/{photo-inkwash,inkwash-photo}/."""
    eval_root, runs_root = tmp_path / "eval", tmp_path / "runs"
    for seed, run_id in ((0, "aaaa0000"), (1, "bbbb1111")):
        (runs_root / "photo-inkwash" / f"seed{seed}").mkdir(parents=True)
        (runs_root / "photo-inkwash" / f"seed{seed}" / "run_id.txt").write_text(run_id + "\n")
        for direction, gain in (("photo-inkwash", 0.7), ("inkwash-photo", 0.4)):
            folder = eval_root / "photo-inkwash" / f"seed{seed}" / direction
            folder.mkdir(parents=True)
            record = fake_record(direction, seed, gain + 0.01 * seed)
            (folder / "metrics.json").write_text(json.dumps(record))
    (runs_root / "photo-ukiyoe" / "seed0").mkdir(parents=True)  # trained, not yet evaluated
    (runs_root / "photo-ukiyoe" / "seed0" / "run_id.txt").write_text("cccc2222\n")
    culture = tmp_path / "culture" / "culture.json"
    culture.parent.mkdir()
    culture.write_text(json.dumps(culture_dict(STYLES4, distinct_matrix(4)), default=list))
    summary = write_analysis(params(), eval_root, culture, None, runs_root, tmp_path / "report")

    analysis = json.loads((tmp_path / "report" / "analysis.json").read_text())
    trained = {"photo-inkwash/seed0": "aaaa0000", "photo-inkwash/seed1": "bbbb1111"}
    assert {p["pair"]: p["run_ids"] for p in analysis["pairs"]} == {
        "inkwash-photo": trained,
        "photo-inkwash": trained,
    }
    page = parse(Path(summary["report"]).read_text(encoding="utf-8"))
    rows = next(t for t in page.tables if t["attrs"].get("id") == "run-ids")["body"]
    assert [[c["text"] for c in row] for row in rows] == [
        ["inkwash-photo", "photo-inkwash/seed0", "aaaa0000"],
        ["inkwash-photo", "photo-inkwash/seed1", "bbbb1111"],
        ["photo-inkwash", "photo-inkwash/seed0", "aaaa0000"],
        ["photo-inkwash", "photo-inkwash/seed1", "bbbb1111"],
        ["\u2014", "photo-ukiyoe/seed0", "cccc2222"],
    ]


def test_report_folder_is_logged_to_mlflow_as_artifacts(
    report, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from mlflow import MlflowClient

    for var in ("MLFLOW_TRACKING_URI", "CULTUREGAN_PARENT_RUN_ID", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(var, raising=False)
    out = report[0]
    cfg = TrackingConfig(
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        artifact_location=str(tmp_path / "art"),
        log_system_metrics=False,
    )
    run_id = log_report_to_mlflow(out, cfg)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    names = {a.path for a in client.list_artifacts(run_id, "report")}
    assert {"report/index.html", "report/analysis.json", "report/grids"} <= names
    assert client.get_run(run_id).info.status == "FINISHED"
    parent = client.create_run(
        client.get_experiment_by_name(cfg.experiment).experiment_id
    ).info.run_id
    assert log_report_to_mlflow(out, cfg, parent) == parent
    assert "report/index.html" in {a.path for a in client.list_artifacts(parent, "report")}


def test_the_stage_on_real_evaluate_outputs_of_a_tiny_benchmark(tmp_path: Path):
    """prepare -> classifier -> culture -> evaluate (3 pairs, a colour-shift 'GAN', 2 seeds) -> write_analysis."""
    from culturegan.data.synthetic import prepare_synthetic
    from culturegan.evaluation.baselines import reinhard
    from culturegan.evaluation.classifier import train_style_classifier
    from culturegan.evaluation.culture import write_culture
    from culturegan.evaluation.evaluate import evaluate_pair
    from culturegan.evaluation.imageset import load_split

    base = Params.model_validate(
        {
            "data": {
                "image_size": 32,
                "workers": 1,
                "synthetic": {
                    "styles": ["photo", "inkwash", "ukiyoe"],
                    "train_scenes": 10,
                    "test_scenes": 6,
                },
            },
            "train": {"pairs": ["photo-inkwash", "photo-ukiyoe", "inkwash-photo"]},
            "evaluation": {
                "classifier": {"epochs": 2, "batch_size": 16, "input_size": 32},
                "kid_subsets": 3,
                "grid_rows": 2,
            },
            "analysis": {"bootstrap_samples": 200},
        }
    )
    data = tmp_path / "data"
    prepare_synthetic(base, data)
    clf = train_style_classifier(base, data, tmp_path / "clf")
    write_culture(base, data, Path(clf["classifier"]), tmp_path / "culture")
    for pair in (Pair("photo", "inkwash"), Pair("photo", "ukiyoe"), Pair("inkwash", "photo")):
        refs = load_split(data, pair.target, "train").images
        for seed in (0, 1):
            weight = 0.4 + 0.3 * seed

            def translate(x: np.ndarray, w: float = weight, refs: np.ndarray = refs) -> np.ndarray:
                return np.clip(w * reinhard(x, refs).astype(float) + (1 - w) * x, 0, 255).astype(
                    np.uint8
                )

            evaluate_pair(
                base.model_copy(update={"seed": seed}),
                pair,
                data,
                None,
                Path(clf["classifier"]),
                tmp_path / "eval" / str(pair) / f"seed{seed}",
                translate=translate,
            )
    (tmp_path / "runs" / "photo-inkwash").mkdir(parents=True)
    (tmp_path / "runs" / "photo-inkwash" / "run_id.txt").write_text("feedbeef\n")
    (tmp_path / "runs" / "photo-ukiyoe" / "seed1").mkdir(parents=True)
    (tmp_path / "runs" / "photo-ukiyoe" / "seed1" / "run_id.txt").write_text("cafe01\n")

    summary = write_analysis(
        base,
        tmp_path / "eval",
        tmp_path / "culture" / "culture.json",
        Path(clf["report"]),
        tmp_path / "runs",
        tmp_path / "report",
    )
    assert summary["n_pairs"] == 3 and summary["n_metrics_files"] == 6
    assert summary["sentence"].startswith("With 3 directed pairs among 3 styles")
    analysis = json.loads((tmp_path / "report" / "analysis.json").read_text())
    assert analysis["run_ids"] == {"photo-inkwash": "feedbeef", "photo-ukiyoe/seed1": "cafe01"}
    by_pair = {p["pair"]: p["run_ids"] for p in analysis["pairs"]}
    assert by_pair == {
        "inkwash-photo": {},
        "photo-inkwash": {"photo-inkwash": "feedbeef"},
        "photo-ukiyoe": {"photo-ukiyoe/seed1": "cafe01"},
    }
    assert [p["seeds"] for p in analysis["pairs"]] == [[0, 1]] * 3
    html = Path(summary["report"]).read_text(encoding="utf-8")
    page = parse(html)
    for src in page.imgs:
        assert (tmp_path / "report" / src).is_file()
    assert len([t for t in page.tables if t["attrs"].get("class") == "metrics"]) == 3
    assert "feedbeef" in html
    margins = [p["margin"]["kid_gain"]["value"] for p in analysis["pairs"]]
    assert summary["gan_pairs_scored"] == 3 and summary["gan_wins"] == sum(m > 0 for m in margins)
    assert summary["gan_wins_per_classifier_run"] is None  # one classifier


def test_the_stage_without_metrics_files_is_a_source_error(tmp_path: Path):
    from culturegan.errors import SourceError

    with pytest.raises(SourceError, match="no metrics.json under"):
        write_analysis(
            Params(), tmp_path, tmp_path / "culture.json", None, tmp_path / "runs", tmp_path / "out"
        )


def test_an_ensemble_classifier_gets_a_table_of_the_verdict_per_run(tmp_path: Path):
    records = [
        with_members(fake_record("photo-ukiyoe", 0, 0.5), [0.6, 0.7], [0.4, 0.5]),
        with_members(fake_record("ukiyoe-photo", 0, 0.5), [0.3, 0.5], [0.4, 0.4]),
    ]
    analysis = analyze_records(
        params(), records, culture_dict(STYLES4, distinct_matrix(4)), tmp_path
    )
    html = render_report(analysis, tmp_path).read_text(encoding="utf-8")
    table = {t["attrs"].get("id"): t for t in parse(html).tables}["classifier-runs-table"]
    assert [c["text"] for c in table["head"][0]] == [
        "directed pair",
        "seed 7",
        "seed 8",
        "mean",
        "sd",
        "wins",
        "verdict",
    ]
    rows = [[c["text"] for c in row] for row in table["body"]]
    assert rows[0][:3] == ["photo-ukiyoe", "+0.200", "+0.200"] and rows[0][5:] == [
        "2/2",
        "won in every run",
    ]
    assert rows[1][:3] == ["ukiyoe-photo", "-0.100", "+0.100"] and rows[1][5:] == [
        "1/2",
        "depends on the run",
    ]
    assert rows[1][3:5] == ["+0.000", "0.141"]  # mean and sd of the two runs' margins
    assert "GAN wins per run: <b>1, 2</b> of 2 directed pairs" in html
    assert "combined cultural distance, per run: <b>\u2014, \u2014</b>" in html  # two pairs: no rho
    assert "How alike the runs rank" not in html  # nor an agreement between the runs' orders
    # without an ensemble the section is left out
    plain = analyze_records(
        params(),
        [fake_record("photo-ukiyoe", 0, 0.5)],
        culture_dict(STYLES4, distinct_matrix(4)),
        tmp_path / "p",
    )
    assert "classifier-runs" not in render_report(plain, tmp_path / "p").read_text(encoding="utf-8")
