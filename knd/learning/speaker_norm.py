"""Per-speaker standardisation: each clip's features measured against its own speaker's voice.

Much of what a feature group says is *who* speaks (pitch level, loudness, vocal tract); what
carries over between speakers is how far a clip sits from its speaker's own baseline. With
``normalise=speaker`` every input group of a model is standardised by statistics of its speaker
before the model sees it:

- utterance-level groups (eGeMAPS, embeddings) per value; frame-level groups (log-mel bands,
  prosody channels, the waveform) per channel over the frames that are not padding
  (:attr:`knd.audio.features.FeatureGroup.active`);
- from all of the speaker's clips in the data, whatever their labels: no label is read, so a
  test speaker's own clips give its statistics without leaking anything the metrics score;
- shrunk towards a *prior*, the pooled statistics of the training speakers, by the speaker's
  number of clips ``n``: weight ``w = n / (n + prior_clips)`` on the speaker,

      mean = w * mean_speaker + (1 - w) * mean_prior
      var  = w * (var_speaker + (mean_speaker - mean)^2)
           + (1 - w) * (var_prior + (mean_prior - mean)^2)

  (the variance of that mixture of the two), so a speaker of one clip gets mostly the prior's
  statistics and a variance of at least ``(1 - w) * var_prior``: it never blows up.

The statistics are sums (:class:`Moments`), so they are gathered in one pass over batches, and
a driver holds per-speaker sums, never features. Numpy only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from knd.audio.features import feature_group
from knd.data.shards import FeatureTable

PRIOR_CLIPS = 4.0
"""Default shrinkage strength: a speaker of 4 clips gets half its own statistics."""
MIN_STD = 1e-5


@dataclass
class Moments:
    """Sums over the values of one group of one speaker (per channel or per value)."""

    clips: int
    count: np.ndarray
    total: np.ndarray
    squares: np.ndarray

    def __add__(self, other: Moments) -> Moments:
        return Moments(
            self.clips + other.clips,
            self.count + other.count,
            self.total + other.total,
            self.squares + other.squares,
        )

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        """The mean and standard deviation (0 and 0 where nothing was counted)."""
        count = np.maximum(self.count, 1)
        mean = self.total / count
        return mean, np.sqrt(np.maximum(self.squares / count - mean**2, 0.0))


def batch_moments(group: str, values: np.ndarray) -> Moments:
    """:class:`Moments` of a batch of one group's clips: ``[B, channels, frames]`` over the
    frames that are not padding, per channel; ``[B, ...]`` per value."""
    f = np.asarray(values, dtype=np.float64)
    spec = feature_group(group)
    if spec.level == "utterance":
        count = np.full(f.shape[1:], float(len(f)))
        return Moments(len(f), count, f.sum(axis=0), np.square(f).sum(axis=0))
    active = spec.active(f) if spec.active else np.ones((f.shape[0], f.shape[-1]), bool)
    weight = active[:, None, :].astype(np.float64)  # [B, 1, frames]
    count = np.broadcast_to(weight, f.shape).sum(axis=(0, 2))
    return Moments(len(f), count, (f * weight).sum(axis=(0, 2)), (f * f * weight).sum(axis=(0, 2)))


def speaker_moments(
    groups: dict[str, np.ndarray], speakers: np.ndarray
) -> dict[int, dict[str, Moments]]:
    """``{speaker: {group: Moments}}`` of in-memory groups, one row per clip."""
    speakers = np.asarray(speakers, dtype=np.int64)
    out: dict[int, dict[str, Moments]] = {}
    for speaker in np.unique(speakers):
        rows = speakers == speaker
        out[int(speaker)] = {g: batch_moments(g, v[rows]) for g, v in groups.items()}
    return out


def add_moments(
    into: dict[int, dict[str, Moments]], more: dict[int, dict[str, Moments]]
) -> dict[int, dict[str, Moments]]:
    """Per-speaker moments of two passes (or two batches) together."""
    for speaker, groups in more.items():
        mine = into.setdefault(speaker, {})
        for group, moments in groups.items():
            mine[group] = mine[group] + moments if group in mine else moments
    return into


def pooled_stats(moments: dict[int, dict[str, Moments]]) -> dict[str, dict[str, list[float]]]:
    """``{group: {"mean", "std"}}`` of every speaker's clips pooled: the prior."""
    groups = {g for per in moments.values() for g in per}
    out = {}
    for group in sorted(groups):
        parts = [per[group] for per in moments.values() if group in per]
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        mean, std = total.mean_std()
        out[group] = {"mean": mean.tolist(), "std": std.tolist()}
    return out


def shrunk_stats(
    moments: Moments, prior: dict[str, list[float]], prior_clips: float
) -> tuple[np.ndarray, np.ndarray]:
    """A speaker's mean and std, shrunk towards ``prior`` (the module's rule)."""
    own_mean, own_std = moments.mean_std()
    prior_mean = np.asarray(prior["mean"], dtype=np.float64).reshape(own_mean.shape)
    prior_std = np.asarray(prior["std"], dtype=np.float64).reshape(own_mean.shape)
    # A channel the speaker never reached (all padding) takes the prior alone.
    w = np.where(moments.count > 0, moments.clips / (moments.clips + prior_clips), 0.0)
    mean = w * own_mean + (1 - w) * prior_mean
    var = w * (own_std**2 + (own_mean - mean) ** 2) + (1 - w) * (
        prior_std**2 + (prior_mean - mean) ** 2
    )
    return mean, np.maximum(np.sqrt(var), MIN_STD)


def normalise_by_speaker(
    groups: dict[str, np.ndarray],
    speakers: np.ndarray,
    moments: dict[int, dict[str, Moments]],
    prior: dict[str, dict[str, list[float]]],
    prior_clips: float,
) -> dict[str, np.ndarray]:
    """Each clip of ``groups`` standardised by its speaker's shrunk statistics (float32; the
    padding frames too, so a clip keeps its shape)."""
    speakers = np.asarray(speakers, dtype=np.int64)
    out = {}
    for group, values in groups.items():
        frame = feature_group(group).level == "frame"
        result = np.empty(values.shape, dtype=np.float32)
        for speaker in np.unique(speakers):
            rows = speakers == speaker
            mean, std = shrunk_stats(moments[int(speaker)][group], prior[group], prior_clips)
            if frame:
                mean, std = mean[:, None], std[:, None]
            result[rows] = (values[rows].astype(np.float32) - mean) / std
        out[group] = result
    return out


def speaker_norm_meta(
    groups: Iterable[str], prior: dict[str, dict[str, list[float]]], prior_clips: float
) -> dict:
    """The checkpoint's ``speaker_norm`` record: what scoring needs to do the same."""
    groups = list(groups)
    return {
        "groups": groups,
        "prior_clips": float(prior_clips),
        "prior": {g: prior[g] for g in groups},
    }


def speaker_normalised(
    table: FeatureTable,
    groups: Iterable[str],
    prior: dict[str, dict[str, list[float]]] | None,
    prior_clips: float,
) -> tuple[FeatureTable, dict[str, dict[str, list[float]]]]:
    """``table`` with ``groups`` standardised by each speaker's statistics from the table's own
    clips, and the prior used (None: the table's clips pooled, i.e. a training set's own).

    Call it on every clip of the speakers, before clips are kept by label
    (:func:`kept_rows`): a speaker's statistics never depend on which labels are trained."""
    chosen = {g: table.groups[g] for g in groups}
    moments = speaker_moments(chosen, table.actor)
    prior = prior or pooled_stats(moments)
    normed = normalise_by_speaker(chosen, table.actor, moments, prior, prior_clips)
    return dataclasses.replace(table, groups=table.groups | normed), prior


def kept_rows(table: FeatureTable, keep: np.ndarray) -> FeatureTable:
    """The rows of ``table`` where ``keep`` is true."""
    return dataclasses.replace(
        table,
        groups={g: v[keep] for g, v in table.groups.items()},
        label=table.label[keep],
        actor=table.actor[keep],
        emotion=table.emotion[keep],
        path=table.path[keep],
        duration=table.duration[keep],
    )


# ----------------------------------------------------------------------------------------------
# Scoring audio: who speaks is told by the file's place, not by a manifest

SPEAKER_FROM = ("folder", "table", "file", "none")
"""``knd score speaker_from=``: the file's folder, a label table's speaker column, the file
alone, or no speaker at all (the training speakers' pooled statistics)."""


def speaker_key(path: str, speaker_from: str, table: dict[str, str] | None = None) -> str:
    """The speaker a scored file belongs to: its folder's path, its speaker in ``table``
    (``{path: speaker}``), itself, or '' (nobody: the pooled statistics)."""
    if speaker_from == "folder":
        return str(path).replace("\\", "/").rsplit("/", 1)[0]
    if speaker_from == "table":
        return (table or {}).get(str(path), "")
    return str(path) if speaker_from == "file" else ""


def speaker_table(
    moments: dict[str, dict[str, Moments]], record: dict
) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """``{speaker key: {group: (mean, std)}}`` shrunk as in training (``record``: the
    checkpoint's ``speaker_norm``); the key '' holds the prior itself, for files of no speaker."""
    prior, prior_clips = record["prior"], record["prior_clips"]
    table = {
        key: {g: shrunk_stats(m[g], prior[g], prior_clips) for g in record["groups"]}
        for key, m in moments.items()
    }
    table[""] = {
        g: (np.asarray(prior[g]["mean"]), np.maximum(np.asarray(prior[g]["std"]), MIN_STD))
        for g in record["groups"]
    }
    return table


def normalise_rows(
    values: dict[str, np.ndarray], keys: list[str], table: dict[str, dict[str, tuple]]
) -> dict[str, np.ndarray]:
    """Rows of scored groups standardised by their speakers' statistics (``keys``: each row's
    speaker; a speaker the table lacks, e.g. one whose every file failed, takes the prior)."""
    keys_array = np.asarray(keys, dtype=object)
    out = dict(values)
    for group, rows in values.items():
        if group not in table[""]:
            continue
        frame = feature_group(group).level == "frame"
        result = np.empty(rows.shape, dtype=np.float32)
        for key in set(keys):
            mean, std = table.get(key, table[""])[group]
            if frame:
                mean, std = mean[:, None], std[:, None]
            mask = keys_array == key
            result[mask] = (rows[mask].astype(np.float32) - mean) / std
        out[group] = result
    return out
