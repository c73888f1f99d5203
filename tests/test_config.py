"""params.yaml validation: every bad key or value is one clear error naming the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from culturegan.config import Pair, Params, dump_params, load_params, parse_params
from culturegan.errors import ConfigError


def test_repository_params_yaml_is_valid_and_matches_schema_defaults_for_data():
    params = load_params(REPO_ROOT / "params.yaml")
    assert params.data.is_synthetic
    # params.yaml documents every data/validation key with the schema's default value
    assert dump_params(params)["data"] == dump_params(Params())["data"]
    assert dump_params(params)["validation"] == dump_params(Params())["validation"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"data": {"imgae_size": 32}}, "unknown key 'data.imgae_size' in p.yaml; did you mean 'data.image_size'?"),
        ({"sed": 3}, "did you mean 'seed'?"),
        ({"data": {"synthetic": {"stlyes": ["photo"]}}}, "did you mean 'data.synthetic.styles'?"),
        ({"data": {"image_size": "big"}}, "bad value for 'data.image_size'"),
        ({"data": {"image_size": 4}}, "greater than or equal to 16"),
        ({"data": {"source": "ftp://host/x.zip"}}, "unsupported URI scheme"),
        ({"data": {"synthetic": {"styles": ["photo", "cubism"]}}}, "unknown synthetic style(s) ['cubism']"),
        ({"validation": {"min_size": 100, "max_size": 50}}, "min_size (100) is larger than max_size (50)"),
        ({"data": {"style_names": {"A": "Bad Name"}}}, "bad value for 'data.style_names.A'"),
        ({"train": {"seeds": []}}, "bad value for 'train.seeds'"),
        ({"train": {"seeds": [0, 1, 0]}}, "seeds must not repeat"),
        ({"train": {"seeds": [1, -2]}}, "bad value for 'train.seeds.1'"),
        ({"train": {"seeds": [True]}}, "bad value for 'train.seeds.0'"),
        # values that pass `prepare` but could only fail in `train`: refused at load
        ({"data": {"image_size": 66}}, "bad value for 'data.image_size' in p.yaml: image_size 66 is not a multiple of 4"),
        ({"train": {"crop_size": 30}}, "bad value for 'train.crop_size' in p.yaml: crop_size 30 is not a multiple of 4"),
        ({"data": {"image_size": 32}, "train": {"crop_size": 48}}, "train.crop_size 48 is larger than data.image_size 32"),
        (
            {"data": {"image_size": 16}, "train": {"discriminator": {"n_layers": 3}}},
            "train.discriminator.n_layers 3 is too deep for 16px training images",
        ),
        ({"train": {"pairs": ["photo-cubism"]}}, "train.pairs ['photo-cubism'] name style(s) ['cubism']"),
        (
            {"train": {"pairs": ["photo-inkwash", "photo"]}},
            "bad value for 'train.pairs.1' in p.yaml: 'photo' is not '<source>-<target>' with two style names",
        ),
        ({"train": {"pairs": ["photo-photo"]}}, "'photo-photo' transfers a style to itself (got 'photo-photo')"),
        ({"train": {"pairs": [3]}}, "bad value for 'train.pairs.0' in p.yaml: a culture pair is the text"),
        ({"train": {"pairs": ["photo-inkwash", "photo-inkwash"]}}, "pairs must not repeat"),
        ({"data": {"synthetic": {"styles": ["photo", "inkwash"]}}}, "train.pairs ['photo-ukiyoe', 'photo-impressionist']"),
    ],
)
def test_bad_params_are_one_clear_error_naming_the_key(raw, expected):
    with pytest.raises(ConfigError) as info:
        parse_params(raw, "p.yaml")
    assert expected in str(info.value)


def test_a_cross_section_error_names_its_keys_without_echoing_the_whole_file():
    with pytest.raises(ConfigError) as info:
        parse_params({"data": {"image_size": 32}, "train": {"crop_size": 48}}, "p.yaml")
    assert str(info.value).startswith("bad value in p.yaml: train.crop_size 48")
    assert "'data': {" not in str(info.value)


def test_pairs_of_a_real_source_are_checked_against_its_manifest_not_at_load():
    params = parse_params({"data": {"source": "/some/folder"}, "train": {"pairs": ["photo-cubism"]}})
    assert params.train.pairs == [Pair("photo", "cubism")]


def test_train_pairs_load_as_pairs_and_dump_as_the_text_params_yaml_holds():
    import yaml

    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params = load_params(REPO_ROOT / "params.yaml")
    assert params.train.pairs and all(isinstance(p, Pair) for p in params.train.pairs)
    assert [str(p) for p in params.train.pairs] == raw["train"]["pairs"]
    # dumps feed MLflow params, run fingerprints and the KFP `params` parameter: the text form
    assert dump_params(params)["train"]["pairs"] == raw["train"]["pairs"]
    assert params.model_dump()["train"]["pairs"] == raw["train"]["pairs"]
    assert f'"pairs":{json.dumps(raw["train"]["pairs"], separators=(",", ":"))}' in params.model_dump_json()
    assert parse_params(dump_params(params)) == params
    assert all(isinstance(p, Pair) for p in Params().train.pairs), "defaults are pairs too"
    assert dump_params(Params())["train"]["pairs"] == ["photo-inkwash", "photo-ukiyoe", "photo-impressionist"]


def test_unknown_key_without_close_match_lists_valid_keys():
    with pytest.raises(ConfigError, match="valid keys here: .*image_size"):
        parse_params({"data": {"zzzzzz": 1}})


def test_missing_file_and_invalid_yaml_are_config_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_params(scalar)


def test_empty_params_file_gives_defaults(tmp_path: Path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_params(empty) == Params()


DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    "image",
    ["culturegan:0.1.0", "registry.example.org:5000/team/culturegan:1.2.3",
     f"registry.example.org/team/culturegan@{DIGEST}"],
)
def test_pipeline_image_accepts_a_tag_or_a_pinned_sha256_digest(image: str):
    assert parse_params({"pipeline": {"image": image}}, "p.yaml").pipeline.image == image


@pytest.mark.parametrize(
    "image",
    ["culturegan@sha256:abc", "culturegan@sha256:" + "A" * 64, "culturegan@md5:" + "0" * 64,
     f"culturegan@{DIGEST}@{DIGEST}", "cultur egan:1", ""],
)
def test_pipeline_image_with_a_malformed_digest_is_a_config_error(image: str):
    with pytest.raises(ConfigError, match="pipeline.image"):
        parse_params({"pipeline": {"image": image}}, "p.yaml")


@pytest.mark.parametrize("profile", sorted(p.name for p in (REPO_ROOT / "params").glob("*.yaml")))
def test_every_shipped_params_profile_loads(profile: str):
    """params/*.yaml are run with `cp params/<profile> params.yaml && dvc repro`: each must pass
    the schema as shipped (a typo there would stop a user's run before any work)."""
    params = load_params(REPO_ROOT / "params" / profile)
    assert params.train.pairs, profile


def test_measure_names_and_directions_come_from_one_table():
    """analysis.primary_metric and registry.direction: auto read config/measures.py, the table the
    analysis labels and derives its measures from: a measure added there is a valid choice here."""
    from culturegan.config.measures import MEASURES, PRIMARY_CHOICES, metric_direction
    from culturegan.config.operations import RegistryConfig
    from culturegan.evaluation import measures

    assert measures.MEASURES is MEASURES
    assert set(PRIMARY_CHOICES) == set(MEASURES) - {"kid_raw"}  # the raw KID is circular
    for name in PRIMARY_CHOICES:
        assert parse_params({"analysis": {"primary_metric": name}}).analysis.primary_metric == name
    with pytest.raises(ConfigError, match="primary_metric"):
        parse_params({"analysis": {"primary_metric": "kid_raw"}})
    for name, direction in [("kid_classifier_relative_gain", "higher"), ("kid_inception", "lower"),
                            ("fid_classifier", "lower"), ("gt_ssim_coarse", "higher"),
                            ("gt_hist_hellinger", "lower"), ("style_accuracy", "higher"), ("hf_ratio", None)]:
        assert metric_direction(name) == direction, name
        assert measures.metric_info(name)["direction"] == direction, name
        if direction is not None:
            assert RegistryConfig(metric=name).higher_is_better == (direction == "higher")


def _keys(raw: object, prefix: str = "") -> set[str]:
    if not isinstance(raw, dict):
        return set()
    return {f"{prefix}{k}" for k in raw} | {x for k, v in raw.items() for x in _keys(v, f"{prefix}{k}.")}


@pytest.mark.parametrize("profile", ["realart.yaml", "study.yaml"])
def test_each_profile_is_a_complete_params_file_that_loads(profile: str):
    """README: copy a profile over params.yaml and run the usual commands. So it must load, and
    name every key params.yaml names (a key added to params.yaml is added to the profiles too)."""
    import yaml

    path = REPO_ROOT / "params" / profile
    load_params(path)
    default_keys = _keys(yaml.safe_load((REPO_ROOT / "params.yaml").read_text()))
    profile_keys = _keys(yaml.safe_load(path.read_text()))
    assert not default_keys - profile_keys, f"{profile} lacks {sorted(default_keys - profile_keys)}"
