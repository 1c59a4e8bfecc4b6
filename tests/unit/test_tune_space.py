"""The pure parts of ``knd tune`` and ``knd analyse``: search spaces, fold scores, trial tables.

No Ray session: ``ray.tune``'s domain classes are plain Python objects.
"""

from __future__ import annotations

import csv
import io
import statistics
from pathlib import Path

import numpy as np
import pytest
import torch

from knd.config.loading import config_dir, load_config, load_yaml, replace, to_dict
from knd.config.schema import ConfigError
from knd.learning.experiment import (
    best_config_text,
    best_row,
    best_train_config,
    trial_train_config,
)
from knd.learning.metrics import fold_summary
from knd.learning.search_space import param_space, space_path, space_recipes
from knd.stages.analyse import summary_md, trials_csv
from knd.stages.tune import CrossValidation

SPACES = sorted(p.name for p in (config_dir() / "tune").glob("*.yaml"))


def bases_for(recipes, max_epochs: int = 4) -> dict:
    return {
        r: replace(
            load_config("train", ["data=/tmp/f", f"recipe={r}"]),
            **{"optim.epochs": max_epochs, "split.test_speakers": [1, 2]},
        )
        for r in recipes
    }


def meta_for(recipes=("cpu_small",), max_epochs: int = 4) -> dict:
    return {
        "recipe": recipes[0],
        "bases": {n: to_dict(c) for n, c in bases_for(recipes, max_epochs).items()},
        "max_epochs": max_epochs,
    }


@pytest.mark.parametrize("name", SPACES)
def test_every_shipped_space_builds_a_param_space(name):
    from ray.tune.search.sample import Domain

    path = space_path(f"configs/tune/{name}")
    space = load_yaml(path)
    recipes = space_recipes(space, "cpu_small")
    out = param_space(space, bases_for(recipes), "cpu_small", path)
    assert set(out) == set(space)
    assert any(isinstance(v, Domain) for v in out.values())
    assert Path(path).read_text().startswith("# knd tune ")


def test_space_by_name_and_unknown_space_is_named():
    assert space_path("cpu_small").endswith("configs/tune/cpu_small.yaml")
    with pytest.raises(ConfigError, match="'nope'.*cpu_small"):
        space_path("nope")


@pytest.mark.parametrize(
    ("space", "match"),
    [
        ({"train.num_workers": 2}, "train.num_workers: not searchable"),
        ({"optim.lr": "fast"}, "optim.lr"),
        ({"optim.learning_rate": 0.1}, "learning_rate"),
        ({"optim.lr": {"type": "loguniform", "low": 0.0, "high": 1.0}}, "optim.lr: must be > 0"),
        ({"optim.lr": {"type": "loguniform", "low": 0.5, "high": 0.1}}, "0 < low < high"),
        ({"optim.lr": {"type": "normal", "low": 0.1, "high": 1.0}}, "expected a value"),
        ({"model.width": {"choice": []}}, "non-empty list"),
        ({"recipe": {"choice": ["cpu_small", "tiny"]}}, "unknown recipe 'tiny'"),
    ],
)
def test_bad_space_entries_are_named(space, match):
    with pytest.raises(ConfigError, match=match):
        param_space(space, bases_for(["cpu_small"]), "cpu_small", "space.yaml")


def test_space_values_are_typed_by_the_train_schema():
    from ray.tune.search.sample import Float

    out = param_space(
        {"optim.lr": {"type": "loguniform", "low": "1e-4", "high": "1e-2"}, "model.width": "8"},
        bases_for(["cpu_small"]),
        "cpu_small",
        "space.yaml",
    )
    assert isinstance(out["optim.lr"], Float) and out["model.width"] == 8


def test_trial_config_caps_epochs_and_keeps_the_search_split():
    meta = meta_for(max_epochs=4)
    assert trial_train_config({"optim.lr": 0.01}, meta).optim.epochs == 4
    assert trial_train_config({"optim.epochs": 9}, meta).optim.epochs == 4
    assert trial_train_config({"optim.epochs": 2}, meta).optim.epochs == 2
    tree = best_train_config({"optim.lr": 0.02, "model.width": 8}, meta)
    assert set(tree) == {"recipe", "labels", "split", "model", "optim", "augment"}
    assert tree["optim"]["lr"] == 0.02 and tree["split"]["test_speakers"] == ["1", "2"]


def test_best_config_text_names_its_command_and_loads_as_a_train_config(tmp_path):
    # knd tune and knd analyse both write best_config.yaml with this one function.
    text = best_config_text({"optim.lr": 0.02}, meta_for(max_epochs=4), "/data/f")
    assert text.splitlines()[0] == "# knd train data=/data/f config=best_config.yaml"
    path = tmp_path / "best_config.yaml"
    path.write_text(text)
    cfg = load_config("train", ["data=/data/f", f"config={path}"])
    assert (cfg.optim.lr, cfg.optim.epochs, cfg.split.test_speakers) == (0.02, 4, ("1", "2"))


def test_an_experiment_written_before_a_train_key_existed_still_builds_its_trials():
    meta = meta_for(max_epochs=4)
    base = meta["bases"]["cpu_small"]
    del base["train"]["checkpoint_metric"]
    base["optim"]["lr"] = 0.123
    base["split"] = {"test_actors": [1, 2], "val_actors": [3]}  # before speakers had ids
    cfg = trial_train_config({}, meta)
    assert cfg.train.checkpoint_metric == "val_loss"  # today's cpu_small default
    assert cfg.optim.lr == 0.123  # stored values win
    assert (cfg.split.test_speakers, cfg.split.val_speakers) == (("1", "2"), ("3",))


def test_fold_summary_is_mean_and_population_std():
    scores = [
        {"uar": u, "accuracy": a, "macro_f1": f, "loss": 1.0, "train_loss": 2.0}
        for u, a, f in ((0.2, 0.3, 0.1), (0.6, 0.5, 0.3), (0.4, 0.4, 0.2))
    ]
    out = fold_summary(scores)
    assert out["uar"] == pytest.approx(0.4)
    assert out["uar_std"] == pytest.approx(statistics.pstdev([0.2, 0.6, 0.4]))
    assert out["accuracy_std"] == pytest.approx(statistics.pstdev([0.3, 0.5, 0.4]))
    assert [out[f"uar_fold_{i}"] for i in (1, 2, 3)] == [0.2, 0.6, 0.4]


def six_actor_columns(seed: int) -> dict[str, np.ndarray]:
    """Eight random clips of each of actors 3..8, as the columns CrossValidation reads."""
    rng = np.random.default_rng(seed)
    actors = np.repeat(np.arange(3, 9), 8)
    emotion = rng.integers(1, 9, len(actors)).astype(np.int64)
    return {
        "logmel": rng.normal(size=(len(actors), 16, 20)).astype(np.float16),
        "label": emotion - 1,
        "emotion": emotion,
        "actor": actors,
        "path": np.array([f"a{a}_{i}.wav" for i, a in enumerate(actors)]),
    }


def tiny_cpu_small(**values):
    """cpu_small at width 4 and batch 8, with ``values`` (dotted keys) over it."""
    return replace(
        load_config("train", ["data=/tmp/f", "recipe=cpu_small"]),
        **{"model.width": 4, "optim.batch_size": 8, **values},
    )


def test_cross_validation_trains_each_fold_without_its_actors():
    data = six_actor_columns(0)
    actors = data["actor"]
    cfg = tiny_cpu_small(**{"optim.epochs": 2})
    folds = [[3, 5, 7], [4, 6, 8]]
    cv = CrossValidation(cfg, data, folds, torch.device("cpu"), 8)
    for fold, model in zip(folds, cv.models, strict=True):
        assert set(actors[model.train_rows]).isdisjoint(fold)
        assert set(actors[model.val_rows]) == set(fold)
    state = cv.state_dict()
    out = cv.run_epoch()
    assert out["epoch"] == 1 and out["epochs_planned"] == 2
    assert out["uar"] == pytest.approx((out["uar_fold_1"] + out["uar_fold_2"]) / 2)
    assert state["epoch"] == 0 and cv.state_dict()["epoch"] == 1
    with pytest.raises(ValueError, match=r"actors \[9\] has no clips"):
        CrossValidation(cfg, data, [[3], [9]], torch.device("cpu"), 8)


def test_a_seed_gives_the_same_folds_and_no_global_numpy_draw_changes_them():
    data = six_actor_columns(1)
    cfg = tiny_cpu_small(**{"optim.epochs": 1, "augment.mixup_alpha": 0.4})

    def scores(global_seed: int) -> list:
        np.random.seed(global_seed)  # mixup draws from the learner's generator, not this one
        torch.manual_seed(cfg.train.seed)
        cv = CrossValidation(cfg, data, [[3, 5, 7], [4, 6, 8]], torch.device("cpu"), 8)
        out = cv.run_epoch()
        return [out["uar_fold_1"], out["uar_fold_2"], out["train_loss"]]

    assert scores(0) == scores(12345)


def row(trial_id, uar, std, status="TERMINATED", epochs=3, planned=3, **params):
    return {
        "trial_id": trial_id,
        "status": status,
        "epochs": epochs,
        "epochs_planned": planned,
        "stopped_early": status == "TERMINATED" and epochs < planned,
        "time_s": 10.0,
        "uar": uar,
        "uar_std": std,
        "params": params,
        "history": [],
    } | ({} if uar is None else {"uar_fold_1": uar - std, "uar_fold_2": uar + std})


def test_best_row_prefers_complete_trials_then_smaller_spread():
    rows = [
        row("a", 0.5, 0.10, lr=1),
        row("b", 0.5, 0.05, lr=2),
        row("c", 0.9, 0.0, epochs=1, lr=3),  # stopped early at a better score: not chosen
        row("d", None, None, status="ERROR", epochs=0, lr=4),
    ]
    assert best_row(rows, "uar")["trial_id"] == "b"
    assert best_row([rows[2], rows[3]], "uar")["trial_id"] == "c"
    assert best_row([rows[3]], "uar") is None


def test_trials_csv_ranks_and_summary_counts():
    rows = [row("a", 0.4, 0.1, lr=0.1), row("b", 0.6, 0.0, lr=0.2), row("c", 0.2, 0.1, epochs=1)]
    table = list(csv.DictReader(io.StringIO(trials_csv(rows, "uar"))))
    assert [r["trial_id"] for r in table] == ["b", "a", "c"]
    assert [r["rank"] for r in table] == ["1", "2", "3"]
    assert table[0]["lr"] == "0.2" and table[2]["stopped_early"] == "True"
    assert float(table[1]["uar_fold_2"]) == pytest.approx(0.5)
    text = summary_md("/x/exp", rows, None, None, top=2)
    assert "trials: 3 (3 TERMINATED)" in text and "stopped early by ASHA: 1" in text
    assert text.index("| 1 | b |") < text.index("| 2 | a |") and "| 3 | c |" not in text


def test_optuna_samples_the_shipped_space_and_refuses_grids():
    from knd.stages.tune import search_algorithm

    path = space_path("cpu_small")
    cfg = load_config("tune", ["data=/tmp/f", "search=optuna", "max_concurrent=3"])
    space = param_space(load_yaml(path), bases_for(["cpu_small"]), "cpu_small", path)
    optuna, limit = search_algorithm(cfg, space, path)
    assert limit == 3 and optuna.set_search_properties("uar", "max", space)
    sample = optuna.suggest("trial_1")
    sampled = {k for k, v in space.items() if not isinstance(v, str | int | float)}
    assert set(sample) == sampled and 3.0e-4 <= sample["optim.lr"] <= 1.0e-2
    grid = param_space(
        {"optim.lr": {"grid": [0.1, 0.2]}}, bases_for(["cpu_small"]), "cpu_small", "g.yaml"
    )
    with pytest.raises(ConfigError, match="g.yaml: grid keys need search=random"):
        search_algorithm(cfg, grid, "g.yaml")
    random, limit = search_algorithm(replace(cfg, search="random"), grid, "g.yaml")
    assert limit is None and random.max_concurrent == 3


def test_the_fused_space_searches_feature_groups_and_names_every_group_it_may_read():
    from knd.learning.search_space import space_groups

    path = space_path("fused_cnn")
    space = load_yaml(path)
    bases = bases_for(space_recipes(space, "cpu_small"))
    out = param_space(space, bases, "cpu_small", path)
    assert len(out["model.groups"].categories) == 4
    assert space_groups(space, bases.values()) == ["logmel", "prosody", "egemaps"]
    assert space_groups(load_yaml(space_path("cpu_small")), bases.values()) == ["logmel"]


def test_the_experiment_records_its_features_under_their_own_key_and_old_ones_still_read():
    from knd.data.shards import manifest_from_v1, manifest_groups
    from knd.learning.experiment import experiment_groups, experiment_meta

    manifest_v1 = {
        "feature_params": {"n_mels": 64},
        "feature_hash": "abc",
        "feature_shape": [64, 301],
        "feature_groups": {"prosody": {"hash": "p", "shape": [4, 301], "dtype": "float16"}},
        "rows_per_actor": {str(a): 4 for a in range(1, 9)},
    }
    manifest = manifest_from_v1(manifest_v1)
    cfg = load_config("tune", ["data=/tmp/f", "test_speakers=[1,2]", "folds=2"])
    meta = experiment_meta(cfg, manifest)
    assert not any(key.startswith("feature_") for key in meta)
    assert meta["features"]["params"] == {"n_mels": 64}
    assert meta["features"]["groups"]["logmel"]["hash"] == "abc"
    assert experiment_groups(meta) == {"logmel": "abc", "prosody": "p"}
    older = {"feature_hash": "abc", "feature_groups": manifest_groups(manifest)}
    assert experiment_groups(older) == {"logmel": "abc", "prosody": "p"}
    assert experiment_groups({"feature_hash": "abc"}) == {"logmel": "abc"}
