"""A model that returns NaN for any window of a file fails that file with a reason."""

from __future__ import annotations

import numpy as np
import pandas as pd

from knd.stages.score import aggregate


def test_non_finite_probabilities_become_an_error_not_a_label():
    windows = pd.DataFrame(
        {
            "path": ["a.wav", "a.wav", "b.wav"],
            "window": [0, 1, 0],
            "n_windows": [2, 2, 1],
            "start": [0.0, 1.5, 0.0],
            "end": [3.0, 4.5, 3.0],
            "duration": [4.5, 4.5, 3.0],
            "error": ["", "", ""],
            "probs": [np.array([0.5, 0.5]), np.array([np.nan, np.nan]), np.array([0.3, 0.7])],
        }
    )
    for per_window in (False, True):
        table = aggregate(windows, ["x", "y"], per_window=per_window)
        bad = table["path"].eq("a.wav") & (table["window"].eq(1) if per_window else True)
        assert (table.loc[bad, "error"] == "non-finite probabilities").all()
        assert (table.loc[bad, "label"] == "").all() and table.loc[bad, "confidence"].isna().all()
        good = table[table["error"] == ""]
        assert np.isfinite(good[["p_x", "p_y", "confidence"]].to_numpy()).all()
        assert "b.wav" in set(good["path"])
