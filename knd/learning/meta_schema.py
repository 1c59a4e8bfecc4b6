"""The schema of a checkpoint's ``meta.json``, checked by :func:`knd.config.loading.build` as
configs are. A checkpoint may come from anywhere, so every size a model is built from is bounded:
a hostile file is refused in one line naming the key. Keys the loader does not read pass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from knd.audio.features import GROUPS
from knd.config.architectures import ARCHITECTURES
from knd.config.schema import FEATURE_GROUPS, MODEL_NAMES, _help

META_VERSION = 2
MAX_BANDS = 1024
MAX_GROUP_VALUES = 1 << 17
"""Values in one group's statistics (an encoder's: layers x 2 x hidden, e.g. 25 x 2048)."""


@dataclass(frozen=True)
class GroupStats:
    """One group's training statistics: a list or a table (:func:`stats_problem`: its shape)."""

    mean: tuple[float, ...] | tuple[tuple[float, ...], ...] = _help("per channel or per value")
    std: tuple[float, ...] | tuple[tuple[float, ...], ...] = _help("shaped as the mean")


@dataclass(frozen=True)
class SplitMeta:
    train: tuple[int, ...] = _help("training actors", items_le=10**4)
    val: tuple[int, ...] = _help("validation actors", items_le=10**4)
    test: tuple[int, ...] = _help("test actors", items_le=10**4)


@dataclass(frozen=True)
class SplitSpeakersMeta:
    """The split as speaker keys (:func:`knd.data.datasets.speaker_keys`)."""

    train: tuple[str, ...] = _help("training speakers", items_le=10**5, chars_le=300, default=())
    val: tuple[str, ...] = _help("validation speakers", items_le=10**5, chars_le=300, default=())
    test: tuple[str, ...] = _help("test speakers", items_le=10**5, chars_le=300, default=())


@dataclass(frozen=True)
class SpeakerNormMeta:
    """How inputs were standardised per speaker (:mod:`knd.learning.speaker_norm`)."""

    groups: tuple[Literal[FEATURE_GROUPS], ...] = _help("groups standardised", items_le=64)
    prior_clips: float = _help("shrinkage strength", gt=0, le=1e6)
    prior: dict[Literal[FEATURE_GROUPS], GroupStats] = _help("pooled training statistics")


@dataclass(frozen=True)
class ModelMeta:
    """What rebuilds the model (older metas lack the keys that have defaults; others pass)."""

    accepts_other_keys: ClassVar[bool] = True
    name: Literal[MODEL_NAMES] = _help("architecture")
    width: int = _help("base channel width", ge=1, le=1024, default=32)
    dropout: float = _help("dropout before the classifier", ge=0, lt=1, default=0.0)
    groups: tuple[Literal[FEATURE_GROUPS], ...] = _help("inputs", items_le=64, default=("logmel",))
    fusion_width: int = _help("width of each fused branch", ge=1, le=1024, default=32)
    fusion_weight: float = _help("late_fusion's CNN weight", ge=0, le=1, default=0.5)
    layer: int = _help("encoder layer the head reads", ge=-1, le=1000, default=-1)
    encoder_config: dict[str, Any] | None = _help("an encoder's", items_le=10**4, default=None)

    @staticmethod
    def cross_checks(model: ModelMeta) -> list[tuple[str, str]]:
        if ARCHITECTURES[model.name].encoder:  # torch, imported for an encoder only
            from knd.learning.heads import encoder_config_problem

            problem = encoder_config_problem(model.encoder_config)
            return [problem] if problem else []
        return []


@dataclass(frozen=True)
class Meta:
    """A version-2 ``meta.json`` (:mod:`knd.learning.checkpoint` describes its keys)."""

    accepts_other_keys: ClassVar[bool] = True
    version: Literal[META_VERSION] = _help("format version")
    label_set: str = _help("label set")
    labels: tuple[str, ...] = _help("names", items_ge=2, items_le=64, chars_ge=1, chars_le=64)
    feature_params: dict[str, Any] = _help("checked where features use them", items_le=1000)
    groups: dict[str, str] = _help("hash of each feature group", items_le=1000, chars_le=128)
    model: ModelMeta = _help("model")
    group_norm: dict[Literal[FEATURE_GROUPS], GroupStats] = _help("statistics of each group")
    split: SplitMeta = _help("actor split")
    split_speakers: SplitSpeakersMeta | None = _help("the split by speaker key", default=None)
    speaker_norm: SpeakerNormMeta | None = _help("per-speaker standardisation", default=None)

    @staticmethod
    def cross_checks(meta: Meta) -> list[tuple[str, str]]:
        problems = []
        for group in ("logmel", *meta.model.groups):
            if group not in meta.groups:
                problems.append(("groups", f"no hash for the model's group {group!r}"))
            if group not in meta.group_norm:
                problems.append(("group_norm", f"no statistics for the model's group {group!r}"))
        shapes = (stats_problem(group, stats) for group, stats in meta.group_norm.items())
        problems += [problem for problem in shapes if problem]
        if meta.speaker_norm is not None:
            for group in meta.speaker_norm.groups:
                stats = meta.speaker_norm.prior.get(group)
                if stats is None:
                    problems.append(("speaker_norm.prior", f"no statistics for {group!r}"))
                elif (problem := stats_problem(group, stats)) is not None:
                    problems.append((f"speaker_norm.{problem[0]}", problem[1]))
                elif group in meta.group_norm and np.shape(stats.mean) != np.shape(
                    meta.group_norm[group].mean
                ):
                    problems.append((f"speaker_norm.prior.{group}", "shaped unlike group_norm"))
        return problems


@dataclass(frozen=True)
class MetaV1:
    """The keys only a version-1 meta has, checked before ``meta_from_v1`` reads it."""

    accepts_other_keys: ClassVar[bool] = True
    feature_hash: str = _help("the log-mel's hash")
    feature_shape: tuple[int, ...] = _help("[mels, frames]", ge=1, le=10**6, items_ge=2, items_le=2)
    norm: dict[str, Any] = _help("the log-mel's statistics", items_le=2)
    groups: dict[str, Any] = _help("other groups' hashes", items_le=1000, default_factory=dict)
    group_norm: dict[str, Any] = _help("other groups' stats", items_le=1000, default_factory=dict)


def stats_problem(group: str, stats: GroupStats) -> tuple[str, str] | None:
    """What is wrong with the shape of a group's statistics (None when it fits the group)."""
    key = f"group_norm.{group}"
    try:
        mean, std = np.shape(stats.mean), np.shape(stats.std)
    except ValueError:
        return key, "expected a table with rows of one length"
    if GROUPS[group].level == "frame" and (len(mean) != 1 or mean[0] > MAX_BANDS):
        return f"{key}.mean", f"expected a list of 1..{MAX_BANDS} numbers (one per channel)"
    if not 1 <= np.prod(mean) <= MAX_GROUP_VALUES:
        return f"{key}.mean", f"expected a list (or a table) of 1..{MAX_GROUP_VALUES} numbers"
    if mean != std:
        return key, f"mean and std differ in shape ({list(mean)} and {list(std)})"
    return None
