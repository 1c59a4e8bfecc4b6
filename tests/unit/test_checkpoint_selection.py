"""Which reported epoch becomes the run's checkpoint (``train.checkpoint_metric``)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from knd.config.loading import load_config
from knd.data.ravdess import split_actors
from knd.stages.train import kept_checkpoint, model_selection

# Shaped like the end of a cosine schedule: UAR peaks by one clip mid-way, loss keeps falling.
REPORTS = [
    {"epoch": 17, "val_uar": 0.984, "val_loss": 0.210},
    {"epoch": 24, "val_uar": 0.961, "val_loss": 0.165},
    {"epoch": 26, "val_uar": 0.961, "val_loss": 0.165},
]


def _result(reports: list[dict]) -> SimpleNamespace:
    # The two fields of ray.train.Result that kept_checkpoint reads.
    return SimpleNamespace(best_checkpoints=[(f"ckpt-{m['epoch']}", m) for m in reports], path="x")


def _cfg(metric: str):
    return load_config("train", ["data=d", f"train.checkpoint_metric={metric}"])


def test_val_uar_picks_the_highest_uar():
    checkpoint, metrics = kept_checkpoint(_result(REPORTS), _cfg("val_uar"), has_val=True)
    assert checkpoint == "ckpt-17" and metrics["epoch"] == 17


def test_val_loss_picks_the_lowest_loss_and_the_later_epoch_on_a_tie():
    checkpoint, _ = kept_checkpoint(_result(REPORTS), _cfg("val_loss"), has_val=True)
    assert checkpoint == "ckpt-26"


def test_without_validation_the_last_epoch_is_kept_whatever_the_metric():
    reports = [{"epoch": e} for e in (3, 5, 4)]
    checkpoint, _ = kept_checkpoint(_result(reports), _cfg("val_uar"), has_val=False)
    assert checkpoint == "ckpt-5"


def test_model_selection_is_described_without_the_test_actors():
    with_val = model_selection(split_actors([1, 2], [3, 4], actors=range(1, 9)), "val_loss")
    assert with_val == "best epoch by val_loss on validation actors [3, 4]"
    no_val = model_selection(split_actors([1, 2], [], actors=range(1, 9)), "val_loss")
    assert no_val.startswith("fixed schedule: last epoch")


def test_no_checkpoint_is_an_error_naming_the_run():
    with pytest.raises(RuntimeError, match="run folder x"):
        kept_checkpoint(_result([]), _cfg("val_uar"), has_val=True)


def test_an_unknown_checkpoint_metric_is_refused_by_the_schema():
    with pytest.raises(ValueError, match="checkpoint_metric"):
        _cfg("val_acc")
