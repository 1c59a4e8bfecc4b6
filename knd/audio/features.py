"""Feature groups: one pure front end shared by ``prepare`` (clips) and ``score`` (windows).

A clip's features are a set of named groups, each with its own parameters and hash:

- ``logmel``: the log-mel spectrogram ``[n_mels, frames]`` in dB (always computed);
- ``prosody``: frame-level F0, voicing, periodicity and energy ``[4, frames]`` on the log-mel's
  frame grid (:mod:`knd.audio.prosody`);
- ``egemaps``: 88 utterance-level eGeMAPSv02 functionals (:mod:`knd.audio.egemaps`);
- ``embedding``: per-layer pooled statistics of a pretrained speech encoder
  ``[num_states, 2 * hidden]`` (:mod:`knd.audio.encoder`), identified by the hash of its files;
- ``waveform``: the trimmed clip itself ``[1, samples]``, for fine-tuning an encoder end to end.

Prepare computes a clip's groups with :func:`clip_groups` and score a file's windows with
:func:`file_windows`, over the same decode, trim and groups; every stored feature set carries
each group's hash, so features made with other parameters are refused.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from knd.audio import egemaps, encoder, prosody, waveform
from knd.config.schema import FEATURE_GROUPS, FeatureConfig

FEATURE_ALGORITHM = "logmel-db-v1"
"""Bumped whenever the computation changes for the same parameters, so old hashes stop matching."""

LOG_FLOOR = 1e-10
LOG_FLOOR_DB = 10.0 * np.log10(LOG_FLOOR)
"""Mel power floor before the log: -100 dB, far below 16-bit quantisation noise."""


EMBEDDING_ALGORITHM = "encoder-layer-meanstd-v1"
WAVEFORM_ALGORITHM = "trimmed-fitted-v1"

LOGMEL_FIELDS = (
    "sample_rate", "clip_seconds", "trim_db", "n_fft", "win_length", "hop_length", "n_mels",
    "f_min", "f_max", "dtype",
)  # fmt: skip
"""The parameters the log-mel depends on (``groups`` and ``encoder`` are other groups')."""
SHARED_FIELDS = ("sample_rate", "clip_seconds", "trim_db")
"""The front end's parameters: every group sees audio resampled, trimmed and fitted by them."""


def _hash(payload: dict) -> str:
    payload = dict(payload)
    for key, value in payload.items():
        if isinstance(value, float) and value.is_integer():
            payload[key] = int(value)  # 3.0 and 3 are the same parameter
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Stretch:
    """One trimmed stretch of mono audio at the feature rate, as the groups see it."""

    fitted: np.ndarray
    """Padded or cut to ``clip_seconds``: the frame-level groups' input (one frame grid)."""
    speech: np.ndarray
    """The speech alone (never the padding), cut to the same length: the others' input."""
    params: FeatureConfig
    device: str = "cpu"


@dataclass(frozen=True)
class FeatureGroup:
    """One feature group: how it is hashed, stored and computed.

    ``hash`` covers ``algorithm``, the ``fields`` of :class:`FeatureConfig` the group depends on
    and ``extra(params)`` (constants, an encoder's file hash). ``level`` says how the group is
    normalised: ``frame`` groups ``[channels, frames]`` per channel over frames, ``utterance``
    groups per value.
    """

    name: str
    level: Literal["frame", "utterance"]
    algorithm: str
    fields: tuple[str, ...]
    shape: Callable[[FeatureConfig], tuple[int, ...]]
    compute: Callable[[Stretch], np.ndarray]
    large: bool = False
    """Stored in ``params.dtype`` (the large groups); the others in float32."""
    extra: Callable[[FeatureConfig], dict] = lambda params: {}
    active: Callable[[np.ndarray], np.ndarray] | None = None
    """A frame group's ``[B, channels, frames]`` -> ``[B, frames]``: the frames that are not the
    zero padding that fits a short clip to length (statistics of a speaker skip the padding)."""

    def hash(self, params: FeatureConfig) -> str:
        fields = {name: getattr(params, name) for name in self.fields}
        return _hash({"algorithm": self.algorithm, **fields, **self.extra(params)})

    def dtype(self, params: FeatureConfig) -> str:
        return params.dtype if self.large else "float32"


def _table(*groups: FeatureGroup) -> dict[str, FeatureGroup]:
    """The groups by name, in the order of :data:`knd.config.schema.FEATURE_GROUPS` (the one
    list of names config validates against: a group missing on either side fails at import)."""
    table = {group.name: group for group in groups}
    if tuple(table) != FEATURE_GROUPS:
        raise RuntimeError(f"feature groups {list(table)} differ from {list(FEATURE_GROUPS)}")
    return table


def _encoder_shape(params: FeatureConfig) -> tuple[int, int]:
    info = encoder.describe(params.encoder)
    return info.num_states, 2 * info.hidden_size


GROUPS: dict[str, FeatureGroup] = _table(
    FeatureGroup(
        "logmel", "frame", FEATURE_ALGORITHM, LOGMEL_FIELDS,
        shape=lambda p: feature_shape(p),
        compute=lambda s: log_mel(s.fitted, s.params),
        large=True,
        # Digital silence is the floor in every band; any real frame rises above it somewhere.
        active=lambda v: (v > LOG_FLOOR_DB + 1e-3).any(axis=1),
    ),
    FeatureGroup(
        "prosody", "frame", prosody.PROSODY_ALGORITHM,
        (*SHARED_FIELDS, "win_length", "hop_length"),
        shape=lambda p: (len(prosody.CHANNELS), feature_shape(p)[1]),
        compute=lambda s: prosody.frame_prosody(
            s.fitted, s.params.sample_rate, s.params.win_length, s.params.hop_length
        ),
        extra=lambda p: {
            "pitch_floor": prosody.PITCH_FLOOR_HZ, "pitch_ceiling": prosody.PITCH_CEILING_HZ
        },
        active=lambda v: v[:, prosody.CHANNELS.index("energy_db")] > prosody.ENERGY_FLOOR_DB + 1e-3,
    ),
    FeatureGroup(
        "egemaps", "utterance", egemaps.EGEMAPS_ALGORITHM, SHARED_FIELDS,
        shape=lambda p: (egemaps.NUM_FUNCTIONALS,),
        compute=lambda s: egemaps.functionals(s.speech, s.params.sample_rate),
    ),
    FeatureGroup(
        "embedding", "utterance", EMBEDDING_ALGORITHM, SHARED_FIELDS,
        shape=_encoder_shape,
        compute=lambda s: encoder.layer_stats(
            s.speech, s.params.sample_rate, s.params.encoder, s.device
        ),
        # The encoder's files, not its name: another folder with the same weights is the same.
        extra=lambda p: {"encoder": encoder.folder_hash(p.encoder)},
    ),
    FeatureGroup(
        "waveform", "frame", WAVEFORM_ALGORITHM, SHARED_FIELDS,
        shape=lambda p: (1, clip_samples(p)),
        compute=lambda s: s.fitted[None].astype(np.float32),
        large=True,
        active=lambda v: v[:, 0] != 0,
    ),
)  # fmt: skip
"""Every feature group: adding one is one entry here and its name in ``FEATURE_GROUPS``."""


def feature_group(name: str) -> FeatureGroup:
    """The :class:`FeatureGroup` named ``name``.

    Raises:
        ValueError: no such group.
    """
    if name not in GROUPS:
        raise ValueError(f"unknown feature group {name!r}")
    return GROUPS[name]


def feature_hash(params: FeatureConfig) -> str:
    """The log-mel group's hash (:func:`group_hash` of ``logmel``), what v1 manifests call
    ``feature_hash``; ``groups`` and ``encoder`` are not part of it."""
    return GROUPS["logmel"].hash(params)


def group_hash(name: str, params: FeatureConfig) -> str:
    """The hash of one group: its algorithm and every parameter it depends on."""
    return feature_group(name).hash(params)


def group_shape(name: str, params: FeatureConfig) -> tuple[int, ...]:
    """The stored shape of one clip's ``name`` group."""
    return tuple(feature_group(name).shape(params))


def group_dtype(name: str, params: FeatureConfig) -> str:
    """The stored dtype of a group: the log-mel's and the waveform's are configurable (they are
    the large ones), the small groups float32."""
    return feature_group(name).dtype(params)


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
    (never the padding), cut to the same length (:class:`Stretch`). ``device`` runs the encoder.

    Returns:
        ``{group: float32 array of group_shape(group, params)}``.
    """
    clip = clip_samples(params)
    stretch = Stretch(waveform.fit_length(segment, clip), segment[:clip], params, device)
    return {name: GROUPS[name].compute(stretch) for name in params.groups}


@dataclass(frozen=True)
class Window:
    """One featurised stretch of a file: its times in the original file and its groups."""

    start: float
    end: float
    groups: dict[str, np.ndarray]


def file_windows(
    samples: np.ndarray,
    sample_rate: int,
    params: FeatureConfig,
    hop_seconds: float | None = None,
    device: str = "cpu",
) -> list[Window]:
    """Decoded audio -> its windows: downmix, resample, trim, window, every group of each.

    The one front end of ``knd prepare`` (one window per clip: ``hop_seconds=None``) and
    ``knd score``. A file no longer than one clip after trimming is one window fitted to
    ``clip_seconds``, exactly a prepared clip; with ``hop_seconds`` a longer one is cut into
    clip-long windows every ``hop_seconds`` (the last aligned to the end) over the trimmed
    signal, and without it fitted (centre-cut) to one clip.

    Args:
        samples: ``[frames, channels]`` or ``[frames]`` float32.
        sample_rate: rate of ``samples`` in Hz.
        params: feature parameters (``params.groups`` says which groups).
        hop_seconds: hop between windows of a long file (None: one window per file).
        device: where a pretrained encoder runs (the ``embedding`` group).

    Returns:
        Windows in time order; ``start``/``end`` are seconds in the original file.
    """
    wave = mono_at_feature_rate(samples, sample_rate, params)
    start, end = waveform.trim_bounds(wave, params.trim_db)
    clip, rate = clip_samples(params), float(params.sample_rate)
    spans = [(start, end)]
    if hop_seconds is not None and end - start > clip:
        hop = max(1, int(round(hop_seconds * params.sample_rate)))
        spans = [(start + s, start + e) for s, e in waveform.windows(end - start, clip, hop)]
    return [Window(s / rate, e / rate, segment_groups(wave[s:e], params, device)) for s, e in spans]


def clip_groups(
    samples: np.ndarray, sample_rate: int, params: FeatureConfig, device: str = "cpu"
) -> tuple[dict[str, np.ndarray], float]:
    """Decoded audio -> every feature group of one clip (:func:`file_windows`' one window).

    Returns:
        ``(groups, duration_s)``: see :func:`segment_groups`, and the input's duration.
    """
    duration = len(samples) / float(sample_rate)
    (window,) = file_windows(samples, sample_rate, params, None, device)
    return window.groups, duration


def clip_features(
    samples: np.ndarray, sample_rate: int, params: FeatureConfig
) -> tuple[np.ndarray, float]:
    """The log-mel group of :func:`clip_groups` alone: float32 ``feature_shape(params)``."""
    groups, duration = clip_groups(
        samples, sample_rate, dataclasses.replace(params, groups=("logmel",))
    )
    return groups["logmel"], duration


def stat_axes(name: str, ndim: int) -> tuple[int, ...]:
    """Axes a group's training statistics reduce over, for a batch of ``ndim`` dimensions.

    Frame-level groups: the batch and time (one mean per channel); the others: the batch alone
    (one mean per value, e.g. per layer and dimension of an encoder's statistics).
    """
    return (0, *range(2, ndim)) if feature_group(name).level == "frame" else (0,)


def normalise_group(name: str, values, mean, std):
    """Standardise a batch of one group with its training statistics (numpy or torch).

    Frame-level groups ``[B, channels, frames]`` per channel (:func:`normalise`); utterance-level
    groups ``[B, ...]`` per value (``mean`` has the shape of one clip's group).
    """
    if feature_group(name).level == "frame":
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
    import torch

    if isinstance(features, torch.Tensor):
        mean_t = torch.as_tensor(mean, dtype=features.dtype, device=features.device)
        std_t = torch.as_tensor(std, dtype=features.dtype, device=features.device)
        return (features - mean_t[:, None]) / torch.clamp(std_t, min=1e-5)[:, None]
    mean_a = np.asarray(mean, dtype=np.float32)[:, None]
    std_a = np.maximum(np.asarray(std, dtype=np.float32), 1e-5)[:, None]
    return ((np.asarray(features, dtype=np.float32) - mean_a) / std_a).astype(np.float32)
