"""One prepared feature set, or several read as one: what ``data=`` names for train, tune, evaluate.

``data=F`` is the ``output`` of one ``knd prepare``. ``data=[F1,F2]`` is several, prepared with the
same feature parameters (refused with a one-line reason otherwise), read as their union:

- speakers are namespaced by corpus: the manifest names them ``<corpus>/<id>`` (``emodb/03``,
  ``ravdess/1``) and numbers them ``index * SPEAKER_STRIDE + number`` (``index`` the position in
  ``data``), so ``split.test_speakers=[emodb/03]`` and the default folds span every corpus;
- the labels are the union of theirs, in the vocabulary's order, and each clip's emotion code is
  its label's position there;
- the merged manifest lists the corpora (``corpora``), so metrics can be broken down by corpus.

:func:`read_manifest` and :func:`load_features` take either form; the single-dataset primitives
are :mod:`knd.data.shards`'s.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from knd.data import shards
from knd.data.corpora import labels_in_order
from knd.data.shards import FeatureTable, manifest_emotions, manifest_groups, manifest_speakers

SPEAKER_STRIDE = 10**8
"""Speaker numbers of the ``i``-th corpus of a union start at ``i * SPEAKER_STRIDE``."""
UNION = "union"

Data = str | Sequence[str]


def data_paths(data: Data) -> list[str]:
    """The feature sets ``data`` names (one path, or a list of them)."""
    return [data] if isinstance(data, str) else [str(p) for p in data]


def data_text(data: Data) -> str:
    """``data`` as typed on the command line (``F`` or ``[F1,F2]``)."""
    paths = data_paths(data)
    return paths[0] if len(paths) == 1 else f"[{','.join(paths)}]"


def read_manifest(data: Data) -> dict[str, Any] | None:
    """The manifest of one feature set, or the merged manifest of several (None when one of
    them has none).

    Raises:
        ValueError: several feature sets made with different feature parameters.
    """
    paths = data_paths(data)
    manifests = [shards.read_manifest(p) for p in paths]
    if any(m is None for m in manifests):
        return None
    return manifests[0] if len(paths) == 1 else merged_manifest(paths, manifests)


def _corpus_names(paths: list[str], manifests: list[dict]) -> list[str]:
    """A distinct name per corpus: its layout's (``emodb``), else its folder's."""
    names = []
    for path, manifest in zip(paths, manifests, strict=True):
        name = manifest.get("corpus", "ravdess")
        if name == "table" or name in names:
            name = posixpath.basename(path.rstrip("/")) or name
        while name in names:
            name += "'"
        names.append(name)
    return names


def _same_features(paths: list[str], manifests: list[dict]) -> dict[str, dict]:
    """The groups every feature set has, refused when one was made with other parameters."""
    first = manifest_groups(manifests[0])
    common = {g: s for g, s in first.items() if all(g in manifest_groups(m) for m in manifests)}
    for path, manifest in zip(paths[1:], manifests[1:], strict=True):
        for group, spec in common.items():
            other = manifest_groups(manifest)[group]["hash"]
            if other != spec["hash"]:
                raise ValueError(
                    f"{path}: {group} features were made with other parameters than "
                    f"{paths[0]}'s (hash {other}, not {spec['hash']}); prepare every corpus of "
                    "data=[...] with the same features.* keys"
                )
    return common


def merged_manifest(paths: list[str], manifests: list[dict]) -> dict[str, Any]:
    """The manifest of several feature sets read as one (see the module docstring)."""
    groups = _same_features(paths, manifests)
    names = _corpus_names(paths, manifests)
    emotions = labels_in_order(e for m in manifests for e in manifest_emotions(m))
    speakers, genders, per_actor, per_emotion = {}, {}, {}, {}
    for i, (name, manifest) in enumerate(zip(names, manifests, strict=True)):
        offset = i * SPEAKER_STRIDE
        own_genders = manifest.get("speaker_genders", {})
        for number, speaker in manifest_speakers(manifest).items():
            speakers[str(offset + number)] = f"{name}/{speaker}"
            genders[str(offset + number)] = own_genders.get(str(number), "unknown")
        for actor, n in manifest.get("rows_per_actor", {}).items():
            key = str(offset + int(actor)) if str(actor).isdigit() else actor
            per_actor[key] = per_actor.get(key, 0) + n
        for label, n in manifest.get("rows_per_emotion", {}).items():
            per_emotion[label] = per_emotion.get(label, 0) + n
    checksums = "\n".join(str(m.get("corpus_checksum")) for m in manifests)
    return {
        "version": shards.MANIFEST_VERSION,
        "corpus": UNION,
        "corpora": [
            {
                "data": p,
                "name": n,
                "first_speaker": i * SPEAKER_STRIDE,
                "emotions": list(manifest_emotions(m)),
                "corpus_checksum": m.get("corpus_checksum"),
            }
            for i, (p, n, m) in enumerate(zip(paths, names, manifests, strict=True))
        ],
        "feature_params": manifests[0]["feature_params"],
        "feature_groups": groups,
        "emotions": list(emotions),
        "speakers": speakers,
        "speaker_genders": genders,
        "rows_per_actor": per_actor,
        "rows_per_emotion": per_emotion,
        "num_rows": sum(m.get("num_rows", 0) for m in manifests),
        "corpus_checksum": hashlib.sha256(checksums.encode()).hexdigest(),
    }


def speaker_keys(manifest: dict[str, Any]) -> dict[int, str] | None:
    """``{speaker number: key}``, a key naming the speaker wherever its corpus is read: the
    corpus's checksum (its first 16 digits), a colon, the speaker's own id. A checkpoint records
    its split's keys so that evaluating it on one corpus of a union, or on a union holding its
    corpus, still knows which speakers it trained on. None when a corpus has no checksum."""
    parts = manifest.get("corpora") or [
        {"first_speaker": 0, "name": None, "corpus_checksum": manifest.get("corpus_checksum")}
    ]
    if any(not part.get("corpus_checksum") for part in parts):
        return None
    keys = {}
    for number, name in manifest_speakers(manifest).items():
        part = parts[number // SPEAKER_STRIDE]
        own = name.removeprefix(f"{part['name']}/") if part["name"] else name
        keys[number] = f"{part['corpus_checksum'][:16]}:{own}"
    return keys


def key_corpus(key: str) -> str:
    """The corpus part of a :func:`speaker_keys` key."""
    return key.split(":", 1)[0]


def corpus_of_speakers(manifest: dict[str, Any], actors: np.ndarray) -> np.ndarray:
    """Each speaker number's corpus name in a union's manifest (its ``corpora``)."""
    names = np.array([c["name"] for c in manifest["corpora"]], dtype=object)
    return names[np.asarray(actors, dtype=np.int64) // SPEAKER_STRIDE]


@dataclass(frozen=True)
class UnionPart:
    """What to read of one feature set of a union, and how to renumber what it gives."""

    path: str
    offset: int
    """Added to its speaker numbers."""
    to_union: np.ndarray
    """``to_union[code]``: the union's emotion code of its code ``code`` (index 0 unused)."""
    actors: list[int] | None
    """Its own speaker numbers to read (None: all)."""
    emotions: list[int] | None
    """Its own emotion codes to read (None: all)."""

    def renumber(self, actor: np.ndarray, emotion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(actor, emotion)`` columns of this set in the union's numbering."""
        codes = np.clip(np.asarray(emotion, dtype=np.int64), 0, len(self.to_union) - 1)
        return np.asarray(actor, dtype=np.int64) + self.offset, self.to_union[codes]


def union_parts(
    paths: list[str], merged: dict[str, Any], actors: Iterable[int] | None, emotions
) -> list[UnionPart]:
    """The parts of a union that hold clips of ``actors`` and ``emotions`` (the union's
    numbers; None: all)."""
    union = tuple(merged["emotions"])
    wanted = None if actors is None else {int(a) for a in actors}
    codes = None if emotions is None else {int(e) for e in emotions}
    parts = []
    for i, (path, corpus) in enumerate(zip(paths, merged["corpora"], strict=True)):
        offset = i * SPEAKER_STRIDE
        own = corpus["emotions"]  # recorded when the manifests were merged: not read again
        to_union = np.array([-1] + [union.index(e) + 1 for e in own], dtype=np.int64)
        local_actors = local_codes = None
        if wanted is not None:
            local_actors = [a - offset for a in wanted if offset <= a < offset + SPEAKER_STRIDE]
        if codes is not None:
            local_codes = [c for c in range(1, len(own) + 1) if to_union[c] in codes]
        if local_actors == [] or local_codes == []:
            continue
        parts.append(UnionPart(path, offset, to_union, local_actors, local_codes))
    return parts


def load_features(
    data: Data,
    actors: Iterable[int] | None = None,
    expected_hash: str | None = None,
    groups: Iterable[str] | dict[str, str | None] | None = None,
    emotions: Iterable[int] | None = None,
) -> FeatureTable:
    """:func:`knd.data.shards.load_features` of one feature set or of several read as one
    (``actors`` and ``emotions`` then in the union's numbering)."""
    paths = data_paths(data)
    if len(paths) == 1:
        return shards.load_features(paths[0], actors, expected_hash, groups, emotions)
    merged = read_manifest(paths)
    if merged is None:
        raise ValueError(f"no prepared features at one of {paths} (run knd prepare first)")
    tables = []
    for part in union_parts(paths, merged, actors, emotions):
        table = shards.load_features(part.path, part.actors, expected_hash, groups, part.emotions)
        table.actor, table.emotion = part.renumber(table.actor, table.emotion)
        table.label = table.emotion - 1
        tables.append(table)
    if not tables:  # no clip matched: the first set's empty table, under the merged manifest
        tables = [shards.load_features(paths[0], actors=[-2], groups=groups)]
    return _concat(tables, merged)


def _concat(tables: list[FeatureTable], manifest: dict[str, Any]) -> FeatureTable:
    return FeatureTable(
        groups={g: np.concatenate([t.groups[g] for t in tables]) for g in tables[0].groups},
        label=np.concatenate([t.label for t in tables]),
        actor=np.concatenate([t.actor for t in tables]),
        emotion=np.concatenate([t.emotion for t in tables]),
        path=np.concatenate([t.path for t in tables]),
        duration=np.concatenate([t.duration for t in tables]),
        manifest=manifest,
    )


def checked_manifest(
    data: Data, expected: dict[str, str | None]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """:func:`knd.data.shards.checked_manifest` of one feature set or of several (each checked,
    then their merged manifest)."""
    paths = data_paths(data)
    if len(paths) == 1:
        return shards.checked_manifest(paths[0], expected)
    manifests = [shards.checked_manifest(p, expected)[0] for p in paths]
    merged = merged_manifest(paths, manifests)
    return merged, shards.check_groups(data_text(paths), merged, expected)
