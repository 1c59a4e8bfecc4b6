"""Speakers: the corpus's own speaker ids on the command line, and its default folds.

A prepared dataset gives each speaker a number (the ``actor`` column; RAVDESS: the actor
number) and names it in the manifest (``speakers``: ``{number: id as the corpus writes it}``).
Configs name speakers by those ids (``split.test_speakers=[03,08]`` for EmoDB, ``[1,11]`` for
RAVDESS); :func:`speaker_numbers` turns them into numbers.

Folds: RAVDESS keeps EmoBox's six published actor groups. Any other corpus gets deterministic
speaker-disjoint folds (:func:`speaker_folds`): five, or one per speaker when it has fewer,
balanced by gender where the corpus says it. A config that names no test speakers tests on the
first fold, and validates on the second when at least three folds leave speakers to train on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from knd.data.ravdess import EMOBOX_FOLDS
from knd.data.shards import manifest_actors, manifest_speakers

DEFAULT_FOLDS = 5


def speaker_numbers(ids: Iterable[Any], manifest: dict[str, Any], role: str) -> tuple[int, ...]:
    """The numbers of the speakers ``ids`` (as the corpus writes them) in a dataset.

    A number-like id also matches without its leading zeros (``01`` is RAVDESS's actor 1).

    Raises:
        ValueError: an id the dataset has no speaker of (``role`` names the key).
    """
    speakers = manifest_speakers(manifest)
    by_id = {name: number for number, name in speakers.items()}
    numbers, unknown = [], []
    for raw in ids:
        key = str(raw).strip()
        if key not in by_id and key.isdigit():
            key = next((n for n in by_id if n.isdigit() and int(n) == int(key)), key)
        if key in by_id:
            numbers.append(by_id[key])
        else:
            unknown.append(key)
    if unknown:
        shown = sorted(speakers.values())
        more = f" and {len(shown) - 30} more" if len(shown) > 30 else ""
        raise ValueError(
            f"{role}: {unknown} are not speakers of this corpus (its speakers: "
            f"{', '.join(shown[:30])}{more})"
        )
    return tuple(sorted(set(numbers)))


def speaker_names(numbers: Iterable[int], manifest: dict[str, Any]) -> list[str]:
    """The corpus's ids of speaker ``numbers`` (for reports and ``metrics.json``)."""
    speakers = manifest_speakers(manifest)
    return [speakers.get(int(n), str(int(n))) for n in numbers]


def is_ravdess(manifest: dict[str, Any]) -> bool:
    """Whether a dataset is RAVDESS's layout (a manifest from before other corpora was)."""
    return manifest.get("corpus", "ravdess") == "ravdess"


def corpus_folds(manifest: dict[str, Any]) -> list[tuple[int, ...]]:
    """The dataset's default speaker folds (numbers): EmoBox's groups for RAVDESS (those with
    speakers present), else :func:`speaker_folds`."""
    present = manifest_actors(manifest)
    if is_ravdess(manifest):
        groups = [tuple(a for a in g if a in present) for g in EMOBOX_FOLDS]
        groups = [g for g in groups if g]
        covered = {a for g in groups for a in g}
        leftover = tuple(a for a in present if a not in covered)  # actors EmoBox lacks
        return groups + ([leftover] if leftover else [])
    genders = {int(k): v for k, v in manifest.get("speaker_genders", {}).items()}
    return speaker_folds(present, manifest_speakers(manifest), genders)


def speaker_folds(
    numbers: list[int], names: dict[int, str], genders: dict[int, str], k: int = DEFAULT_FOLDS
) -> list[tuple[int, ...]]:
    """``min(k, len(numbers))`` speaker-disjoint folds, the same for the same speakers.

    Speakers are ordered by a hash of their id within each gender (so the folds do not follow
    the corpus's numbering, and adding a file changes nothing) and dealt round-robin, one gender
    after the other: every fold gets as even a share of each gender as the counts allow.
    """
    k = max(1, min(k, len(numbers)))

    def order(number: int) -> tuple[str, str]:
        name = names.get(number, str(number))
        return genders.get(number, "unknown"), hashlib.sha256(name.encode()).hexdigest()

    folds: list[list[int]] = [[] for _ in range(k)]
    for i, number in enumerate(sorted(numbers, key=order)):
        folds[i % k].append(number)
    return [tuple(sorted(f)) for f in folds]


def default_split(
    manifest: dict[str, Any], test: Iterable[Any] | None, val: Iterable[Any] | None
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(test, val)`` speaker numbers: the ids given, or the corpus's first and second folds
    (no validation speakers when fewer than three folds would leave none to train on)."""
    folds = corpus_folds(manifest)
    given = None if test is None else speaker_numbers(test, manifest, "test_speakers")
    test_numbers = folds[0] if given is None else given
    if val is not None:
        return test_numbers, speaker_numbers(val, manifest, "val_speakers")
    rest = [f for f in folds if not set(f) & set(test_numbers)]
    return test_numbers, (rest[0] if len(folds) >= 3 and len(rest) >= 2 else ())
