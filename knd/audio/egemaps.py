"""Utterance-level eGeMAPS functionals (openSMILE's eGeMAPSv02: 88 numbers per clip).

The extended Geneva Minimalistic Acoustic Parameter Set (Eyben et al. 2016) is the standard
hand-made front end of paralinguistics: statistics of F0, loudness, jitter, shimmer, HNR,
formants, spectral slope and rate. It carries what a classifier of time-averaged spectra cannot
see, and a linear model on it is the classical SER baseline. openSMILE's Python package ships the
library and the configuration in its wheel: nothing is downloaded.

Each thread keeps one configured openSMILE instance per sample rate and reruns it for every clip
(:mod:`knd.audio.smile_session`): the same numbers as ``opensmile.Smile.process_signal``
without its per-call configuration parse and pandas frames. It still costs ~10 ms of CPU per
second of speech (the log-mel: ~1 ms), which is why ``knd prepare`` computes it in its
distributed tasks. Functionals are taken over the trimmed speech only (never over padding), so a
short clip's statistics are not diluted by silence.
"""

from __future__ import annotations

import functools
import threading

import numpy as np

from knd.audio.smile_session import SmileSession

EGEMAPS_ALGORITHM = "opensmile-egemapsv02-v1"
"""Bumped whenever the computation changes, so the group's hash stops matching."""
NUM_FUNCTIONALS = 88
MIN_SECONDS = 0.1
"""openSMILE needs a few frames; shorter input is padded with silence up to this."""

_sessions = threading.local()


def _session(sample_rate: int) -> SmileSession:
    """This thread's eGeMAPS session at ``sample_rate`` (built on first use: ~5 ms)."""
    by_rate = _sessions.__dict__.setdefault("by_rate", {})
    if sample_rate not in by_rate:
        import opensmile

        by_rate[sample_rate] = SmileSession(
            opensmile.FeatureSet.eGeMAPSv02, opensmile.FeatureLevel.Functionals, sample_rate
        )
    return by_rate[sample_rate]


@functools.lru_cache(maxsize=1)
def functional_names() -> list[str]:
    """The 88 eGeMAPSv02 functional names, in stored order."""
    return list(_session(16000).feature_names)


def functionals(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """float32 ``[88]`` eGeMAPSv02 functionals of a mono signal; non-finite values become 0."""
    x = np.nan_to_num(np.asarray(wave, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    minimum = int(MIN_SECONDS * sample_rate)
    if len(x) < minimum:
        x = np.pad(x, (0, minimum - len(x)))
    try:
        frames = _session(sample_rate).process(x)
    except Exception:
        # A failed run leaves the native instance in an unknown state: the next call builds anew.
        _sessions.__dict__.get("by_rate", {}).pop(sample_rate, None)
        raise
    if frames.shape[0] == 0:  # openSMILE gave no frame: Smile's own fill, NaN (here 0)
        frames = np.zeros((1, NUM_FUNCTIONALS), dtype=np.float32)
    values = frames.reshape(-1)
    if values.shape != (NUM_FUNCTIONALS,):
        raise ValueError(f"eGeMAPS gave {values.shape} values, expected ({NUM_FUNCTIONALS},)")
    return np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
