"""Score's pure core: windowing follows prepare's path exactly, and windows aggregate per file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from knd.audio.features import clip_features, feature_shape, file_windows
from knd.config.loading import load_config
from knd.stages.score import aggregate, stage_cpus


@pytest.fixture(scope="module")
def params():
    return load_config("prepare", ["input=x", "output=y"]).features


def voice(seconds: float, sr: int, f0: float = 170.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    wave = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 1.3 * t) ** 2
    return (0.2 * wave * envelope).astype(np.float32)


@pytest.mark.parametrize("sr,channels", [(48000, 1), (44100, 2), (16000, 1)])
def test_a_short_file_gets_exactly_its_prepared_features(params, sr, channels):
    silence = np.zeros(sr // 2, np.float32)
    mono = np.concatenate([silence, voice(2.2, sr), silence])  # longer than a clip before trimming
    samples = np.stack([mono] * channels, axis=1) if channels > 1 else mono[:, None]
    wins = file_windows(samples, sr, params, hop_seconds=1.5)
    assert len(wins) == 1
    np.testing.assert_array_equal(wins[0].groups["logmel"], clip_features(samples, sr, params)[0])
    # Times are in the original file: the leading half second of silence was trimmed.
    assert wins[0].start == pytest.approx(0.5, abs=0.02)
    assert wins[0].end == pytest.approx(2.7, abs=0.02)


def test_a_long_file_is_cut_into_overlapping_windows_covering_it(params):
    sr = params.sample_rate
    wins = file_windows(voice(10.0, sr)[:, None], sr, params, hop_seconds=1.5)
    starts = [w.start for w in wins]
    assert starts[:3] == pytest.approx([0.0, 1.5, 3.0])
    assert wins[-1].end == pytest.approx(10.0)
    assert all(w.end - w.start == pytest.approx(params.clip_seconds) for w in wins)
    assert len(wins) == 6  # 0, 1.5, 3, 4.5, 6 and one aligned to the end (7)
    assert all(w.groups["logmel"].shape == feature_shape(params) for w in wins)


def test_windows_average_per_file_and_errors_stay_rows():
    labels = ["a", "b"]
    windows = pd.DataFrame(
        {
            "path": ["long.wav", "bad.wav", "long.wav", "short.wav"],
            "window": [1, 0, 0, 0],
            "n_windows": [2, 1, 2, 1],
            "start": [1.0, np.nan, 0.0, 0.1],
            "end": [4.0, np.nan, 3.0, 2.0],
            "duration": [4.0, np.nan, 4.0, 2.0],
            "error": ["", "empty file (0 bytes)", "", ""],
            "probs": [np.array([0.2, 0.8]), np.full(2, np.nan), np.array([0.6, 0.4]), [0.9, 0.1]],
        }
    )
    table = aggregate(windows, labels, per_window=False)
    assert list(table["path"]) == ["bad.wav", "long.wav", "short.wav"]
    assert list(table.columns) == ["path", "label", "confidence", "p_a", "p_b", "duration", "error"]
    assert table.loc[1, "p_a"] == pytest.approx(0.4) and table.loc[1, "label"] == "b"
    assert table.loc[1, "confidence"] == pytest.approx(0.6)
    assert table.loc[0, "error"] == "empty file (0 bytes)" and table.loc[0, "label"] == ""
    assert np.isnan(table.loc[0, "confidence"])
    per_window = aggregate(windows, labels, per_window=True)
    assert len(per_window) == 4
    assert list(per_window.columns[:4]) == ["path", "window", "start", "end"]
    assert list(per_window["label"]) == ["", "a", "b", "a"]


def test_cpu_stages_ask_for_the_same_cpus_so_ray_fuses_them():
    assert stage_cpus(2, 2, use_gpu=False) == 1.0
    assert stage_cpus(2, 4, use_gpu=False) == 0.5
    assert stage_cpus(16, 2, use_gpu=False) == 1.0
    assert stage_cpus(2, 2, use_gpu=True) == 1.0
