"""Metrics against hand-computed values, and the report files they produce."""

from __future__ import annotations

import json

import numpy as np
import pytest

from knd.metrics import (
    CONFUSION_FILE,
    METRICS_FILE,
    confusion_figure,
    metrics_report,
    split_metrics,
    write_report,
)

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


def test_report_files(tmp_path):
    labels = ["neutral", "happy", "sad"]
    test = split_metrics(PREDS, TARGETS, 3, actors=ACTORS)
    report = metrics_report(labels, test=test, val=test, test_actors=(1, 2), best_epoch=3)
    write_report(str(tmp_path), report)

    written = json.loads((tmp_path / METRICS_FILE).read_text())
    assert written == json.loads(json.dumps(report))
    assert set(written) >= {"labels", "test", "val", "test_actors"}
    assert set(written["test"]) >= {"accuracy", "uar", "macro_f1", "n", "confusion"}
    png = (tmp_path / CONFUSION_FILE).read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


def test_confusion_figure_survives_a_class_with_no_clips():
    png = confusion_figure([[3, 0], [0, 0]], ["a", "b"], "empty row")
    assert png.startswith(b"\x89PNG")
