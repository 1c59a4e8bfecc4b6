"""Small inputs shared by unit tests: tones, encoded audio, required keys, checkpoint meta."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf

from knd.data.ravdess import EMOTIONS

REQUIRED = {
    "synth": ["out=/tmp/x"],
    "download": ["out=/tmp/x"],
    "prepare": ["input=/tmp/a", "output=/tmp/b"],
    "train": ["data=/tmp/f"],
    "evaluate": ["checkpoint=/tmp/c", "data=/tmp/f"],
    "tune": ["data=/tmp/f"],
    "analyse": ["experiment=/tmp/e"],
    "score": ["checkpoint=/tmp/c", "input=/tmp/a", "output=/tmp/s.csv"],
}
"""The keys each command needs before any other key can be checked."""


def tone(seconds: float, sr: int, freq: float = 220.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def encode(x: np.ndarray, sr: int, fmt: str = "WAV", subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def checkpoint_meta(width: int = 8) -> dict:
    """A valid (version-2) ``meta.json`` of a width-``width`` cpu_small checkpoint."""
    return {
        "version": 2,
        "label_set": "ravdess8",
        "labels": list(EMOTIONS),
        "feature_params": {"n_mels": 64},
        "groups": {"logmel": "abc123"},
        "model": {"name": "cpu_small", "width": width, "dropout": 0.2},
        "group_norm": {"logmel": {"mean": [0.0] * 64, "std": [1.0] * 64}},
        "split": {"train": [5, 6], "val": [3, 4], "test": [1, 2]},
    }


def checkpoint_meta_v1(width: int = 8) -> dict:
    """The same checkpoint's meta as version 1 wrote it (the log-mel apart from the groups)."""
    meta = checkpoint_meta(width)
    del meta["version"], meta["groups"], meta["group_norm"]
    return meta | {
        "feature_hash": "abc123",
        "feature_shape": [64, 301],
        "norm": {"mean": [0.0] * 64, "std": [1.0] * 64},
    }
