"""``history.jsonl`` holds every epoch once, even when a recovery reports epochs again."""

from __future__ import annotations

from knd.learning.report import append_history, read_history


def test_a_recovered_run_does_not_repeat_epochs(tmp_path):
    for epoch in (1, 2, 3):
        append_history(str(tmp_path), {"epoch": epoch, "val_uar": 0.1 * epoch})
    # A worker died after epoch 3 was logged but the last checkpoint kept was epoch 2:
    # training resumes from it and reports epoch 3 again, then 4.
    append_history(str(tmp_path), {"epoch": 3, "val_uar": 0.35})
    append_history(str(tmp_path), {"epoch": 4, "val_uar": 0.4})

    history = read_history(str(tmp_path))
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[2]["val_uar"] == 0.35
