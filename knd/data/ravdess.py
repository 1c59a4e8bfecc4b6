"""RAVDESS metadata: file-name parsing, label sets and speaker-independent actor splits.

A RAVDESS file name has seven two-digit parts, ``MM-VV-EE-II-SS-RR-AA.wav``: modality
(01 full-AV, 02 video-only, 03 audio-only), vocal channel (01 speech, 02 song), emotion (01..08),
intensity (01 normal, 02 strong), statement (01 "Kids are talking by the door", 02 "Dogs are
sitting by the door"), repetition (01, 02) and actor (01..24; odd actors are male, even female).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

EMOTIONS: tuple[str, ...] = (
    "neutral",
    "calm",
    "happy",
    "sad",
    "angry",
    "fearful",
    "disgust",
    "surprised",
)
"""Emotion names in the order of their RAVDESS codes 01..08."""

ACTORS: tuple[int, ...] = tuple(range(1, 25))

EMOBOX_FOLDS: tuple[tuple[int, ...], ...] = (
    (1, 11, 20, 21),
    (4, 10, 12, 14),
    (8, 9, 19, 23),
    (3, 5, 7, 24),
    (2, 15, 16, 18),
    (6, 13, 17, 22),
)
"""The six speaker-independent actor groups used by the EmoBox benchmark."""


_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")


@dataclass(frozen=True)
class Clip:
    """What a RAVDESS file name says about its clip."""

    modality: int
    vocal_channel: int
    emotion: int
    intensity: int
    statement: int
    repetition: int
    actor: int

    @property
    def gender(self) -> str:
        return "male" if self.actor % 2 == 1 else "female"

    @property
    def emotion_name(self) -> str:
        return EMOTIONS[self.emotion - 1]

    def file_name(self, suffix: str = ".wav") -> str:
        parts = (self.modality, self.vocal_channel, self.emotion, self.intensity)
        parts += (self.statement, self.repetition, self.actor)
        return "-".join(f"{p:02d}" for p in parts) + suffix


def actor_clips(actor: int) -> list[Clip]:
    """RAVDESS's 60 speech clips of one actor (neutral has normal intensity only)."""
    return [
        Clip(3, 1, emotion, intensity, statement, repetition, actor)
        for emotion in range(1, len(EMOTIONS) + 1)
        for intensity in ((1,) if emotion == 1 else (1, 2))
        for statement in (1, 2)
        for repetition in (1, 2)
    ]


CLIPS_PER_ACTOR = len(actor_clips(1))
"""Speech clips each actor recorded (60)."""


def parse_name(path: str) -> Clip:
    """Parse a RAVDESS file name (any folder, any audio extension).

    Raises:
        ValueError: the name is not a valid RAVDESS name; the message gives the reason.
    """
    stem = PurePosixPath(str(path).replace("\\", "/")).stem
    match = _NAME.match(stem)
    if not match:
        raise ValueError(f"not a RAVDESS name (expected MM-VV-EE-II-SS-RR-AA): {stem!r}")
    clip = Clip(*(int(g) for g in match.groups()))
    checks = [
        (clip.modality in (1, 2, 3), f"modality {clip.modality:02d} is not 01..03"),
        (clip.vocal_channel in (1, 2), f"vocal channel {clip.vocal_channel:02d} is not 01..02"),
        (1 <= clip.emotion <= 8, f"emotion {clip.emotion:02d} is not 01..08"),
        (clip.intensity in (1, 2), f"intensity {clip.intensity:02d} is not 01..02"),
        (clip.statement in (1, 2), f"statement {clip.statement:02d} is not 01..02"),
        (clip.repetition in (1, 2), f"repetition {clip.repetition:02d} is not 01..02"),
        (1 <= clip.actor <= 24, f"actor {clip.actor:02d} is not 01..24"),
        (not (clip.emotion == 1 and clip.intensity == 2), "neutral has no strong intensity"),
    ]
    for ok, reason in checks:
        if not ok:
            raise ValueError(f"not a RAVDESS name ({reason}): {stem!r}")
    return clip


@dataclass(frozen=True)
class ActorSplit:
    """Three disjoint actor groups."""

    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]


def split_actors(
    test_actors: tuple[int, ...] | list[int],
    val_actors: tuple[int, ...] | list[int],
    actors: tuple[int, ...] | list[int] = ACTORS,
) -> ActorSplit:
    """Speaker-independent split: every actor not in test or val trains.

    Raises:
        ValueError: test and val share an actor, name an unknown actor, or leave no training actor.
    """
    test, val = tuple(sorted(set(test_actors))), tuple(sorted(set(val_actors)))
    shared = set(test) & set(val)
    if shared:
        raise ValueError(f"actors {sorted(shared)} are in both test_actors and val_actors")
    unknown = (set(test) | set(val)) - set(actors)
    if unknown:
        raise ValueError(f"actors {sorted(unknown)} are not in the corpus (actors {list(actors)})")
    train = tuple(a for a in sorted(set(actors)) if a not in test and a not in val)
    if not train:
        raise ValueError("the split leaves no training actor")
    return ActorSplit(train=train, val=val, test=test)


def actor_folds(
    actors: tuple[int, ...] | list[int], k: int, exclude: tuple[int, ...] | list[int] = ()
) -> list[tuple[int, ...]]:
    """K actor-disjoint validation folds over ``actors`` minus ``exclude``.

    The EmoBox groups are used where they fit (each group minus excluded actors, keeping the
    non-empty ones, first ``k``); otherwise actors are dealt round-robin in sorted order so every
    fold mixes genders. Every remaining actor lands in exactly one fold when ``k`` equals the number
    of available groups.

    Raises:
        ValueError: fewer than ``k`` actors remain, or ``k`` < 2.
    """
    pool = sorted(set(actors) - set(exclude))
    if k < 2:
        raise ValueError(f"folds must be at least 2, got {k}")
    if len(pool) < k:
        raise ValueError(f"{len(pool)} actors cannot make {k} folds")
    groups = [tuple(a for a in g if a in pool) for g in EMOBOX_FOLDS]
    groups = [g for g in groups if g]
    covered = {a for g in groups for a in g}
    if covered == set(pool) and len(groups) >= k:
        if len(groups) == k:
            return groups
        # Merge surplus groups into the first k round-robin so no actor is dropped.
        folds = [list(g) for g in groups[:k]]
        for i, g in enumerate(groups[k:]):
            folds[i % k].extend(g)
        return [tuple(sorted(f)) for f in folds]
    return [tuple(pool[i::k]) for i in range(k)]
