"""Small inputs shared by unit tests: tones, encoded audio, each command's required keys."""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf

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
