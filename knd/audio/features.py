"""Feature groups: one pure front end shared by ``prepare`` (clips) and ``score`` (windows).

A clip's features are a set of named groups, each with its own parameters and hash:

- ``logmel``: the log-mel spectrogram ``[n_mels, frames]`` in dB (always computed);
- ``prosody``: frame-level F0, voicing, periodicity and energy ``[4, frames]`` on the log-mel's
  frame grid (:mod:`knd.audio.prosody`);
- ``egemaps``: 88 utterance-level eGeMAPSv02 functionals (:mod:`knd.audio.egemaps`);
- ``embedding``: per-layer pooled statistics of a pretrained speech encoder
  ``[num_states, 2 * hidden]`` (:mod:`knd.audio.encoder`), identified by the hash of its files;
- ``waveform``: the trimmed clip itself ``[1, samples]``, for fine-tuning an encoder end to end.

Training and scoring both go through :func:`clip_groups`, and every stored feature set carries
each group's hash, so features made with other parameters are refused.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json

import numpy as np

from knd.audio import egemaps, encoder, prosody, waveform
from knd.config.schema import FeatureConfig

FEATURE_ALGORITHM = "logmel-db-v1"
"""Bumped whenever the computation changes for the same parameters, so old hashes stop matching."""

LOG_FLOOR = 1e-10
"""Mel power floor before the log: -100 dB, far below 16-bit quantisation noise."""


FRAME_GROUPS = ("logmel", "prosody", "waveform")
"""Groups with a time axis (normalised per channel over frames); the others per value."""

EMBEDDING_ALGORITHM = "encoder-layer-meanstd-v1"
WAVEFORM_ALGORITHM = "trimmed-fitted-v1"

NOT_LOGMEL_PARAMS = ("groups", "encoder")
"""Parameters of other groups only: changing them leaves the log-mel and its hash alone."""


def _hash(payload: dict) -> str:
    payload = dict(payload)
    for key, value in payload.items():
        if isinstance(value, float) and value.is_integer():
            payload[key] = int(value)  # 3.0 and 3 are the same parameter
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def feature_hash(params: FeatureConfig) -> str:
    """A stable 16-hex-digit hash of the log-mel parameters and the algorithm version.

    ``groups`` and ``encoder`` are not part of it: the log-mel of a feature set does not change
    when other groups are added beside it (and manifests written before groups existed keep
    their hash).
    """
    fields = {k: v for k, v in dataclasses.asdict(params).items() if k not in NOT_LOGMEL_PARAMS}
    return _hash({"algorithm": FEATURE_ALGORITHM, **fields})


def group_hash(name: str, params: FeatureConfig) -> str:
    """The hash of one group: its algorithm and every parameter it depends on."""
    if name == "logmel":
        return feature_hash(params)
    shared = {"sample_rate": params.sample_rate, "clip_seconds": params.clip_seconds}
    shared["trim_db"] = params.trim_db
    if name == "prosody":
        return _hash(
            {
                "algorithm": prosody.PROSODY_ALGORITHM,
                **shared,
                "win_length": params.win_length,
                "hop_length": params.hop_length,
                "pitch_floor": prosody.PITCH_FLOOR_HZ,
                "pitch_ceiling": prosody.PITCH_CEILING_HZ,
            }
        )
    if name == "egemaps":
        return _hash({"algorithm": egemaps.EGEMAPS_ALGORITHM, **shared})
    if name == "embedding":
        # The encoder's files, not its name: another folder with the same weights is the same.
        encoder_hash = encoder.folder_hash(params.encoder)
        return _hash({"algorithm": EMBEDDING_ALGORITHM, **shared, "encoder": encoder_hash})
    if name == "waveform":
        return _hash({"algorithm": WAVEFORM_ALGORITHM, **shared})
    raise ValueError(f"unknown feature group {name!r}")


def group_shape(name: str, params: FeatureConfig) -> tuple[int, ...]:
    """The stored shape of one clip's ``name`` group."""
    if name == "logmel":
        return feature_shape(params)
    if name == "prosody":
        return len(prosody.CHANNELS), feature_shape(params)[1]
    if name == "egemaps":
        return (egemaps.NUM_FUNCTIONALS,)
    if name == "embedding":
        info = encoder.describe(params.encoder)
        return info.num_states, 2 * info.hidden_size
    if name == "waveform":
        return 1, clip_samples(params)
    raise ValueError(f"unknown feature group {name!r}")


def group_dtype(name: str, params: FeatureConfig) -> str:
    """The stored dtype of a group: the log-mel's and the waveform's are configurable (they are
    the large ones), the small groups float32."""
    return params.dtype if name in ("logmel", "waveform") else "float32"


def group_specs(params: FeatureConfig) -> dict[str, dict]:
    """``{group: {"hash", "shape", "dtype"}}`` of every group ``params`` computes."""
    return {
        name: {
            "hash": group_hash(name, params),
            "shape": list(group_shape(name, params)),
            "dtype": group_dtype(name, params),
        }
        for name in params.groups
    }


def check_computes(expected: dict[str, str | None], params: FeatureConfig, source: str) -> None:
    """Refuse to compute groups whose hash here differs from what ``source`` was made with.

    A group's hash covers its algorithm version: features computed by another version of this
    code would reach a model trained on the old ones unnoticed.

    Raises:
        ValueError: a group's hash differs (one line naming the group, both hashes and why).
    """
    for group, wanted in expected.items():
        here = group_hash(group, params)
        if wanted is not None and wanted != here and group == "embedding":
            raise ValueError(
                f"{source}: trained on embeddings of an encoder whose files differ from "
                f"{params.encoder} (embedding hash {wanted}, this encoder gives {here}); pass "
                "the folder it was trained with (encoder=DIR)"
            )
        if wanted is not None and wanted != here:
            raise ValueError(
                f"{source}: its {group} features have hash {wanted}, but this knd computes "
                f"{here} from the same parameters (another version of the {group} algorithm); "
                "train again with this version, or score with the one it was trained with"
            )


def stored_params(values: dict) -> FeatureConfig:
    """The FeatureConfig of stored ``feature_params`` (a manifest's or a checkpoint's).

    Parameters stored before feature groups existed describe the log-mel alone.
    """
    from knd.config.loading import build

    return build(FeatureConfig, {"groups": ["logmel"], "encoder": "", **values}, "feature_params.")


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
        raise waveform.AudioError("non-finite features (NaN or inf in the log-mel)")
    return out


def mono_at_feature_rate(
    samples: np.ndarray, sample_rate: int, params: FeatureConfig
) -> np.ndarray:
    """Decoded audio -> mono float32 at ``params.sample_rate``: the front end every clip shares.

    Raises:
        AudioError: the channels cancel out in the downmix (e.g. antiphase stereo).
    """
    wave = waveform.downmix(np.asarray(samples, dtype=np.float32))
    waveform.check_not_silent(wave, "silent after the downmix to mono")
    return waveform.resample(wave, sample_rate, params.sample_rate)


def segment_groups(
    segment: np.ndarray, params: FeatureConfig, device: str = "cpu"
) -> dict[str, np.ndarray]:
    """Every group of ``params.groups`` of one trimmed stretch of mono audio at the feature rate.

    The frame-level groups see the stretch fitted to ``clip_seconds`` (padded or cut), so they
    share one frame grid; the functionals and the encoder's statistics see the speech alone
    (never the padding), cut to the same length. ``device`` runs the encoder.

    Returns:
        ``{group: float32 array of group_shape(group, params)}``.
    """
    clip = clip_samples(params)
    fitted = waveform.fit_length(segment, clip)
    out = {"logmel": log_mel(fitted, params)}
    if "prosody" in params.groups:
        out["prosody"] = prosody.frame_prosody(
            fitted, params.sample_rate, params.win_length, params.hop_length
        )
    if "egemaps" in params.groups:
        out["egemaps"] = egemaps.functionals(segment[:clip], params.sample_rate)
    if "embedding" in params.groups:
        out["embedding"] = encoder.layer_stats(
            segment[:clip], params.sample_rate, params.encoder, device
        )
    if "waveform" in params.groups:
        out["waveform"] = fitted[None].astype(np.float32)
    return out


def clip_groups(
    samples: np.ndarray, sample_rate: int, params: FeatureConfig, device: str = "cpu"
) -> tuple[dict[str, np.ndarray], float]:
    """Decoded audio -> every feature group: downmix, resample, trim, fit to ``clip_seconds``.

    Args:
        samples: ``[frames, channels]`` or ``[frames]`` float32.
        sample_rate: rate of ``samples`` in Hz.
        params: feature parameters (``params.groups`` says which groups).
        device: where the encoder runs (the ``embedding`` group).

    Returns:
        ``(groups, duration_s)``: see :func:`segment_groups`, and the input's duration.
    """
    duration = len(samples) / float(sample_rate)
    wave = waveform.trim_silence(mono_at_feature_rate(samples, sample_rate, params), params.trim_db)
    return segment_groups(wave, params, device), duration


def clip_features(
    samples: np.ndarray, sample_rate: int, params: FeatureConfig
) -> tuple[np.ndarray, float]:
    """The log-mel group of :func:`clip_groups` alone: float32 ``feature_shape(params)``."""
    groups, duration = clip_groups(samples, sample_rate, dataclasses.replace(params, groups=()))
    return groups["logmel"], duration


def stat_axes(name: str, ndim: int) -> tuple[int, ...]:
    """Axes a group's training statistics reduce over, for a batch of ``ndim`` dimensions.

    Frame-level groups: the batch and time (one mean per channel); the others: the batch alone
    (one mean per value, e.g. per layer and dimension of an encoder's statistics).
    """
    return (0, *range(2, ndim)) if name in FRAME_GROUPS else (0,)


def normalise_group(name: str, values, mean, std):
    """Standardise a batch of one group with its training statistics (numpy or torch).

    Frame-level groups ``[B, channels, frames]`` per channel (:func:`normalise`); utterance-level
    groups ``[B, ...]`` per value (``mean`` has the shape of one clip's group).
    """
    if name in FRAME_GROUPS:
        return normalise(values, mean, std)
    if isinstance(values, np.ndarray):
        mean_a, std_a = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        return ((values.astype(np.float32) - mean_a) / np.maximum(std_a, 1e-5)).astype(np.float32)
    import torch

    mean_t = torch.as_tensor(mean, dtype=values.dtype, device=values.device)
    std_t = torch.as_tensor(std, dtype=values.dtype, device=values.device)
    return (values - mean_t) / torch.clamp(std_t, min=1e-5)


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
