"""The learning-rate schedules of ``knd.learning.engine.lr_at`` (``optim.schedule``)."""

from __future__ import annotations

import pytest
import torch

from knd.learning.engine import lr_at


@pytest.mark.parametrize(("total", "warmup"), [(100, 30), (57, 11), (20, 0)])
def test_onecycle_matches_torch_one_cycle_lr(total, warmup):
    # torch's OneCycleLR with cosine annealing and no momentum cycling, step by step.
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    reference = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=0.01, total_steps=total, pct_start=max(warmup, 2) / total,
        anneal_strategy="cos", cycle_momentum=False,
    )  # fmt: skip
    if warmup < 2:  # torch needs a rise of at least one step; ours then starts at the peak
        assert lr_at(0, total, warmup, 0.01, "onecycle") == pytest.approx(0.01)
        return
    for step in range(total):
        expected = optimizer.param_groups[0]["lr"]
        assert lr_at(step, total, warmup, 0.01, "onecycle") == pytest.approx(expected, rel=1e-9)
        optimizer.step()
        reference.step()


def test_onecycle_rises_from_a_25th_and_ends_near_zero():
    lrs = [lr_at(s, 200, 60, 0.003, "onecycle") for s in range(200)]
    assert lrs[0] == pytest.approx(0.003 / 25)
    assert max(lrs) == pytest.approx(0.003) and lrs.index(max(lrs)) == 59
    assert lrs[-1] == pytest.approx(0.003 / 25 / 1e4)
    assert all(a <= b for a, b in zip(lrs[:59], lrs[1:60], strict=True))
    assert all(a >= b for a, b in zip(lrs[59:-1], lrs[60:], strict=True))


def test_cosine_is_unchanged_and_unknown_schedules_are_refused():
    assert lr_at(0, 100, 10, 0.01) == pytest.approx(0.001)  # linear warm-up
    assert lr_at(10, 100, 10, 0.01, "cosine") == pytest.approx(0.01)
    assert lr_at(100, 100, 10, 0.01) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="optim.schedule must be cosine or onecycle"):
        lr_at(0, 100, 10, 0.01, "step")
