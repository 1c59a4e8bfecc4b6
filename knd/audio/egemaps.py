"""Utterance-level eGeMAPS functionals (openSMILE's eGeMAPSv02: 88 numbers per clip).

The extended Geneva Minimalistic Acoustic Parameter Set (Eyben et al. 2016) is the standard
hand-made front end of paralinguistics: statistics of F0, loudness, jitter, shimmer, HNR,
formants, spectral slope and rate. It carries what a classifier of time-averaged spectra cannot
see, and a linear model on it is the classical SER baseline. openSMILE's Python package ships the
library and the configuration in its wheel: nothing is downloaded.

It costs ~0.2 s of CPU per 3.6 s clip (the log-mel: ~8 ms), which is why ``knd prepare``
computes it in its distributed tasks. Functionals are taken over the trimmed speech only (never
over padding), so a short clip's statistics are not diluted by silence.
"""

from __future__ import annotations

import functools

import numpy as np

EGEMAPS_ALGORITHM = "opensmile-egemapsv02-v1"
"""Bumped whenever the computation changes, so the group's hash stops matching."""
NUM_FUNCTIONALS = 88
MIN_SECONDS = 0.1
"""openSMILE needs a few frames; shorter input is padded with silence up to this."""


@functools.lru_cache(maxsize=1)
def _smile():
    import opensmile

    # Built once per process: loading the config and the native library is the costly part.
    return opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02,
        feature_level=opensmile.FeatureLevel.Functionals,
    )


def functional_names() -> list[str]:
    """The 88 eGeMAPSv02 functional names, in stored order."""
    return list(_smile().feature_names)


def functionals(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """float32 ``[88]`` eGeMAPSv02 functionals of a mono signal; non-finite values become 0."""
    x = np.nan_to_num(np.asarray(wave, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    minimum = int(MIN_SECONDS * sample_rate)
    if len(x) < minimum:
        x = np.pad(x, (0, minimum - len(x)))
    values = _smile().process_signal(x, sample_rate).to_numpy(dtype=np.float64).reshape(-1)
    if values.shape != (NUM_FUNCTIONALS,):
        raise ValueError(f"eGeMAPS gave {values.shape} values, expected ({NUM_FUNCTIONALS},)")
    return np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
