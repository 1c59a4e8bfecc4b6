"""Metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from knd.learning.metrics import per_class_metrics, split_metrics

# Three classes; worked out by hand:
# confusion (rows true, cols predicted) = [[2,1,0],[0,2,0],[1,0,0]]
# recall = 2/3, 2/2, 0/1 -> UAR 5/9; precision = 2/3, 2/3, 0 -> F1 = 2/3, 4/5, 0
TARGETS = [0, 0, 0, 1, 1, 2]
PREDS = [0, 0, 1, 1, 1, 0]
ACTORS = [1, 1, 2, 2, 2, 1]


def test_split_metrics_match_the_hand_computed_values():
    m = split_metrics(PREDS, TARGETS, num_classes=3, actors=ACTORS)
    assert m["n"] == 6
    assert m["confusion"] == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["uar"] == pytest.approx(5 / 9)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 4 / 5 + 0) / 3)
    # actor 1: rows 0, 1, 5 -> 2 of 3 right; actor 2: rows 2, 3, 4 -> 2 of 3 right
    assert m["per_actor"] == {"1": pytest.approx(2 / 3), "2": pytest.approx(2 / 3)}


def test_uar_does_not_reward_predicting_the_majority_class():
    targets = np.array([0] * 8 + [1] + [2])
    m = split_metrics(np.zeros(10, dtype=int), targets, num_classes=3)
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["uar"] == pytest.approx(1 / 3)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="3 predictions for 2 targets"):
        split_metrics([0, 1, 2], [0, 1], num_classes=3)
    with pytest.raises(ValueError, match="no rows"):
        split_metrics([], [], num_classes=3)


def test_per_class_metrics_match_the_hand_computed_values():
    rows = per_class_metrics([[2, 1, 0], [0, 2, 0], [1, 0, 0]])
    assert [r["n"] for r in rows] == [3, 2, 1]
    assert [r["recall"] for r in rows] == pytest.approx([2 / 3, 1.0, 0.0])
    assert [r["precision"] for r in rows] == pytest.approx([2 / 3, 2 / 3, 0.0])
    assert [r["f1"] for r in rows] == pytest.approx([2 / 3, 4 / 5, 0.0])
    # their mean is what torchmetrics reports as UAR and macro-F1
    m = split_metrics(PREDS, TARGETS, num_classes=3)
    assert np.mean([r["recall"] for r in rows]) == pytest.approx(m["uar"])
    assert np.mean([r["f1"] for r in rows]) == pytest.approx(m["macro_f1"])


def test_metrics_module_writes_no_files():
    from pathlib import Path

    import knd.learning.metrics

    source = Path(knd.learning.metrics.__file__).read_text()
    assert "storage" not in source and "open(" not in source
