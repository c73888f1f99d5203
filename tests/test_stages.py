"""Stage functions as dvc.yaml and KFP call them: training per (pair, seed) tracked in MLflow with
checkpoints that survive DVC's output clean-up, and evaluation/registration of both CycleGAN
directions in the seed's own folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import tiny

from culturegan import stages
from culturegan.config import Pair, Params
from culturegan.data.synthetic import prepare_synthetic

PAIR = Pair("photo", "inkwash")


def _params(tmp_path: Path, **train: object) -> Params:
    """The shared tiny config (tests/tiny.py): a seed-1 CycleGAN in fp32, files under tmp_path."""
    return tiny.tiny_params(
        {
            "seed": 1,
            "data": {
                "root": str(tmp_path / "data"),
                "cache_dir": str(tmp_path / "staging"),
                "synthetic": {"train_scenes": 6},
            },
            "train": {"objective": "cyclegan", "precision": "fp32", "cyclegan": {"pool_size": 2}},
            "tracking": {
                "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                "artifact_location": str(tmp_path / "mlartifacts"),
            },
            "evaluation": {"classifier": {"width": 8}},
        },
        {"train": train},
    )


@pytest.fixture
def params(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Params:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("CULTUREGAN_PARENT_RUN_ID", raising=False)
    p = _params(tmp_path)
    prepare_synthetic(p, p.data.root)
    return p


def test_train_stage_logs_a_nested_mlflow_run_with_losses_and_the_generators(params: Params, tmp_path: Path):
    from mlflow import MlflowClient

    runs = tmp_path / "runs"
    result = stages.train_stage(params, PAIR, 0, params.data.root, runs)
    client = MlflowClient(params.tracking.tracking_uri)
    run = client.get_run(result["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == result["mlflow_parent_run_id"]
    assert run.data.tags["pair"] == "photo-inkwash"
    assert (run.data.tags["source_style"], run.data.tags["target_style"]) == ("photo", "inkwash")
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss/g_ab")] == [2, 4]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert artifacts == {"model/generator.pt", "model/generator_reverse.pt"}
    assert run.data.params["seed"] == "0", "the training seed, not the top-level seed 1"
    assert run.data.params["global_seed"] == "1"
    assert (runs / "photo-inkwash" / "seed0" / "run_id.txt").read_text().strip() == run.info.run_id


def test_a_pair_of_styles_not_in_the_manifest_fails_before_any_mlflow_run(params: Params, tmp_path: Path):
    from culturegan.errors import ConfigError

    # A real source: its styles are known only from the manifest, so params.yaml loads.
    real = params.model_copy(update={"data": params.data.model_copy(update={"source": str(tmp_path / "src")})})
    with pytest.raises(ConfigError) as info:
        stages.train_stage(real, Pair("photo", "cubism"), 0, params.data.root, tmp_path / "runs")
    assert "'photo-cubism'" in info.value.message and "['cubism']" in info.value.message
    assert "['inkwash', 'photo']" in info.value.message  # what the manifest holds
    assert not (tmp_path / "mlflow.db").exists(), "no MLflow run (nor store) was created"
    assert not (tmp_path / "runs").exists()


def test_killed_training_resumes_after_dvc_deletes_the_stage_output(tmp_path: Path):
    params = _params(tmp_path, sample_every=2)
    prepare_synthetic(params, params.data.root)
    runs = tmp_path / "runs"
    first = stages.train_stage(params, PAIR, 0, params.data.root, runs, track=False)
    out = runs / "photo-inkwash" / "seed0"
    samples = {p.name: p.read_bytes() for p in (out / "samples").iterdir()}
    assert sorted(samples) == ["step_000002.png", "step_000004.png"]
    # DVC removes a stage's declared outputs before re-running it; checkpoints live elsewhere
    shutil.rmtree(out)
    again = stages.train_stage(params, PAIR, 0, params.data.root, runs, track=False)
    assert first["checkpoint"] == again["checkpoint"]
    assert again["resumed_from"] == 4, "the finished run was found, not trained again"
    assert (out / "generator.pt").is_file()
    # the output is whole again: the samples of steps it did not train again are there too
    assert {p.name: p.read_bytes() for p in (out / "samples").iterdir()} == samples


def test_each_training_seed_trains_its_own_model_in_its_own_folder_and_checkpoint(params: Params, tmp_path: Path):
    import torch

    runs = tmp_path / "runs"
    zero = stages.train_stage(params, PAIR, 0, params.data.root, runs, track=False)
    seven = stages.train_stage(params, PAIR, 7, params.data.root, runs, track=False)
    assert zero["checkpoint"] != seven["checkpoint"] and seven["resumed_from"] == 0, "seed 7 started afresh"
    assert stages.checkpoint_dir(params, PAIR, 7) != stages.checkpoint_dir(params, PAIR, 0)
    a = torch.load(runs / "photo-inkwash" / "seed0" / "generator.pt", map_location="cpu")
    b = torch.load(runs / "photo-inkwash" / "seed7" / "generator.pt", map_location="cpu")
    weights = [k for k, v in a["state_dict"].items() if torch.is_floating_point(v)]
    assert any(not torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in weights), "seeds give different models"


def test_a_negative_training_seed_is_a_config_error(params: Params, tmp_path: Path):
    from culturegan.errors import ConfigError

    with pytest.raises(ConfigError, match="bad training seed -1"):
        stages.train_stage(params, PAIR, -1, params.data.root, tmp_path / "runs", track=False)


def test_changed_training_params_start_a_new_checkpoint_instead_of_an_error(params: Params, tmp_path: Path):
    a = stages.checkpoint_dir(params, PAIR, 0)
    changed = _params(tmp_path, lr=0.001)
    assert stages.checkpoint_dir(changed, PAIR, 0) != a
    # steps are part of the run's identity (the lr schedule spans them): another count, another run
    assert stages.checkpoint_dir(_params(tmp_path, steps=8), PAIR, 0) != a


def test_changed_training_code_trains_again_instead_of_returning_the_finished_model(
    params: Params, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """`dvc repro` reruns a train stage when its code changed (the stage's deps); the finished
    checkpoint of the old code must not be "resumed" at its last step and returned as the model."""
    from culturegan.training import trainer

    runs = tmp_path / "runs"
    first = stages.train_stage(params, PAIR, 0, params.data.root, runs, track=False)
    shutil.rmtree(runs / "photo-inkwash" / "seed0")  # as DVC does before re-running the stage
    monkeypatch.setattr(trainer, "training_code_hash", lambda: "0123456789abcdef")
    again = stages.train_stage(params, PAIR, 0, params.data.root, runs, track=False)
    assert again["checkpoint"] != first["checkpoint"]
    assert again["resumed_from"] == 0, "the new code trained from the start"


@pytest.mark.parametrize(
    ("runs", "cpus", "setting", "expected"),
    [
        (3, 2, 0, (3, 1)),  # the default on 2 cores: all three pairs at once, one thread each
        (2, 2, 0, (2, 1)),
        (1, 2, 0, (1, 2)),  # one run keeps every core (and trains its directions side by side)
        (3, 16, 0, (3, 5)),
        (12, 2, 0, (4, 1)),  # at most two per core
        (3, 2, 1, (1, 2)),  # concurrent_runs 1: in turn, each with every core
        (5, 2, 2, (2, 1)),
        (2, 8, 6, (2, 4)),
    ],
)
def test_run_concurrency_shares_the_cores_among_the_runs(runs, cpus, setting, expected):
    assert stages.run_concurrency(runs, cpus, setting) == expected


def _generator_bytes(root: Path, seed: int) -> dict[str, bytes]:
    folder = root / "photo-inkwash" / f"seed{seed}"
    return {name: (folder / name).read_bytes() for name in ("generator.pt", "generator_reverse.pt")}


def test_train_all_trains_every_seed_at_once_in_processes_of_their_own_as_train_stage_would(
    params: Params, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Two runs on two cores: two spawned processes of one thread each, both nested under the one
    parent run, and each model the one `train_stage` trains alone with one thread."""
    import torch
    from mlflow import MlflowClient

    from culturegan import cpus

    monkeypatch.setattr(cpus, "usable_cpus", lambda: 2)
    two = params.model_copy(update={"train": params.train.model_copy(update={"seeds": [0, 3]})})
    runs = tmp_path / "runs"
    result = stages.train_all_stage(two, two.data.root, runs)
    assert list(result) == ["photo-inkwash/seed0", "photo-inkwash/seed3"]
    client = MlflowClient(params.tracking.tracking_uri)
    parents = {client.get_run(r["mlflow_run_id"]).data.tags["mlflow.parentRunId"] for r in result.values()}
    assert parents == {r["mlflow_parent_run_id"] for r in result.values()} and len(parents) == 1
    assert stages.train_all_summary(result) == {
        name: json.loads((runs / name / "train_metrics.json").read_text()) for name in result
    }

    alone = tmp_path / "alone"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for seed in (0, 3):
            shutil.rmtree(stages.checkpoint_dir(params, PAIR, seed))  # train again, not resume
            stages.train_stage(params, PAIR, seed, params.data.root, alone, track=False)
            assert _generator_bytes(alone, seed) == _generator_bytes(runs, seed), seed
    finally:
        torch.set_num_threads(before)


def test_train_all_queues_the_runs_beyond_its_processes(
    params: Params, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Three runs on one core: two processes (two per core), the third run starts when one ends."""
    from culturegan import cpus

    monkeypatch.setattr(cpus, "usable_cpus", lambda: 1)
    assert stages.run_concurrency(3, 1) == (2, 1)
    three = params.model_copy(update={"train": params.train.model_copy(update={"seeds": [0, 1, 2]})})
    result = stages.train_all_stage(three, three.data.root, tmp_path / "runs", track=False)
    assert list(result) == [f"photo-inkwash/seed{k}" for k in (0, 1, 2)]
    assert all(r["steps"] == params.train.steps and r["resumed_from"] == 0 for r in result.values())
    assert len({_generator_bytes(tmp_path / "runs", k)["generator.pt"] for k in (0, 1, 2)}) == 3


def test_a_failed_run_of_train_all_lets_the_others_finish_and_names_itself(
    params: Params, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from culturegan import cpus
    from culturegan.errors import CultureganError

    monkeypatch.setattr(cpus, "usable_cpus", lambda: 2)
    two = params.model_copy(update={"train": params.train.model_copy(update={"seeds": [0, 3]})})
    damaged = stages.checkpoint_dir(two, PAIR, 3) / "last.pt"
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"not a checkpoint")
    runs = tmp_path / "runs"
    with pytest.raises(CultureganError) as info:
        stages.train_all_stage(two, two.data.root, runs, track=False)
    assert "1 of 2 runs" in info.value.message and "photo-inkwash/seed3: CheckpointError" in info.value.message
    assert str(damaged) in info.value.message, "the child's own error, with the file it names"
    assert "finished" in info.value.hint
    assert (runs / "photo-inkwash" / "seed0" / "generator.pt").is_file(), "the other run finished"
    assert not (runs / "photo-inkwash" / "seed3").exists()

    # one process: in turn, here, and still every run is tried
    one = two.model_copy(update={"train": two.train.model_copy(update={"concurrent_runs": 1})})
    shutil.rmtree(runs)
    with pytest.raises(CultureganError, match="photo-inkwash/seed3"):
        stages.train_all_stage(one, one.data.root, runs, track=False)
    assert (runs / "photo-inkwash" / "seed0" / "generator.pt").is_file()


def test_evaluate_and_register_cover_both_cyclegan_directions(params: Params, tmp_path: Path):
    runs, classifier, evals = tmp_path / "runs", tmp_path / "clf", tmp_path / "eval"
    stages.train_stage(params, PAIR, 2, params.data.root, runs)
    stages.classifier_stage(params, params.data.root, classifier)
    scored = stages.evaluate_stage(params, PAIR, 2, params.data.root, runs, classifier, evals)
    assert set(scored) == {"photo-inkwash", "inkwash-photo"}
    for direction in scored:
        metrics = json.loads((evals / "photo-inkwash" / "seed2" / direction / "metrics.json").read_text())
        assert metrics["pair"] == direction and "gan" in metrics["methods"]
        assert metrics["seed"] == 2, "metrics.json records the training seed the analysis groups by"
    decisions = stages.register_stage(params, PAIR, 2, runs, evals, params.data.root)
    assert {d["name"] for d in decisions.values()} == {
        "culturegan-photo-to-inkwash",
        "culturegan-inkwash-to-photo",
    }
    for direction, d in decisions.items():
        # a first model becomes champion exactly when it beats doing nothing (the identity baseline)
        metrics = json.loads((evals / "photo-inkwash" / "seed2" / direction / "metrics.json").read_text())
        identity = metrics["methods"]["identity"][d["metric"]]
        assert d["promoted"] is (d["value"] > identity), (direction, d["reason"])
        assert ("no champion yet" if d["promoted"] else "does not beat doing nothing") in d["reason"]


def test_evaluation_sampling_ignores_the_training_seed_which_changes_only_the_gan(
    params: Params, tmp_path: Path
):
    """params.seed stays the global seed: the same generator scored as training seed 0 and as
    training seed 5 gets the same KID subsets, baselines and controls (identical metrics), while
    training with seed 5 gives another model. KID subsets of 2 images out of 4 make the subset
    draw matter."""
    import torch

    params = params.model_copy(
        update={"evaluation": params.evaluation.model_copy(update={"kid_subsets": 3, "kid_subset_size": 2})}
    )
    runs, classifier, evals = tmp_path / "runs", tmp_path / "clf", tmp_path / "eval"
    stages.train_stage(params, PAIR, 0, params.data.root, runs, track=False)
    stages.train_stage(params, PAIR, 5, params.data.root, runs, track=False)
    zero, five = (runs / "photo-inkwash" / f"seed{k}" for k in (0, 5))
    a, b = (torch.load(d / "generator.pt", map_location="cpu")["state_dict"] for d in (zero, five))
    assert any(torch.is_floating_point(v) and not torch.equal(v, b[k]) for k, v in a.items()), "training uses its seed"
    assert json.loads((five / "train_metrics.json").read_text())["seed"] == 5

    for name in ("generator.pt", "generator_reverse.pt"):  # the seed-0 model, filed as seed 5
        shutil.copyfile(zero / name, five / name)
    stages.classifier_stage(params, params.data.root, classifier)
    for seed in (0, 5):
        stages.evaluate_stage(params, PAIR, seed, params.data.root, runs, classifier, evals)

    def record(seed: int) -> dict:
        return json.loads((evals / "photo-inkwash" / f"seed{seed}" / "photo-inkwash" / "metrics.json").read_text())

    first, second = record(0), record(5)
    assert (first["seed"], second["seed"]) == (0, 5), "the record names its training seed"
    assert first["eval_seed"] == second["eval_seed"] == params.seed == 1
    assert "kid_classifier" in first["methods"]["gan"]
    for method, values in first["methods"].items():
        numbers = {k: v for k, v in values.items() if k != "seconds"}
        assert numbers == {k: v for k, v in second["methods"][method].items() if k != "seconds"}, method
    assert first["controls"] == second["controls"]



def test_stages_in_separate_calls_share_the_workspace_parent_run_until_analyze_ends_it(
    params: Params, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """No id is handed from stage to stage (DVC runs each in its own process): every stage finds
    the open parent run of its workspace in MLflow; analyze ends it, so the next execution starts
    a new one. A killed training resumes in its own pair run, under the same parent."""
    from mlflow import MlflowClient

    from culturegan.evaluation import analysis
    from culturegan.tracking import parent_run
    from culturegan.training import trainer

    client = MlflowClient(params.tracking.tracking_uri)
    runs = tmp_path / "runs"
    monkeypatch.chdir(tmp_path)
    real_train = trainer.train_pair

    def killed(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(trainer, "train_pair", killed)
    with pytest.raises(RuntimeError, match="killed"):
        stages.train_stage(params, PAIR, 0, params.data.root, runs)
    crashed = (stages.checkpoint_dir(params, PAIR, 0) / "run_id.txt").read_text().strip()
    parent = client.get_run(crashed).data.tags["mlflow.parentRunId"]
    monkeypatch.setattr(trainer, "train_pair", real_train)

    first = stages.train_stage(params, PAIR, 0, params.data.root, runs)
    assert (first["mlflow_run_id"], first["mlflow_parent_run_id"]) == (crashed, parent), "resumed"
    second = stages.train_stage(params, PAIR, 1, params.data.root, runs)
    assert second["mlflow_parent_run_id"] == parent and second["mlflow_run_id"] != crashed
    top = client.get_run(parent)
    assert top.info.status == "RUNNING" and top.data.tags[parent_run.WORKSPACE_TAG] == parent_run.workspace()
    assert not list(tmp_path.rglob("mlflow_parent_run_id.txt")), "no id file under .staging"

    def report(params, eval_root, culture_json, classifier_report, runs_root, out_dir):
        (out_dir / "index.html").parent.mkdir(parents=True, exist_ok=True)
        (out_dir / "index.html").write_text("<html></html>")
        return {}

    monkeypatch.setattr(analysis, "write_analysis", report)
    analyzed = stages.analyze_stage(params, runs, out_dir=tmp_path / "report")
    assert analyzed["mlflow_parent_run_id"] == parent
    assert client.get_run(parent).info.status == "FINISHED"
    assert "report/index.html" in {a.path for a in client.list_artifacts(parent, "report")}

    again = stages.train_stage(params, PAIR, 0, params.data.root, runs)
    assert again["mlflow_parent_run_id"] != parent, "the next execution gets a new parent"
    assert again["mlflow_run_id"] != crashed
    # another working copy sharing the tracking store does not take this one's open parent
    (tmp_path / "clone").mkdir()
    monkeypatch.chdir(tmp_path / "clone")
    assert parent_run.start_or_resume_parent(params.tracking, params) != again["mlflow_parent_run_id"]
