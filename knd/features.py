"""Log-mel features: one pure function shared by ``prepare`` (clips) and ``score`` (windows).

Training and scoring both go through :func:`clip_features`, and every stored feature set carries
:func:`feature_hash` of its parameters, so features made with other parameters are refused.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json

import numpy as np

from knd import audio
from knd.config import FeatureConfig

FEATURE_ALGORITHM = "logmel-db-v1"
"""Bumped whenever the computation changes for the same parameters, so old hashes stop matching."""

LOG_FLOOR = 1e-10
"""Mel power floor before the log: -100 dB, far below 16-bit quantisation noise."""


def feature_hash(params: FeatureConfig) -> str:
    """A stable 16-hex-digit hash of the feature parameters and the algorithm version."""
    payload = {"algorithm": FEATURE_ALGORITHM, **dataclasses.asdict(params)}
    for key, value in payload.items():
        if isinstance(value, float) and value.is_integer():
            payload[key] = int(value)  # 3.0 and 3 are the same parameter
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def clip_samples(params: FeatureConfig) -> int:
    """Samples in one fixed-length clip at the feature rate."""
    return int(round(params.clip_seconds * params.sample_rate))


def feature_shape(params: FeatureConfig) -> tuple[int, int]:
    """``(n_mels, n_frames)`` of one clip's features (centred STFT frames)."""
    return params.n_mels, 1 + clip_samples(params) // params.hop_length


@functools.lru_cache(maxsize=8)
def _mel_transform(params: FeatureConfig):
    import torchaudio

    # Built once per process and parameter set: the mel filterbank and window are the costly part.
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=params.sample_rate,
        n_fft=params.n_fft,
        win_length=params.win_length,
        hop_length=params.hop_length,
        f_min=params.f_min,
        f_max=params.f_max,
        n_mels=params.n_mels,
        power=2.0,
        center=True,
        pad_mode="reflect",
        norm="slaney",
        mel_scale="slaney",
    )


def log_mel(wave: np.ndarray, params: FeatureConfig) -> np.ndarray:
    """Log-mel power spectrogram in dB of a mono signal already at ``params.sample_rate``.

    Returns:
        float32 ``[n_mels, n_frames]``.
    """
    import torch

    with torch.inference_mode():
        mel = _mel_transform(params)(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)))
        out = 10.0 * torch.log10(torch.clamp(mel, min=LOG_FLOOR))
    out = out.numpy()
    if not np.isfinite(out).all():  # never store or score NaN/inf: it poisons the statistics
        raise audio.AudioError("non-finite features (NaN or inf in the log-mel)")
    return out


def mono_at_feature_rate(
    samples: np.ndarray, sample_rate: int, params: FeatureConfig
) -> np.ndarray:
    """Decoded audio -> mono float32 at ``params.sample_rate``: the front end every clip shares.

    Raises:
        AudioError: the channels cancel out in the downmix (e.g. antiphase stereo).
    """
    wave = audio.downmix(np.asarray(samples, dtype=np.float32))
    audio.check_not_silent(wave, "silent after the downmix to mono")
    return audio.resample(wave, sample_rate, params.sample_rate)


def clip_features(
    samples: np.ndarray, sample_rate: int, params: FeatureConfig
) -> tuple[np.ndarray, float]:
    """Decoded audio -> fixed-shape log-mel: downmix, resample, trim, fit to ``clip_seconds``.

    Args:
        samples: ``[frames, channels]`` or ``[frames]`` float32.
        sample_rate: rate of ``samples`` in Hz.
        params: feature parameters.

    Returns:
        ``(features, duration_s)``: float32 ``feature_shape(params)`` and the input's duration.
    """
    duration = len(samples) / float(sample_rate)
    wave = audio.trim_silence(mono_at_feature_rate(samples, sample_rate, params), params.trim_db)
    wave = audio.fit_length(wave, clip_samples(params))
    return log_mel(wave, params), duration


def normalise(features, mean, std):
    """Per-mel-band standardisation of ``[..., n_mels, n_frames]`` (numpy or torch).

    ``mean`` and ``std`` are ``[n_mels]``, computed on training actors only; tiny deviations are
    floored so a constant band does not blow up.
    """
    try:
        import torch

        is_torch = isinstance(features, torch.Tensor)
    except ImportError:  # pragma: no cover - torch is a dependency
        is_torch = False
    if is_torch:
        mean_t = torch.as_tensor(mean, dtype=features.dtype, device=features.device)
        std_t = torch.as_tensor(std, dtype=features.dtype, device=features.device)
        return (features - mean_t[:, None]) / torch.clamp(std_t, min=1e-5)[:, None]
    mean_a = np.asarray(mean, dtype=np.float32)[:, None]
    std_a = np.maximum(np.asarray(std, dtype=np.float32), 1e-5)[:, None]
    return ((np.asarray(features, dtype=np.float32) - mean_a) / std_a).astype(np.float32)
