"""Registry: the pyfunc model of a generator, the champion gate, stylize, a remote tracking server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from culturegan.config import Pair, Params, RegistryConfig, parse_params
from culturegan.errors import CheckpointError, ConfigError, SourceError
from culturegan.registry.gate import (
    CHAMPION,
    KEPT,
    PROMOTED,
    TAG_CHAMPION_VALUE,
    TAG_CHAMPION_VERSION,
    TAG_DECISION,
    TAG_FINGERPRINT,
    TAG_REASON,
    TAG_VALUE,
    Evidence,
    decide,
    evaluation_fingerprint,
)
from culturegan.registry.inference import stylize
from culturegan.registry.mlflow_models import promote, register_pair

SOURCE, TARGET = "photo", "inkwash"
PAIR = Pair(SOURCE, TARGET)
NAME = "culturegan-photo-to-inkwash"
METRIC = "kid_classifier_relative_gain"
SIZE = 16  # test images and training size: tiny, and a multiple of 4
N_TEST = 3


# ---------------------------------------------------------------- helpers (also used by test_serving)


def make_eval_data(root: Path, n: int = N_TEST, size: int = SIZE, seed: int = 0) -> Path:
    """A data root with a manifest and `n` random test images per style."""
    from culturegan.data.manifest import ManifestRow, manifest_frame, write_manifest

    rng = np.random.default_rng(seed)
    rows = []
    for style in (SOURCE, TARGET):
        for i in range(n):
            rel = f"styles/{style}/test/scene{i}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / rel)
            rows.append(
                ManifestRow(
                    rel,
                    style,
                    "test",
                    f"scene{i}",
                    "0" * 64,
                    "test",
                    size,
                    size,
                    "RGB",
                    "0" * 16,
                    50.0,
                )
            )
    write_manifest(manifest_frame(rows), root)
    return root


def make_generator(
    model_dir: Path,
    seed: int,
    source: str = SOURCE,
    target: str = TARGET,
    filename: str = "generator.pt",
) -> Path:
    """A tiny trained-generator file (ngf 4, one block) as the train stage writes it."""
    import torch

    from culturegan.config import GeneratorConfig
    from culturegan.models.networks import ResnetGenerator, init_weights
    from culturegan.training.checkpoint import save_generator

    torch.manual_seed(seed)
    # A larger init than the paper's 0.02 so that different seeds give visibly different outputs.
    net = init_weights(ResnetGenerator(GeneratorConfig(ngf=4, n_blocks=1)), gain=0.3)
    meta = {
        "pair": f"{source}-{target}",
        "source": source,
        "target": target,
        "objective": "fastcut",
        "image_size": SIZE,
        "steps": 1,
    }
    path = model_dir / filename
    save_generator(path, net, meta)
    return path


def write_metrics(
    path: Path, value: float | None, classifier: Path, pair: Pair = PAIR, n: int = N_TEST
) -> Path:
    """A metrics.json with the evaluate stage's layout (only the keys the registry reads, plus a few)."""
    gan: dict[str, Any] = {"n_images": n, "kid_classifier": 1.0, "gt_ssim": 0.3}
    if value is not None:
        gan[METRIC] = value
    metrics = {
        "pair": str(pair),
        "source": pair.source,
        "target": pair.target,
        "seed": 0,
        "image_size": SIZE,
        "n_images": {
            "source_test": n,
            "target_test": n,
            "target_train_refs": 0,
            "ground_truth_pairs": n,
        },
        "feature_spaces": ["classifier"],
        "ground_truth": True,
        "methods": {"gan": gan, "identity": {"n_images": n, METRIC: 0.0}},
        "reference": {},
        "skipped": {},
        "classifier": str(classifier),
        "seconds": 0.1,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics))
    return path


def registry_params(root: Path, store: Path, **registry: Any) -> Params:
    """Params with data under `root`, and a sqlite store and its artifacts under `store`."""
    return parse_params(
        {
            "data": {"root": str(root / "data")},
            "tracking": {
                "tracking_uri": f"sqlite:///{store / 'mlflow.db'}",
                "artifact_location": str(store / "mlartifacts"),
                "log_system_metrics": False,
            },
            "registry": {"max_side": 64, "max_images": 4, "batch_size": 2, **registry},
        }
    )


def make_workspace(root: Path, store: Path | None = None, **registry: Any) -> tuple[Params, Path]:
    """Params, data and a classifier-weights file under `root`; returns (params, classifier path)."""
    make_eval_data(root / "data")
    classifier = root / "classifier.pt"
    classifier.write_bytes(b"classifier weights v1")
    return registry_params(root, store or root, **registry), classifier


def random_images(n: int, h: int, w: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


@pytest.fixture(autouse=True)
def _no_tracking_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The tests choose their own store; a developer's MLFLOW_TRACKING_URI must not leak in.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("CULTUREGAN_PARENT_RUN_ID", raising=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One sqlite store per module: creating its tables takes about 7 s. Tests keep apart by
    registering under their own registry.model_prefix."""
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory, store: Path) -> Iterator[dict[str, Any]]:
    """One registered and promoted model (culturegan-photo-to-inkwash), shared by the tests that only use it."""
    root = tmp_path_factory.mktemp("registry")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("CULTUREGAN_PARENT_RUN_ID", raising=False)
        params, classifier = make_workspace(root, store)
        generator = make_generator(root / "runs" / str(PAIR), seed=1)
        metrics = write_metrics(root / "eval" / str(PAIR) / "metrics.json", 0.5, classifier)
        result = register_pair(params, PAIR, generator.parent, metrics)
        assert result["promoted"], result
        yield {"params": params, "root": root, "generator": generator, **result}


def load(uri: str, params: Params) -> Any:
    import mlflow

    from culturegan.tracking.store import resolve_tracking_uri

    mlflow.set_tracking_uri(resolve_tracking_uri(params.tracking))
    return mlflow.pyfunc.load_model(uri)


# ---------------------------------------------------------------- the gate, as a pure function

CFG = RegistryConfig(metric=METRIC, min_improvement=0.01)


def ev(
    value: float | None,
    fingerprint: str | None = "fp",
    metric: str = METRIC,
    version: str = "1",
    baselines: dict[str, float] | None = None,
) -> Evidence:
    return Evidence(
        metric,
        value,
        fingerprint,
        version,
        problem="" if value is not None else "missing",
        baselines={"identity": 0.0, "reinhard": 0.3} if baselines is None else baselines,
    )


@pytest.mark.parametrize(
    ("candidate", "champ", "promote", "reason_part"),
    [
        (ev(0.5), None, True, "no champion yet"),
        (ev(None), None, False, "no valid"),
        (ev(0.5, fingerprint=None), None, False, "cannot be identified"),
        (ev(0.7), ev(0.5), True, "> min_improvement"),
        (ev(0.505), ev(0.5), False, "not more than min_improvement"),
        (ev(0.51), ev(0.5), False, "not more than min_improvement"),  # the margin is strict
        (ev(0.4), ev(0.5), False, "not more than"),
        (ev(None), ev(0.5), False, "no valid"),
        (ev(0.9, fingerprint="other"), ev(0.5), False, "another evaluation set"),
        (ev(0.9), ev(0.5, metric="gt_ssim"), False, "was gated on gt_ssim"),
        (ev(0.9), ev(None), False, "has no valid"),
    ],
)
def test_decide_promotes_only_a_comparable_candidate_that_beats_the_margin(
    candidate: Evidence, champ: Evidence | None, promote: bool, reason_part: str
) -> None:
    decision = decide(candidate, champ, CFG)
    assert decision.promote is promote
    assert reason_part in decision.reason


def test_decide_lower_is_better_metric_promotes_the_smaller_value() -> None:
    cfg = RegistryConfig(metric="kid_classifier", min_improvement=0.1)

    def kid(value: float) -> Evidence:
        return ev(value, metric="kid_classifier", baselines={"identity": 3.0})

    assert decide(kid(1.0), kid(1.5), cfg).promote
    assert not decide(kid(1.45), kid(1.5), cfg).promote
    assert not decide(kid(2.0), kid(1.5), cfg).promote
    assert not decide(kid(3.5), None, cfg).promote  # worse than doing nothing


@pytest.mark.parametrize("value", [-0.28, 0.0])
def test_first_model_that_does_not_beat_doing_nothing_never_becomes_champion(value: float) -> None:
    # seen on real data: impressionist -> photo became champion with a KID gain of -0.28
    decision = decide(ev(value), None, CFG)
    assert not decision.promote
    assert "does not beat doing nothing (identity 0)" in decision.reason


def test_gate_records_how_the_candidate_stands_against_the_best_baseline() -> None:
    ahead = decide(ev(0.5, baselines={"identity": 0.0, "reinhard": 0.3, "histogram": 0.4}), None, CFG)
    assert ahead.promote and "ahead of the best baseline histogram (0.4) by 0.1" in ahead.reason
    behind = decide(ev(0.2, baselines={"identity": 0.0, "reinhard": 0.3}), None, CFG)
    assert behind.promote and "behind the best baseline reinhard (0.3) by 0.1" in behind.reason
    missing = decide(ev(0.5, baselines={"reinhard": 0.3}), None, CFG)
    assert not missing.promote and "no identity baseline" in missing.reason


def test_registry_config_knows_metric_directions_and_rejects_contradictions() -> None:
    assert RegistryConfig(metric="gt_ssim").higher_is_better
    assert not RegistryConfig(metric="kid_inception").higher_is_better
    assert not RegistryConfig(metric="gt_hist_hellinger").higher_is_better
    assert RegistryConfig(metric="my_score", direction="higher").higher_is_better
    with pytest.raises(ConfigError, match="direction of metric .my_score. is unknown"):
        parse_params({"registry": {"metric": "my_score"}})
    with pytest.raises(ConfigError, match="better when lower"):
        parse_params({"registry": {"metric": "kid_classifier", "direction": "higher"}})
    with pytest.raises(ConfigError, match="registry.min_improvement"):
        parse_params({"registry": {"min_improvement": -1}})


# ---------------------------------------------------------------- the evaluation fingerprint


def test_fingerprint_changes_with_test_images_and_feature_space_weights_only_where_used(
    tmp_path: Path,
) -> None:
    params, classifier = make_workspace(tmp_path)
    metrics = json.loads(write_metrics(tmp_path / "m.json", 0.5, classifier).read_text())
    data = tmp_path / "data"

    base, parts = evaluation_fingerprint(params, metrics, METRIC, data)
    assert base is not None and isinstance(parts, dict)
    assert parts["metric_space"].startswith("classifier:") and parts["image_size"] == SIZE
    assert evaluation_fingerprint(params, metrics, METRIC, data)[0] == base
    pixels = evaluation_fingerprint(params, metrics, "gt_ssim", data)[0]
    assert pixels not in (None, base)

    classifier.write_bytes(b"classifier weights v2 (retrained)")
    assert evaluation_fingerprint(params, metrics, METRIC, data)[0] not in (None, base)
    assert evaluation_fingerprint(params, metrics, "gt_ssim", data)[0] == pixels

    Image.fromarray(random_images(1, SIZE, SIZE, seed=9)[0]).save(
        data / "styles/inkwash/test/scene0.png"
    )
    assert evaluation_fingerprint(params, metrics, "gt_ssim", data)[0] not in (None, pixels)


def test_fingerprint_of_a_texture_space_metric_follows_the_texture_config(tmp_path: Path) -> None:
    params, classifier = make_workspace(tmp_path)
    metrics = json.loads(write_metrics(tmp_path / "m.json", 0.5, classifier).read_text())
    data, metric = tmp_path / "data", "kid_texture_relative_gain"
    fingerprint, why = evaluation_fingerprint(params, metrics, metric, data)
    assert fingerprint is None and "'texture' feature space" in str(why)

    metrics["feature_spaces"] = [*metrics["feature_spaces"], "texture"]
    base, parts = evaluation_fingerprint(params, metrics, metric, data)
    assert base is not None and parts["metric_space"].startswith("texture:")
    classifier.write_bytes(b"classifier weights v2 (retrained)")  # not this space's concern
    assert evaluation_fingerprint(params, metrics, metric, data)[0] == base
    texture = params.evaluation.texture.model_copy(update={"seed": 1})
    other = params.model_copy(
        update={"evaluation": params.evaluation.model_copy(update={"texture": texture})}
    )
    assert evaluation_fingerprint(other, metrics, metric, data)[0] not in (None, base)
    off = params.model_copy(update={"evaluation": params.evaluation.model_copy(update={"texture": None})})
    assert evaluation_fingerprint(off, metrics, metric, data)[0] is None


def test_fingerprint_is_none_when_the_data_does_not_match_the_metrics(tmp_path: Path) -> None:
    params, classifier = make_workspace(tmp_path)
    metrics = json.loads(
        write_metrics(tmp_path / "m.json", 0.5, classifier, n=N_TEST + 1).read_text()
    )
    fingerprint, why = evaluation_fingerprint(params, metrics, METRIC, tmp_path / "data")
    assert fingerprint is None and "scored 4 source test images" in str(why)

    fingerprint, why = evaluation_fingerprint(params, metrics, METRIC, tmp_path / "nowhere")
    assert fingerprint is None and "manifest.parquet not found" in str(why)


# ---------------------------------------------------------------- registration and promotion


def test_gate_promotes_better_keeps_champion_against_worse_unscored_and_incomparable(
    tmp_path: Path, store: Path
) -> None:
    from mlflow import MlflowClient

    params, classifier = make_workspace(tmp_path, store, model_prefix="gate")
    name = "gate-photo-to-inkwash"
    client = MlflowClient(params.tracking.tracking_uri)
    runs = tmp_path / "runs" / str(PAIR)

    def register(seed: int, value: float | None, metrics: bool = True) -> dict[str, Any]:
        make_generator(runs, seed)
        path = (
            write_metrics(tmp_path / "eval" / f"{seed}.json", value, classifier)
            if metrics
            else None
        )
        return register_pair(params, PAIR, runs, path)

    def tags(version: str) -> dict[str, str]:
        return client.get_model_version(name, version).tags

    def champion() -> str:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)

    first = register(1, 0.50)
    assert (first["name"], first["version"], first["promoted"]) == (name, "1", True)
    assert tags("1")[TAG_DECISION] == PROMOTED and "no champion yet" in tags("1")[TAG_REASON]
    assert champion() == "1"

    better = register(2, 0.70)
    assert better["promoted"] and champion() == "2"
    assert tags("2")[TAG_CHAMPION_VERSION] == "1" and float(tags("2")[TAG_CHAMPION_VALUE]) == 0.5

    worse = register(3, 0.705)  # better, but not by more than min_improvement (0.01)
    assert not worse["promoted"] and champion() == "2"
    assert (
        tags("3")[TAG_DECISION] == KEPT and "not more than min_improvement" in tags("3")[TAG_REASON]
    )
    assert float(tags("3")[TAG_VALUE]) == 0.705 and float(tags("3")[TAG_CHAMPION_VALUE]) == 0.7

    unscored = register(4, None, metrics=False)
    assert not unscored["promoted"] and champion() == "2"
    assert "no valid kid_classifier_relative_gain" in tags("4")[TAG_REASON]
    assert "no metrics file" in tags("4")[TAG_REASON]

    null_metric = register(5, None)
    assert (
        not null_metric["promoted"]
        and "has no kid_classifier_relative_gain" in tags("5")[TAG_REASON]
    )

    # A much better score on another test set says nothing about this one.
    Image.fromarray(random_images(1, SIZE, SIZE, seed=7)[0]).save(
        tmp_path / "data/styles/photo/test/scene1.png"
    )
    incomparable = register(6, 0.99)
    assert not incomparable["promoted"] and champion() == "2"
    assert "another evaluation set" in tags("6")[TAG_REASON]
    assert tags("6")[TAG_FINGERPRINT] != tags("2")[TAG_FINGERPRINT] != ""

    # Versions differ in their weights: each holds its own generator.
    assert len({tags(v)["culturegan.generator_sha256"] for v in "12346"}) == 5

    # The way out of an incomparable evaluation set is a recorded manual promotion.
    with pytest.raises(ConfigError, match="needs a reason"):
        promote(params.tracking, name, "6", " ")
    with pytest.raises(ConfigError, match="version 99 not found"):
        promote(params.tracking, name, "99", "new test set")
    promote(params.tracking, name, "6", "the test set was regenerated")
    assert champion() == "6"
    assert tags("6")[TAG_DECISION] == "promoted_by_hand"
    assert tags("6")[TAG_REASON] == "the test set was regenerated"


def test_register_pair_logs_into_the_given_run_and_picks_cyclegans_reverse_generator(
    tmp_path: Path, store: Path
) -> None:
    import mlflow
    from mlflow import MlflowClient

    params, classifier = make_workspace(tmp_path, store, model_prefix="rev")
    runs = tmp_path / "runs" / str(PAIR)
    make_generator(runs, 1)
    reverse = make_generator(runs, 2, source=TARGET, target=SOURCE, filename="generator_reverse.pt")
    metrics = write_metrics(
        tmp_path / "eval/inkwash-photo/metrics.json", 0.3, classifier, pair=PAIR.reversed()
    )
    from culturegan.tracking.store import configure

    configure(params.tracking)
    with mlflow.start_run() as run:
        pass

    result = register_pair(params, PAIR.reversed(), runs, metrics, run_id=run.info.run_id)
    assert result["name"] == "rev-inkwash-to-photo" and result["promoted"]
    assert result["generator"] == str(reverse) and result["run_id"] == run.info.run_id
    version = MlflowClient(params.tracking.tracking_uri).get_model_version(result["name"], "1")
    assert version.run_id == run.info.run_id


def test_both_directions_register_into_one_run_and_load_without_mlflow_warnings(
    tmp_path: Path, store: Path
) -> None:
    """CycleGAN's two directions go into the training run: MLflow logs every model config as run
    params, so a per-direction value there (source, target) clashed with the first model's."""
    import logging
    import warnings

    import mlflow

    from culturegan.tracking.store import configure

    params, classifier = make_workspace(tmp_path, store, model_prefix="both")
    runs = tmp_path / "runs" / str(PAIR)
    make_generator(runs, 1)
    make_generator(runs, 2, source=TARGET, target=SOURCE, filename="generator_reverse.pt")
    configure(params.tracking)
    with mlflow.start_run() as run:
        pass
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("mlflow").addHandler(handler)
    try:
        for pair, value in ((PAIR, 0.5), (PAIR.reversed(), 0.3)):
            metrics = write_metrics(tmp_path / f"eval/{pair}/metrics.json", value, classifier, pair=pair)
            assert register_pair(params, pair, runs, metrics, run_id=run.info.run_id)["promoted"]
    finally:
        logging.getLogger("mlflow").removeHandler(handler)
    assert not [r.getMessage() for r in records if "model config" in r.getMessage()]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load(f"models:/both-{TARGET}-to-{SOURCE}@{CHAMPION}", params)
    assert not [str(w.message) for w in caught if "type hint" in str(w.message).lower()]
    assert model.predict(random_images(1, 8, 8)).shape == (1, 8, 8, 3)


def test_register_pair_refuses_metrics_of_another_pair_and_a_missing_direction(
    tmp_path: Path,
) -> None:
    params, classifier = make_workspace(tmp_path)
    runs = tmp_path / "runs" / str(PAIR)
    make_generator(runs, 1)
    wrong = write_metrics(
        tmp_path / "eval/photo-ukiyoe/metrics.json", 0.5, classifier, pair=Pair(SOURCE, "ukiyoe")
    )
    with pytest.raises(ConfigError, match="metrics of pair 'photo-ukiyoe', not of 'photo-inkwash'"):
        register_pair(params, PAIR, runs, wrong)
    with pytest.raises(CheckpointError, match=r"no generator for inkwash->photo .*photo->inkwash"):
        register_pair(params, PAIR.reversed(), runs, None)


# ---------------------------------------------------------------- the packaged model


def test_registered_model_round_trips_to_the_in_memory_generator(champion: dict[str, Any]) -> None:
    import torch

    from culturegan.evaluation.evaluate import module_translator
    from culturegan.training.checkpoint import load_generator

    model = load(f"models:/{NAME}@{CHAMPION}", champion["params"])
    translate = module_translator(load_generator(champion["generator"]))

    images = random_images(3, SIZE, 24)  # 3 images > batch_size 2: chunked inside the model
    served = model.predict(images)
    assert served.dtype == np.uint8 and served.shape == images.shape
    expected = translate(images)
    assert np.abs(served.astype(int) - expected.astype(int)).max() <= 1
    assert np.abs(served.astype(int) - images.astype(int)).mean() > 5  # it does change the images

    # Sides that are not multiples of 4: reflect-padded for the network, cropped back.
    odd = random_images(1, 18, 11)
    padded = (
        torch.nn.functional.pad(
            torch.from_numpy(odd).permute(0, 3, 1, 2).float(), (0, 1, 0, 2), mode="reflect"
        )
        .permute(0, 2, 3, 1)
        .round()
        .to(torch.uint8)
        .numpy()
    )
    out = model.predict(odd)
    assert out.shape == odd.shape
    assert np.abs(out.astype(int) - translate(padded)[:, :18, :11].astype(int)).max() <= 1


def test_model_carries_signature_example_requirements_and_config(champion: dict[str, Any]) -> None:
    import mlflow
    import torch
    from mlflow.models import Model

    uri = champion["model_uri"]
    load(uri, champion["params"])  # sets the tracking URI
    local = Path(mlflow.artifacts.download_artifacts(uri))
    info = Model.load(local / "MLmodel")
    inputs = info.signature.inputs.to_dict()[0]["tensor-spec"]
    assert (inputs["dtype"], list(inputs["shape"])) == ("uint8", [-1, -1, -1, 3])
    assert info.signature.outputs.to_dict()[0]["tensor-spec"] == inputs
    example = json.loads((local / "serving_input_example.json").read_text())["inputs"]
    assert np.asarray(example).shape == (1, SIZE, SIZE, 3)
    requirements = (local / "requirements.txt").read_text().split()
    assert f"torch=={torch.__version__.split('+')[0]}" in requirements
    assert f"numpy=={np.__version__}" in requirements
    assert not any(r.startswith(("culturegan", "pydantic")) for r in requirements)
    config = json.loads((local / "artifacts" / "config.json").read_text())
    assert config["pair"] == "photo-inkwash" and config["generator"]["config"] == {
        "ngf": 4,
        "n_blocks": 1,
        "norm": "instance",
        "decoder_norm": "same",
        "upsample": "resize",
        "residual": False,
        "antialias": False,
    }
    assert config["params"]["registry"]["max_side"] == 64
    flavor = info.flavors["python_function"]
    assert flavor["config"]["max_side"] == 64 and flavor["config"]["image_size"] == SIZE


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((SIZE, SIZE), np.uint8), "Shape of input"),
        (np.zeros((1, SIZE, SIZE, 3), np.float32), "dtype of input"),
        (np.zeros((1, 8, 65, 3), np.uint8), "outside the accepted 8..64"),
        (np.zeros((1, 4, 4, 3), np.uint8), "outside the accepted 8..64"),
        (np.zeros((5, 8, 8, 3), np.uint8), "limit is 4"),
        (np.zeros((0, 8, 8, 3), np.uint8), "no images"),
    ],
)
def test_model_rejects_bad_input_with_a_clear_invalid_parameter_error(
    champion: dict[str, Any], bad: np.ndarray, message: str
) -> None:
    from mlflow.exceptions import MlflowException

    model = load(champion["model_uri"], champion["params"])
    with pytest.raises(MlflowException, match=message) as err:
        model.predict(bad)
    assert err.value.get_http_status_code() == 400


# ---------------------------------------------------------------- stylize


def test_stylize_writes_pngs_atomically_and_reports_unreadable_and_refused_images(
    champion: dict[str, Any], tmp_path: Path
) -> None:
    inputs = tmp_path / "inputs"
    (inputs / "sub").mkdir(parents=True)
    a = random_images(1, SIZE, SIZE, seed=3)[0]
    Image.fromarray(a).save(inputs / "a.png")
    Image.fromarray(random_images(1, 20, 12, seed=4)[0]).save(inputs / "sub" / "b.jpg", quality=95)
    Image.fromarray(random_images(1, 12, 12, seed=5)[0]).save(inputs / "a.jpg")
    Image.fromarray(random_images(1, 8, 80, seed=6)[0]).save(inputs / "wide.png")  # > max_side 64
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (inputs / "notes.txt").write_text("not an image, not an input")
    out = inputs / "styled"  # inside the inputs: its files must not become inputs next time

    uri = f"models:/{NAME}@{CHAMPION}"
    result = stylize(uri, inputs, out, champion["params"].tracking)
    assert result["images"] == 5 and result["written"] == 3
    failed = {Path(f["path"]).name: f["error"] for f in result["failed"]}
    assert set(failed) == {"broken.png", "wide.png"}
    assert (
        "unreadable image" in failed["broken.png"] and "outside the accepted" in failed["wide.png"]
    )
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert written == ["a.jpg.png", "a.png", "sub", "sub/b.png"]  # no temp files left
    with Image.open(out / "sub" / "b.png") as im:
        assert (im.format, im.size, im.mode) == ("PNG", (12, 20), "RGB")
    expected = load(uri, champion["params"]).predict(a[None])[0]
    assert np.array_equal(np.asarray(Image.open(out / "a.png")), expected)

    again = stylize(uri, inputs, out, champion["params"].tracking)
    assert again["images"] == 5

    single = stylize(uri, inputs / "a.png", tmp_path / "one", champion["params"].tracking)
    assert single["written"] == 1 and (tmp_path / "one" / "a.png").is_file()


def test_stylize_names_a_missing_model_or_input_clearly(
    champion: dict[str, Any], tmp_path: Path
) -> None:
    (tmp_path / "in").mkdir()
    Image.fromarray(random_images(1, SIZE, SIZE)[0]).save(tmp_path / "in" / "x.png")
    tracking = champion["params"].tracking
    with pytest.raises(ConfigError, match=f"models:/{NAME}@nosuchalias cannot be loaded"):
        stylize(f"models:/{NAME}@nosuchalias", tmp_path / "in", tmp_path / "out", tracking)
    with pytest.raises(SourceError, match="does not exist"):
        stylize(f"models:/{NAME}@{CHAMPION}", tmp_path / "missing", tmp_path / "out", tracking)


# ---------------------------------------------------------------- through a tracking server with S3


@pytest.mark.slow
def test_register_and_stylize_through_a_tracking_server_with_s3_artifacts(
    tmp_path: Path, s3_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    import mlflow
    from mlflow import MlflowClient
    from mlflow_server import mlflow_server

    secret = "culturegan-test-secret-4f7d2c"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)  # moto accepts any; it must never be logged
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="mlflow")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    params, classifier = make_workspace(work)
    # The deployment way: params.yaml untouched, the environment names the server.
    params = params.model_copy(
        update={"tracking": params.tracking.model_copy(update={"tracking_uri": None})}
    )
    generator = make_generator(work / "runs" / str(PAIR), seed=1)
    metrics = write_metrics(work / "eval" / str(PAIR) / "metrics.json", 0.5, classifier)

    server_dir = tmp_path / "server"
    server_dir.mkdir()
    with mlflow_server(server_dir, "s3://mlflow/artifacts") as url:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
        # The server proxies the artifact store: clients need no S3 endpoint or credentials.
        for var in (
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_ENDPOINT_URL",
            "AWS_ENDPOINT_URL_S3",
            "MLFLOW_S3_ENDPOINT_URL",
        ):
            monkeypatch.delenv(var)
        first = register_pair(params, PAIR, generator.parent, metrics)
        assert first["promoted"]
        make_generator(work / "runs" / str(PAIR), seed=2)
        second = register_pair(
            params, PAIR, generator.parent, write_metrics(metrics, 0.2, classifier)
        )
        assert not second["promoted"]

        client = MlflowClient(url)
        assert client.get_model_version_by_alias(NAME, CHAMPION).version == "1"
        Image.fromarray(random_images(1, SIZE, SIZE)[0]).save(work / "x.png")
        result = stylize(
            f"models:/{NAME}@{CHAMPION}", work / "x.png", work / "out", params.tracking
        )
        assert result["written"] == 1 and (work / "out" / "x.png").is_file()

        run = client.get_run(first["run_id"])
        model_dir = Path(
            mlflow.artifacts.download_artifacts(first["model_uri"], dst_path=str(tmp_path / "dl"))
        )
        seen = [
            json.dumps(run.data.to_dictionary()),
            json.dumps(client.get_model_version(NAME, "1").tags),
        ]
        seen += [
            p.read_text(errors="replace")
            for p in model_dir.rglob("*")
            if p.suffix in {".json", ".yaml", ".txt", ""} and p.is_file()
        ]
        assert not any(secret in text for text in seen)

    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="mlflow").get("Contents", [])]
    assert sum(k.endswith("artifacts/generator.pt2") for k in keys) == 2, keys
    assert any(k.endswith("/MLmodel") for k in keys)
    assert not (work / "mlartifacts").exists() and not (work / "mlruns").exists()
    assert secret not in (server_dir / "mlflow_server.log").read_text(errors="replace")


def test_the_promotion_gate_is_pure_and_imports_no_mlflow() -> None:
    import ast

    from culturegan.registry import gate

    tree = ast.parse(Path(gate.__file__).read_text(encoding="utf-8"))
    names = {
        alias.name if isinstance(node, ast.Import) else node.module or ""
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert not any(n.split(".")[0] in ("mlflow", "torch") for n in names), names
