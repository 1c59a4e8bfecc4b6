"""Every shipped config loads; overrides are typed; a misspelt key is named in the error."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml
from samples import REQUIRED

from knd.config.commands import COMMANDS
from knd.config.keys import describe
from knd.config.loading import config_dir, load_config, parse_overrides, replace, to_dict
from knd.config.schema import ConfigError
from knd.data.speakers import default_split


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_config_loads(command):
    cfg = load_config(command, REQUIRED[command])
    assert dataclasses.is_dataclass(cfg)
    assert describe(command).count("\n") >= 1


def test_every_shipped_yaml_parses_and_is_used():
    files = sorted(config_dir().rglob("*.yaml"))
    assert files, "no configs shipped"
    for path in files:
        assert isinstance(yaml.safe_load(path.read_text()) or {}, dict), path
    top_level = {p.stem for p in config_dir().glob("*.yaml")}
    assert top_level == set(COMMANDS)


@pytest.mark.parametrize(
    "recipe", sorted(p.stem for p in (config_dir() / "recipes").glob("*.yaml"))
)
def test_every_recipe_builds_a_train_config(recipe):
    cfg = load_config("train", ["data=/tmp/f", f"recipe={recipe}"])
    assert cfg.recipe == recipe
    assert cfg.model.name in (
        "cpu_small", "plain_cnn", "fused_cnn", "egemaps_mlp", "egemaps_linear", "late_fusion",
        "embedding_head", "encoder_finetune", "resnet18", "resnet34", "vgg11_bn", "vgg16_bn",
    )  # fmt: skip


def test_the_default_recipe_spends_no_speakers_on_model_selection():
    # Issue 16's schedule (all non-test actors, one-cycle, last epoch); issue 20's fused model.
    cfg = load_config("train", ["data=/tmp/f"])
    assert (cfg.recipe, cfg.model.name, cfg.model.width) == ("fused_cnn", "fused_cnn", 32)
    assert cfg.model.groups == ("logmel", "prosody", "egemaps")
    prepare = load_config("prepare", ["input=/tmp/a", "output=/tmp/b"])
    assert set(cfg.model.groups) <= set(prepare.features.groups)  # the defaults fit together
    assert cfg.split.val_speakers == () and cfg.split.test_speakers is None  # the first fold
    assert (cfg.optim.schedule, cfg.optim.batch_size, cfg.optim.epochs) == ("onecycle", 32, 20)
    # The old default keeps its validation group when asked for by name.
    old = load_config("train", ["data=/tmp/f", "recipe=cpu_small"])
    assert old.split.val_speakers is None and old.optim.schedule == "cosine"  # the second fold
    ravdess = {"rows_per_actor": {str(a): 60 for a in range(1, 25)}}
    assert default_split(ravdess, None, None) == ((1, 11, 20, 21), (4, 10, 12, 14))


def test_shipped_yaml_starts_with_the_command_that_runs_it():
    for path in sorted(config_dir().glob("*.yaml")) + sorted(config_dir().glob("recipes/*.yaml")):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# knd "), f"{path} should start with '# knd <command> ...'"


def test_misspelt_key_is_named():
    with pytest.raises(ConfigError, match="'actor'"):
        load_config("synth", ["out=/tmp/x", "actor=3"])


def test_misspelt_nested_key_is_named():
    with pytest.raises(ConfigError, match="optim.learning_rate"):
        load_config("train", ["data=/tmp/f", "optim.learning_rate=0.1"])


def test_missing_required_key_is_named():
    with pytest.raises(ConfigError, match="'data'"):
        load_config("train", [])


def test_overrides_are_typed():
    cfg = load_config(
        "train",
        ["data=/tmp/f", "optim.lr=1e-3", "split.test_speakers=[2,3]", "train.use_gpu=true"],
    )
    assert cfg.optim.lr == pytest.approx(1e-3)
    assert cfg.split.test_speakers == ("2", "3")
    assert cfg.train.use_gpu is True


@pytest.mark.parametrize(
    "override,match",
    [
        ("optim.epochs=many", "optim.epochs"),
        ("optim.epochs=2.5", "optim.epochs"),
        ("train.use_gpu=3", "train.use_gpu"),
        ("labels=[all,ravdess7]", "labels"),
        ("recipe=nope", "unknown recipe"),
    ],
)
def test_bad_values_are_rejected_with_their_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config("train", ["data=/tmp/f", override])


def test_layering_recipe_then_file_then_cli(tmp_path: Path):
    best = tmp_path / "best.yaml"
    best.write_text(yaml.safe_dump({"recipe": "resnet18", "optim": {"lr": 0.0123, "epochs": 7}}))
    cfg = load_config("train", ["data=/tmp/f", f"config={best}", "optim.epochs=3"])
    assert cfg.model.name == "resnet18"  # from the recipe the file chose
    assert cfg.optim.lr == pytest.approx(0.0123)  # from the file
    assert cfg.optim.epochs == 3  # the command line wins


def test_config_round_trips_through_yaml(tmp_path: Path):
    cfg = load_config("train", ["data=/tmp/f", "optim.lr=0.02"])
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(to_dict(cfg)))
    again = load_config("train", [f"config={path}"])
    assert again == cfg


def test_replace_revalidates():
    cfg = load_config("train", ["data=/tmp/f"])
    assert replace(cfg, **{"optim.lr": 0.5}).optim.lr == 0.5
    with pytest.raises(ConfigError, match="optim.nope"):
        replace(cfg, **{"optim.nope": 1})


def test_parse_overrides_nests_and_parses_lists():
    assert parse_overrides(["a.b=1", "c=[1, 2]", "d=s3://x/y"]) == {
        "a": {"b": 1},
        "c": [1, 2],
        "d": "s3://x/y",
    }
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["novalue"])
