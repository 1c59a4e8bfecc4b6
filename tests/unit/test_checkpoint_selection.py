"""Which reported epoch becomes the run's checkpoint (``train.checkpoint_metric``)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from knd.config import load_config
from knd.train import _best, checkpoint_order

# Shaped like the end of a cosine schedule: UAR peaks by one clip mid-way, loss keeps falling.
REPORTS = [
    {"epoch": 17, "val_uar": 0.984, "val_loss": 0.210},
    {"epoch": 24, "val_uar": 0.961, "val_loss": 0.165},
    {"epoch": 26, "val_uar": 0.961, "val_loss": 0.165},
]


def _result(reports: list[dict]) -> SimpleNamespace:
    # The two fields of ray.train.Result that _best reads.
    return SimpleNamespace(best_checkpoints=[(f"ckpt-{m['epoch']}", m) for m in reports], path="x")


def test_val_uar_picks_the_highest_uar():
    checkpoint, metrics = _best(_result(REPORTS), "val_uar")
    assert checkpoint == "ckpt-17" and metrics["epoch"] == 17


def test_val_loss_picks_the_lowest_loss_and_the_later_epoch_on_a_tie():
    checkpoint, _ = _best(_result(REPORTS), "val_loss")
    assert checkpoint == "ckpt-26"


def test_orders_and_unknown_metric():
    assert checkpoint_order("val_uar") == "max" and checkpoint_order("val_loss") == "min"
    with pytest.raises(ValueError, match="val_acc"):
        checkpoint_order("val_acc")


def test_no_checkpoint_is_an_error_naming_the_run():
    with pytest.raises(RuntimeError, match="run folder x"):
        _best(_result([]), "val_uar")


def test_the_cpu_recipe_selects_by_loss_and_the_default_by_uar():
    assert load_config("train", ["data=d"]).train.checkpoint_metric == "val_loss"
    assert load_config("train", ["data=d", "recipe=resnet18"]).train.checkpoint_metric == "val_uar"
