"""The culture pair type: parsed once where a pair comes in as text, its text everywhere it goes out."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

from culturegan.config import Pair
from culturegan.errors import ConfigError

NOT_A_PAIR = "is not '<source>-<target>' with two style names, e.g. 'photo-inkwash'"


@pytest.mark.parametrize("text", ["photo-inkwash", "inkwash-photo", "a-b", "style_2-gold_ground"])
def test_parse_gives_source_and_target_and_str_gives_the_text_back(text: str):
    pair = Pair.parse(text)
    assert (pair.source, pair.target) == tuple(text.split("-"))
    assert str(pair) == text and f"{pair}" == text
    assert Pair.parse(str(pair)) == pair


def test_reversed_is_the_opposite_direction():
    pair = Pair("photo", "inkwash")
    assert pair.reversed() == Pair("inkwash", "photo")
    assert str(pair.reversed()) == "inkwash-photo"
    assert pair.reversed().reversed() == pair
    assert pair != pair.reversed()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("photo", f"'photo' {NOT_A_PAIR}"),
        ("photo_inkwash", f"'photo_inkwash' {NOT_A_PAIR}"),
        ("photo-ink-wash", f"'photo-ink-wash' {NOT_A_PAIR}"),
        ("Photo-inkwash", f"'Photo-inkwash' {NOT_A_PAIR}"),
        ("photo-", f"'photo-' {NOT_A_PAIR}"),
        ("-inkwash", f"'-inkwash' {NOT_A_PAIR}"),
        ("", f"'' {NOT_A_PAIR}"),
        ("photo-photo", "'photo-photo' transfers a style to itself"),
    ],
)
def test_a_malformed_pair_is_a_config_error_naming_it_with_a_hint(text: str, problem: str):
    with pytest.raises(ConfigError) as info:
        Pair.parse(text)
    assert info.value.message == f"bad culture pair: {problem}"
    assert info.value.hint == "use a pair of train.pairs in params.yaml"


def test_the_constructor_keeps_the_same_rules_so_every_pair_round_trips_through_its_text():
    with pytest.raises(ValueError, match="transfers a style to itself"):
        Pair("photo", "photo")
    with pytest.raises(ValueError, match=NOT_A_PAIR.split(",")[0]):
        Pair("photo-ink", "wash")  # would print as 'photo-ink-wash', which parses to nothing
    with pytest.raises(ValueError, match=NOT_A_PAIR.split(",")[0]):
        Pair("photo", None)  # type: ignore[arg-type]


def test_a_pair_is_an_immutable_hashable_value_not_its_text():
    pair = Pair("photo", "inkwash")
    with pytest.raises(dataclasses.FrozenInstanceError):
        pair.source = "ukiyoe"  # type: ignore[misc]
    assert len({pair, Pair("photo", "inkwash"), pair.reversed()}) == 2
    assert pair != "photo-inkwash", "text must be parsed, not compared"


def test_paths_use_the_pair_text():
    from culturegan.stages import seed_dir

    assert seed_dir(Path("runs"), Pair("photo", "inkwash"), 3) == Path("runs/photo-inkwash/seed3")


def test_cyclegan_serves_the_reversed_pair_only_with_its_second_generator(tmp_path: Path):
    from culturegan.config import Params
    from culturegan.stages import directions

    pair = Pair("photo", "inkwash")
    assert directions(Params(), pair, tmp_path) == {pair: "generator.pt"}
    (tmp_path / "generator_reverse.pt").touch()
    assert directions(Params(), pair, tmp_path) == {
        pair: "generator.pt",
        Pair("inkwash", "photo"): "generator_reverse.pt",
    }
    fastcut = Params.model_validate({"train": {"objective": "fastcut"}})
    assert directions(fastcut, pair, tmp_path) == {pair: "generator.pt"}


@pytest.mark.parametrize("command", ["train", "evaluate", "register"])
def test_cli_parses_pair_at_the_edge_a_bad_one_is_one_error_line_and_a_hint(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    from culturegan.cli import run

    argv = ["culturegan", command, "--params", str(REPO_ROOT / "params.yaml"), "--pair", "photo_inkwash"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_:
        run()
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert err.strip().splitlines() == [
        f"error: bad culture pair: 'photo_inkwash' {NOT_A_PAIR}",
        "hint: use a pair of train.pairs in params.yaml",
    ]
