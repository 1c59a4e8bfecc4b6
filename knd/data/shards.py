"""The feature-shard format: what ``knd prepare`` writes and every later stage reads.

A prepared feature set is a folder (local or ``s3://``)::

    <output>/manifest.json                 the commit point, written last
    <output>/rejected.csv                  path,reason of every rejected file of the committed run
    <output>/shards-<hash8>-<run>/part-*.parquet ...

Each shard holds one row per clip (:func:`row_schema`): path, content hash, RAVDESS labels,
duration and each feature group as one fixed-size binary value (raw little-endian values, shape
and dtype in the field metadata) in a column named after the group (``logmel``, ``prosody``,
``egemaps``). The manifest (``"version": 2``) lists each group's hash, shape and dtype under
``feature_groups``. Only the shards the manifest lists belong to the dataset.

Version 1 (no ``"version"``, written before the log-mel became an ordinary group) kept the
log-mel's hash, shape and dtype in top-level ``feature_hash``/``feature_shape``/``feature_dtype``
and its values in a shard column named ``features``; :func:`manifest_from_v1` reads it as
version 2 (the log-mel's spec then names its ``column``).

This module is library layer: it never imports a stage.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from knd.config.schema import FEATURE_GROUPS
from knd.data import storage
from knd.data.ravdess import EMOTIONS

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
REJECTED = "rejected.csv"
"""Held by the one ``knd prepare`` writing an output (hidden: readers' listings skip it)."""
UNKNOWN = -1
"""Label fields of a clip whose name is not a RAVDESS name (only kept when labels are optional)."""

LABEL_COLUMNS = ("actor", "emotion", "intensity", "statement", "repetition", "label")
MANIFEST_VERSION = 2
V1_LOGMEL_COLUMN = "features"
"""The shard column of the log-mel in version 1."""


def stored_column(group: str, spec: dict[str, Any]) -> str:
    """The shard column holding ``group`` (its name; a v1 log-mel's ``features``)."""
    return spec.get("column", group)


def row_schema(specs: dict[str, dict[str, Any]]) -> pa.Schema:
    """Schema of one processed file: the stored columns plus ``error`` (null for a good clip).

    ``specs``: the ``{group: {"hash", "shape", "dtype"}}`` of the groups computed
    (:func:`knd.audio.features.group_specs`)."""
    fields = [pa.field("path", pa.string()), pa.field("sha256", pa.string())]
    fields += [pa.field(name, pa.int32()) for name in LABEL_COLUMNS]
    fields += [pa.field("gender", pa.string()), pa.field("duration", pa.float32())]
    for group, spec in specs.items():
        nbytes = int(np.prod(spec["shape"])) * np.dtype(spec["dtype"]).itemsize
        field_meta = {"feature_shape": json.dumps(spec["shape"]), "feature_dtype": spec["dtype"]}
        # Raw little-endian values, one fixed-size binary per clip, shape and dtype in the
        # metadata: Parquet writes a list column with a level per element, this one with one per
        # clip (7x faster to write and 10x faster to read), and it needs no Ray tensor extension.
        fields.append(pa.field(group, pa.binary(nbytes), metadata=field_meta))
    fields.append(pa.field("error", pa.string()))
    return pa.schema(fields)


@dataclass
class FeatureTable:
    """A prepared feature set in memory (see :func:`load_features`)."""

    groups: dict[str, np.ndarray]
    """The groups read, ``{group: float32 [rows, *shape]}``."""
    label: np.ndarray
    actor: np.ndarray
    emotion: np.ndarray
    path: np.ndarray
    duration: np.ndarray
    manifest: dict[str, Any]

    def __len__(self) -> int:
        return len(self.label)

    def inputs(self) -> dict[str, np.ndarray]:
        """Every group read: what a model's inputs are made of."""
        return dict(self.groups)


# ----------------------------------------------------------------------------------------------
# The feature column


def encode_features(values: list, kind: pa.FixedSizeBinaryType, dtype: np.dtype) -> pa.Array:
    """Per-row feature arrays (None for a failed file) as one fixed-size binary array."""
    rows = np.zeros((len(values), kind.byte_width // dtype.itemsize), dtype=dtype)
    valid = np.array([v is not None for v in values], dtype=bool)
    for i, v in enumerate(values):
        if v is not None:
            rows[i] = v.reshape(-1)
    bitmap = None if valid.all() else pa.array(valid).buffers()[1]
    return pa.FixedSizeBinaryArray.from_buffers(
        kind, len(values), [bitmap, pa.py_buffer(rows)], null_count=int((~valid).sum())
    )


def decode_features(column: pa.Array | pa.ChunkedArray, shape, dtype: str) -> np.ndarray:
    """Stored features -> float32 ``[rows, *shape]`` (the inverse of :func:`encode_features`)."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    stored = np.dtype(dtype).newbyteorder("<")
    count = int(np.prod(shape))
    parts = [
        np.frombuffer(
            c.buffers()[1], stored, count=len(c) * count, offset=c.offset * count * stored.itemsize
        )
        for c in chunks
        if len(c)
    ]
    flat = np.concatenate(parts) if parts else np.zeros(0, stored)
    return flat.astype(np.float32).reshape(-1, *shape)


# ----------------------------------------------------------------------------------------------
# Writing


def write_shard(table: pa.Table, fs: pafs.FileSystem, path: str) -> None:
    """Write one shard (zstd: log-mels shrink by a third for ~0.2 ms per clip)."""
    pq.write_table(table, path, filesystem=fs, compression="zstd")


def shard_rows_table(kept: pa.Table) -> pa.Table:
    """The stored columns of ``kept`` (processed rows without ``error``)."""
    return kept.drop_columns(["error"]) if "error" in kept.column_names else kept


def missing_shards(output: str, manifest: dict[str, Any]) -> list[str]:
    """The shards ``manifest`` lists that ``output`` does not hold (one listing per folder)."""
    fs, root = storage.resolve(output)
    present: set[str] = set()
    for folder in sorted({s.rsplit("/", 1)[0] for s in manifest.get("shards", []) if "/" in s}):
        try:
            infos = fs.get_file_info(pafs.FileSelector(f"{root}/{folder}", allow_not_found=True))
        except OSError:
            continue
        present.update(f"{folder}/{i.base_name}" for i in infos if i.type == pafs.FileType.File)
    return [s for s in manifest.get("shards", []) if s not in present]


def remove_superseded(output: str, keep_folder: str | None) -> list[str]:
    """Delete shard and staging folders other than ``keep_folder`` older than the manifest.

    A folder holding anything newer than the committed manifest may belong to a run still under
    way (one that ignored or outlived the lease): it is left alone.
    """
    fs, root = storage.resolve(output)
    removed: list[str] = []
    try:
        committed = fs.get_file_info(f"{root}/{MANIFEST}")
        entries = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    except OSError:
        return removed
    if committed.type != pafs.FileType.File or committed.mtime_ns is None:
        return removed
    for entry in entries:
        name = entry.base_name
        if entry.type != pafs.FileType.Directory or name == keep_folder:
            continue
        if not name.startswith(("shards-", ".tmp-shards-")):
            continue
        inside = fs.get_file_info(pafs.FileSelector(entry.path, recursive=True))
        times = [i.mtime_ns for i in [entry, *inside] if i.mtime_ns is not None]
        if times and max(times) > committed.mtime_ns:
            log.info("kept %s: it holds files newer than the committed manifest", name)
            continue
        fs.delete_dir(entry.path)
        removed.append(name)
    return removed


def read_manifest(output: str) -> dict[str, Any] | None:
    """The committed manifest of ``output``, or None when there is none (or it is unreadable)."""
    uri = storage.join(output, MANIFEST)
    if not storage.exists(uri):
        return None
    try:
        manifest = json.loads(storage.read_text(uri))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        log.warning("ignoring unreadable %s (%s)", uri, e)
        return None
    return manifest_from_v1(manifest) if isinstance(manifest, dict) else None


def manifest_from_v1(manifest: dict[str, Any]) -> dict[str, Any]:
    """A manifest in the version-2 shape (a v2 one as it is): the one reader of version 1.

    Version 1 kept the log-mel's hash, shape and dtype in top-level keys (a manifest written
    before groups existed had no ``feature_groups`` at all) and its values in the column
    ``features``; here they become the log-mel's entry of ``feature_groups``, with that column.
    """
    if manifest.get("version", 1) != 1:
        return manifest
    out = {k: v for k, v in manifest.items() if k not in _V1_LOGMEL_KEYS}
    logmel = {
        "hash": manifest.get("feature_hash"),
        "shape": list(manifest.get("feature_shape", [])),
        "dtype": manifest.get("feature_dtype", "float32"),
        "column": V1_LOGMEL_COLUMN,
    }
    groups = manifest.get("feature_groups")
    others = groups if isinstance(groups, dict) else {}
    out["feature_groups"] = {"logmel": logmel} | {g: s for g, s in others.items() if g != "logmel"}
    return {"version": MANIFEST_VERSION, **out}


_V1_LOGMEL_KEYS = ("feature_hash", "feature_shape", "feature_dtype", "feature_algorithm")


def manifest_groups(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{group: {"hash", "shape", "dtype"}}`` of a (version-2) manifest."""
    groups = manifest.get("feature_groups")
    return dict(groups) if isinstance(groups, dict) else {}


def check_groups(
    path: str, manifest: dict[str, Any], expected: dict[str, str | None]
) -> dict[str, dict[str, Any]]:
    """The specs of the ``expected`` groups (``{group: hash or None}``) of a feature set.

    Raises:
        ValueError: a group is missing (the message names the command that adds it), or was
            made with other parameters than ``expected`` says.
    """
    present = manifest_groups(manifest)
    for group, wanted in expected.items():
        if group not in present:
            needed = sorted(set(present) | set(expected), key=_GROUP_ORDER.index)
            raise ValueError(
                f"features at {path} have no {group!r} group; add it with: knd prepare "
                f"input=<audio> output={path} features.groups=[{','.join(needed)}]"
            )
        if wanted is not None and present[group].get("hash") != wanted:
            why = " (another encoder, or its weights changed)" if group == "embedding" else ""
            raise ValueError(
                f"{path}: {group} features were made with other parameters{why} (hash "
                f"{present[group].get('hash')}, checkpoint expects {wanted})"
            )
    return {group: present[group] for group in expected}


_GROUP_ORDER = FEATURE_GROUPS


def checked_manifest(
    path: str, expected: dict[str, str | None]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The manifest of ``path`` and the specs of the ``expected`` groups."""
    manifest = read_manifest(path)
    if manifest is None:
        raise ValueError(f"no prepared features at {path} (no {MANIFEST}; run knd prepare first)")
    if not manifest.get("shards"):
        raise ValueError(f"no prepared features at {path} ({MANIFEST} lists no shard)")
    return manifest, check_groups(path, manifest, expected)


def expected_groups(
    groups: Iterable[str] | dict[str, str | None] | None, expected_hash: str | None
) -> dict[str, str | None]:
    wanted: dict[str, str | None] = {"logmel": expected_hash}
    if isinstance(groups, dict):
        wanted |= groups
    elif groups is not None:
        wanted |= {g: None for g in groups if g != "logmel"}
    return wanted


def shard_paths(path: str, manifest: dict[str, Any]) -> tuple[pafs.FileSystem, list[str]]:
    fs, root = storage.resolve(path)
    return fs, [f"{root}/{shard}" for shard in manifest["shards"]]


def to_numpy_batch(
    table: pa.Table,
    specs: dict[str, dict[str, Any]],
    actors: tuple[int, ...] | None,
    emotions: tuple[int, ...] | None = None,
) -> dict[str, np.ndarray]:
    """A shard's rows of ``actors`` and ``emotions`` (codes; None: all) as numpy columns, each
    feature group decoded to ``[rows, *shape]``."""
    for column, kept in (("actor", actors), ("emotion", emotions)):
        if kept is not None:
            table = table.filter(pc.is_in(table[column], pa.array(list(kept), pa.int32())))
    stored = {stored_column(g, spec) for g, spec in specs.items()}
    out = {
        name: table[name].to_numpy(zero_copy_only=False)
        for name in table.column_names
        if name not in stored and name not in _GROUP_ORDER and name != V1_LOGMEL_COLUMN
    }
    for group, spec in specs.items():
        column = table[stored_column(group, spec)]
        out[group] = decode_features(column, tuple(spec["shape"]), spec["dtype"])
    return out


def load_features(
    path: str,
    actors: Iterable[int] | None = None,
    expected_hash: str | None = None,
    groups: Iterable[str] | dict[str, str | None] | None = None,
    emotions: Iterable[int] | None = None,
) -> FeatureTable:
    """A prepared feature set in memory (:func:`knd.learning.feed.read_features` streams it with Ray
    Data): the clips of ``actors`` and of the emotion codes ``emotions`` (None: all).

    Raises:
        ValueError: no manifest, a missing group, or features made with other parameters.
    """
    manifest, specs = checked_manifest(path, expected_groups(groups, expected_hash))
    fs, files = shard_paths(path, manifest)
    stored = {stored_column(g, s) for g, s in manifest_groups(manifest).items()}
    columns = [c for c in pq.read_schema(files[0], filesystem=fs).names if c not in stored]
    columns += [stored_column(g, spec) for g, spec in specs.items()]
    table = pa.concat_tables([pq.read_table(f, filesystem=fs, columns=columns) for f in files])
    wanted = None if actors is None else tuple(int(a) for a in actors)
    codes = None if emotions is None else tuple(int(e) for e in emotions)
    cols = to_numpy_batch(table, specs, wanted, codes)
    return FeatureTable(
        groups={g: cols[g] for g in specs},
        label=cols["label"].astype(np.int64),
        actor=cols["actor"].astype(np.int64),
        emotion=cols["emotion"].astype(np.int64),
        path=cols["path"].astype(str),
        duration=cols["duration"].astype(np.float32),
        manifest=manifest,
    )


def manifest_actors(manifest: dict[str, Any]) -> list[int]:
    """The actors a manifest has clips of, ascending: the one list train, tune and bench split.

    Clips whose names are not RAVDESS names are counted under ``unknown``, which is no actor.
    """
    return sorted(int(a) for a in manifest["rows_per_actor"] if str(a).isdigit())


def manifest_emotions(manifest: dict[str, Any]) -> tuple[str, ...]:
    """The dataset's labels: a clip's ``emotion`` is the 1-based position of its label here.

    A manifest written before corpora other than RAVDESS were read has RAVDESS's eight emotions
    (its codes 01..08)."""
    return tuple(manifest.get("emotions") or EMOTIONS)


def manifest_speakers(manifest: dict[str, Any]) -> dict[int, str]:
    """``{speaker id: speaker name}``: a clip's ``actor`` column holds the id (RAVDESS: the actor
    number, named by itself, which is what a manifest without ``speakers`` means)."""
    names = manifest.get("speakers")
    if names is None:
        return {a: str(a) for a in manifest_actors(manifest)}
    return {int(i): str(name) for i, name in names.items()}


def emotion_counts(path: str, actors: Iterable[int]) -> dict[int, int]:
    """``{emotion code: clips}`` of ``actors`` in a prepared feature set (label columns only)."""
    manifest = read_manifest(path)
    if manifest is None:
        return {}
    fs, files = shard_paths(path, manifest)
    wanted = pa.array(sorted({int(a) for a in actors}), pa.int32())
    counts: dict[int, int] = {}
    for f in files:
        table = pq.read_table(f, filesystem=fs, columns=["actor", "emotion"])
        codes = table.filter(pc.is_in(table["actor"], wanted))["emotion"].to_numpy()
        for code, n in zip(*np.unique(codes, return_counts=True), strict=True):
            counts[int(code)] = counts.get(int(code), 0) + int(n)
    return counts
