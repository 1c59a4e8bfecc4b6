"""What each file of a prepare run is labelled, decided once by the driver before any audio is read.

``knd prepare corpus=NAME|TABLE`` reads labels from one of three sources:

- ``ravdess`` (the default): RAVDESS names, exactly as before (the actor number is the speaker
  number, the emotion code the label's position in RAVDESS's eight emotions);
- another built-in layout (:data:`knd.data.corpora.LAYOUTS`: ``crema_d``, ``emodb``, ``tess``,
  ``savee``): the corpus's own names and folders;
- a label table (a path ending in ``.csv``, ``.tsv``, ``.jsonl`` or ``.parquet``, local or
  ``s3://``): one row per clip with ``path``, ``label`` and ``speaker``.

Every file ends labelled or rejected with a reason. The shards keep the integer columns they
always had: ``actor`` is the speaker's number (its id when the corpus's ids are numbers, else
its rank among the sorted ids) and ``emotion`` the 1-based position of its label in the
dataset's labels; the manifest names both (``speakers``, ``emotions``).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from knd.data.corpora import (
    TABLE_FORMATS,
    ClipLabels,
    labels_in_order,
    layout,
    match_table,
    read_label_table,
)
from knd.data.ravdess import EMOTIONS, parse_name
from knd.data.shards import LABEL_COLUMNS, UNKNOWN

TABLE = "table"
"""The ``corpus`` a manifest records for a dataset read through a label table."""
MAX_SPEAKER_NUMBER = 2**31 - 1


@dataclass(frozen=True)
class LabelledFiles:
    """The files a prepare run featurises, each with its shard label fields."""

    corpus: str
    """``ravdess``, another layout's name, or ``table``."""
    uris: list[str]
    paths: list[str]
    """Each file's path as stored and reported (relative to the input, or a table's absolute)."""
    fields: dict[str, dict[str, Any]]
    """``{path: {actor, emotion, intensity, statement, repetition, label, gender}}``."""
    rejected: list[tuple[str, str]]
    emotions: tuple[str, ...]
    speakers: dict[int, str]
    """``{speaker number: the corpus's id}``."""
    genders: dict[int, str]

    @property
    def digest(self) -> str:
        """A hash of every file's labels: equal digests mean the same labelled dataset."""
        body = [self.corpus, self.emotions, sorted(self.fields.items()), sorted(self.rejected)]
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()

    def manifest_keys(self, kept_numbers: set[int]) -> dict[str, Any]:
        """What the manifest records about the labels (the speakers with a kept clip)."""
        return {
            "corpus": self.corpus,
            "emotions": list(self.emotions),
            "speakers": {str(n): s for n, s in sorted(self.speakers.items()) if n in kept_numbers},
            "speaker_genders": {
                str(n): g for n, g in sorted(self.genders.items()) if n in kept_numbers
            },
            "labels_digest": self.digest,
        }


def is_table(corpus: str) -> bool:
    return corpus.lower().endswith(TABLE_FORMATS)


def check_corpus(corpus: str) -> None:
    """Raises ValueError when ``corpus`` is neither a layout nor a label table's path."""
    if not is_table(corpus):
        layout(corpus)


def unlabelled() -> dict[str, Any]:
    return dict.fromkeys(LABEL_COLUMNS, UNKNOWN) | {"gender": "unknown"}


def label_files(
    corpus: str,
    input_uri: str,
    uris: list[str],
    paths: list[str],
    require_labels: bool = True,
    label_map: Mapping[str, str] | None = None,
) -> LabelledFiles:
    """Label the files listed under ``input_uri`` (``uris``/``paths``) from ``corpus``.

    Raises:
        ValueError: an unknown corpus, or a label table that cannot be read.
    """
    if is_table(corpus):
        return _from_table(corpus, input_uri, paths, label_map)
    if corpus == "ravdess":
        return _ravdess(uris, paths, require_labels, label_map)
    return _from_layout(corpus, uris, paths, require_labels, label_map)


def _ravdess(
    uris: list[str], paths: list[str], require_labels: bool, label_map: Mapping[str, str] | None
) -> LabelledFiles:
    if label_map:
        return _from_layout("ravdess", uris, paths, require_labels, label_map)
    fields, rejected, numbers = {}, [], set()
    for path in paths:
        try:
            clip = parse_name(path)
        except ValueError as e:
            if require_labels:
                rejected.append((path, _one_line(e)))
            else:
                fields[path] = unlabelled()
            continue
        numbers.add(clip.actor)
        fields[path] = {
            "actor": clip.actor,
            "emotion": clip.emotion,
            "intensity": clip.intensity,
            "statement": clip.statement,
            "repetition": clip.repetition,
            "label": clip.emotion - 1,
            "gender": clip.gender,
        }
    speakers = {n: str(n) for n in sorted(numbers)}
    genders = {n: "male" if n % 2 else "female" for n in numbers}
    return _kept("ravdess", uris, paths, fields, rejected, EMOTIONS, speakers, genders)


def _from_layout(
    name: str,
    uris: list[str],
    paths: list[str],
    require_labels: bool,
    label_map: Mapping[str, str] | None,
) -> LabelledFiles:
    reader = layout(name)
    parsed: dict[str, ClipLabels | None] = {}
    rejected = []
    for path in paths:
        try:
            parsed[path] = reader.parse(path)
        except ValueError as e:
            if require_labels:
                rejected.append((path, _one_line(e)))
            else:
                parsed[path] = None
    renames = dict(label_map or {})
    emotions = labels_in_order(renames.get(x, x) for x in reader.labels)
    return _numbered(name, uris, paths, parsed, rejected, emotions, renames)


def _from_table(
    table: str, input_uri: str, paths: list[str], label_map: Mapping[str, str] | None
) -> LabelledFiles:
    rows = read_label_table(table)
    match = match_table(rows, posixpath.basename(table), input_uri, paths, dict(label_map or {}))
    parsed = {e.relpath: e.labels for e in match.entries}
    uris = [e.uri for e in match.entries]
    listed = [e.relpath for e in match.entries]
    emotions = labels_in_order(labels.label for labels in parsed.values())
    return _numbered(TABLE, uris, listed, parsed, list(match.rejected), emotions, {})


def _numbered(
    corpus: str,
    uris: list[str],
    paths: list[str],
    parsed: dict[str, ClipLabels | None],
    rejected: list[tuple[str, str]],
    emotions: tuple[str, ...],
    renames: dict[str, str],
) -> LabelledFiles:
    """Shard label fields of parsed files: speakers and labels as numbers."""
    numbers = speaker_numbering({c.speaker for c in parsed.values() if c is not None})
    codes = {label: code for code, label in enumerate(emotions, start=1)}
    fields, genders = {}, {}
    for path, clip in parsed.items():
        if clip is None:
            fields[path] = unlabelled()
            continue
        number, code = numbers[clip.speaker], codes[renames.get(clip.label, clip.label)]
        genders.setdefault(number, clip.gender)
        row = dict.fromkeys(("intensity", "statement", "repetition"), UNKNOWN)
        fields[path] = row | {"actor": number, "emotion": code, "label": code - 1}
        fields[path]["gender"] = clip.gender
    speakers = {n: s for s, n in sorted(numbers.items(), key=lambda item: item[1])}
    return _kept(corpus, uris, paths, fields, rejected, emotions, speakers, genders)


def _kept(
    corpus: str,
    uris: list[str],
    paths: list[str],
    fields: dict[str, dict[str, Any]],
    rejected: list[tuple[str, str]],
    emotions: tuple[str, ...],
    speakers: dict[int, str],
    genders: dict[int, str],
) -> LabelledFiles:
    """The labelled files only, in listing order."""
    pairs = [(u, p) for u, p in zip(uris, paths, strict=True) if p in fields]
    kept_uris, kept_paths = [u for u, _ in pairs], [p for _, p in pairs]
    return LabelledFiles(
        corpus, kept_uris, kept_paths, fields, sorted(rejected), emotions, speakers, genders
    )


def _one_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def speaker_numbering(ids: set[str]) -> dict[str, int]:
    """``{speaker id: number}``: the id itself when every id is a distinct number (RAVDESS's
    actors, CREMA-D's 1001..1091, EmoDB's 03..16), else the 1-based rank of the sorted ids."""
    numeric = all(i.isdigit() and 0 < int(i) <= MAX_SPEAKER_NUMBER for i in ids)
    if numeric and len({int(i) for i in ids}) == len(ids):
        return {i: int(i) for i in ids}
    return {i: rank for rank, i in enumerate(sorted(ids), start=1)}
