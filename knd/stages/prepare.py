"""``knd prepare``: audio -> feature-group Parquet shards + ``manifest.json`` + ``rejected.csv``.

The data path streams: features never pass through the driver. The driver lists the input and
runs two passes of Ray tasks over *paths* (audio bytes never cross the object store either):

1. **hash**: each task reads its files and returns ``(path, sha256, size)``. The driver then
   rejects duplicate clips (same bytes; the shortest path wins) and names that are not RAVDESS
   names, so a duplicate is never decoded.
2. **featurise**: each task decodes, featurises (:func:`knd.audio.features.clip_groups`) and writes
   its kept clips as one Parquet shard into the run's staging folder itself, returning only small
   per-file rows (path, hash, labels, duration, error, shard) to the driver.

Every per-file failure, whatever its exception, is a row with a reason. Retries are bounded
(:mod:`knd.runtime.tasks`): a task whose worker dies (out of memory, a crash) is not retried as a
whole; its files are retried one per task, and a file whose own task fails again is rejected with
the reason (``its worker died twice ...`` when it took that worker down too). The driver
writes ``rejected.csv`` and the manifest last (see :mod:`knd.data.shards` for the layout), under an
exclusive lease on the output (:class:`knd.data.lease.OutputLease`), so two runs into one output
cannot interleave their commits. Only shard folders older than the committed manifest are removed.

A rerun over the same input listing (relative paths, sizes, modification times) with the same
feature parameters, whose manifest's shards all exist, does nothing.

**Resume** (the staging protocol of :mod:`knd.data.staging`). The staging folder's name is a
hash of the dataset (input listing, feature and group hashes, ``require_labels``), so a rerun of
an interrupted run (its driver killed, the head lost, a RayJob retry) finds it. A featurise task
writes its shard, then a small record of its rows (``part-*.parquet.done.json``, written
atomically): a part with a record is finished and is reused as it is, its files never decoded
again; a part without one (in flight when the run died) is done again under a new name. The
commit writes the manifest once, then deletes every staged file it does not list (records,
half-written or orphaned shards).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import posixpath
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

import knd
from knd.audio.features import (
    clip_groups,
    feature_hash,
    group_specs,
)
from knd.audio.waveform import decode_audio
from knd.config.loading import to_dict
from knd.config.schema import FeatureConfig, PrepareConfig
from knd.data import storage
from knd.data.labelling import LabelledFiles, label_files, unlabelled
from knd.data.lease import OutputLease
from knd.data.shards import (
    MANIFEST,
    MANIFEST_VERSION,
    REJECTED,
    UNKNOWN,
    encode_features,
    manifest_groups,
    missing_shards,
    read_manifest,
    remove_superseded,
    row_schema,
    shard_rows_table,
    write_shard,
)
from knd.data.staging import Staging, staging_key
from knd.runtime.console import file_progress
from knd.runtime.tasks import TaskMap, failure_reason, ray_map, run_tasks, split_by_file

log = logging.getLogger(__name__)

TASKS_PER_CPU = 16
"""Featurise tasks per CPU (at least): a short tail at the end, Ray's per-task cost amortised."""
HASH_TASKS_PER_CPU = 4
MAX_HASH_FILES_PER_TASK = 2048
LEASE_WAIT_S = 660.0
"""How long a run waits for a lease held on another host (stale after 600 s without renewal)."""
DONE_SUFFIX = ".done.json"
"""Suffix of a finished part's record: its shard's name plus this, written after the shard."""


@dataclass(frozen=True)
class PrepareResult:
    """What a prepare run did."""

    output: str
    manifest: dict[str, Any] | None
    num_rows: int
    num_rejected: int
    skipped: bool
    """True when the output already held this dataset and nothing was done."""
    exit_code: int
    num_reused: int = 0
    """Kept clips taken from parts an interrupted run had finished (not decoded again)."""


# ----------------------------------------------------------------------------------------------
# The per-file work, shared by the Ray tasks and the benchmark's baselines


def process_files(
    uris: list[str],
    paths: list[str],
    params: FeatureConfig,
    labels: list[dict[str, Any]],
    hashes: list[str] | None = None,
) -> pa.Table:
    """Read, hash, label and featurise files; a file that fails is a row with an ``error``.

    Args:
        uris: where to read each file (local path or ``s3://``).
        paths: each file's path relative to the input, stored and reported.
        params: feature parameters.
        labels: each file's label fields (:attr:`knd.data.labelling.LabelledFiles.fields`).
        hashes: each file's sha256 when already known (the hash pass), else computed here.

    Returns:
        One row per file with the columns of :func:`knd.data.shards.row_schema`.
    """
    specs = group_specs(params)
    schema = row_schema(specs)
    cols: dict[str, list] = {name: [] for name in schema.names}
    stores = {g: np.dtype(spec["dtype"]).newbyteorder("<") for g, spec in specs.items()}
    fs = None
    for i, (uri, path) in enumerate(zip(uris, paths, strict=True)):
        row: dict[str, Any] = {"path": path, "sha256": None, "duration": None}
        row |= dict.fromkeys(stores)
        row |= unlabelled() | labels[i] | {"error": None}
        try:
            if fs is None:  # one filesystem (one S3 connection pool) per batch, not per file
                fs, _ = storage.resolve(uri)
            data = storage.read_bytes(uri, fs)
            row["sha256"] = hashes[i] if hashes else hashlib.sha256(data).hexdigest()
            samples, rate = decode_audio(data)
            del data
            groups, row["duration"] = clip_groups(samples, rate, params)
            for group, values in groups.items():
                column = group
                row[column] = values.astype(stores[column], order="C")
        except Exception as e:  # noqa: BLE001 - any failure is this file's, never the batch's
            row["error"] = failure_reason(e)
            row |= dict.fromkeys(stores)
        for name in schema.names:
            cols[name].append(row[name])
    arrays = []
    for field in schema:
        if field.name in stores:
            arrays.append(encode_features(cols[field.name], field.type, stores[field.name]))
        else:
            arrays.append(pa.array(cols[field.name], type=field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def hash_files(uris: list[str], paths: list[str]) -> list[dict[str, Any]]:
    """The hash pass: ``{path, sha256, size, error}`` per file, reading each file once."""
    rows, fs = [], None
    for uri, path in zip(uris, paths, strict=True):
        row: dict[str, Any] = {"path": path, "sha256": None, "size": None, "error": None}
        try:
            if fs is None:
                fs, _ = storage.resolve(uri)
            data = storage.read_bytes(uri, fs)
            row["size"] = len(data)
            row["sha256"] = hashlib.sha256(data).hexdigest()
            if not data:
                row["error"] = "empty file"  # all empty files share a hash: not duplicates
        except Exception as e:  # noqa: BLE001 - a file's failure is a row
            row["error"] = failure_reason(e)
        rows.append(row)
    return rows


def featurize_part(
    uris: list[str],
    paths: list[str],
    hashes: list[str],
    part: str,
    output: str,
    staging: str,
    folder: str,
    params: FeatureConfig,
    labels: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """The featurise pass: process files, write the good ones as shard ``staging/part``.

    The part's record (its rows, ``part`` + :data:`DONE_SUFFIX`) is written last: its presence
    says the shard is whole, so a rerun may reuse it.

    Returns:
        Small per-file rows (every column but the feature groups', plus ``shard``: the shard's path
        relative to ``output`` once committed under ``folder``, None for a failed file).
    """
    table = process_files(uris, paths, params, labels, hashes)
    good = table.filter(pc.is_null(table["error"]))
    stage, shard = Staging(storage.join(output, staging)), None
    if good.num_rows:
        write_shard(shard_rows_table(good), stage.fs, stage.path_of(part))
        shard = f"{folder}/{part}"
    rows = table.drop_columns(list(params.groups)).to_pylist()
    for row in rows:
        row["shard"] = shard if row["error"] is None else None
    stage.write(part + DONE_SUFFIX, json.dumps(rows).encode())  # the part is finished
    return rows


def _part_per_file(task: dict) -> list[dict]:
    """A failed featurise task's files as tasks of one file, each writing a part of its own."""
    singles = split_by_file(task)
    for i, single in enumerate(singles):
        single["part"] = task["part"].replace(".parquet", f"-{i:04d}.parquet")
    return singles


def _chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(n, i + size)) for i in range(0, n, max(1, size))]


# ----------------------------------------------------------------------------------------------
# Driver: listing, selection, commit


def list_inputs(input_uri: str) -> tuple[list[str], list[str], str]:
    """``(uris, relative paths, listing checksum)`` of the audio files under ``input_uri``.

    The checksum covers relative paths, sizes and modification times: equal listings mean the
    same input without reading any file.
    """
    uris = storage.list_files(input_uri, storage.AUDIO_SUFFIXES)
    fs, root = storage.resolve(input_uri)
    root_info = fs.get_file_info(root)
    if root_info.type == pafs.FileType.File:
        infos = {root: root_info}
        root = posixpath.dirname(root)
    else:
        # storage's listing: a directory link is never followed into a loop
        infos = {i.path: i for i in storage.list_file_infos(input_uri, storage.AUDIO_SUFFIXES)}
    paths, digest = [], hashlib.sha256()
    for uri in uris:
        inside = uri[len("s3://") :] if storage.is_remote(uri) else uri
        rel = posixpath.relpath(inside, root)
        info = infos.get(inside)
        size = info.size if info else -1
        mtime = info.mtime_ns if info and info.mtime_ns is not None else -1
        paths.append(rel)
        digest.update(f"{rel}\t{size}\t{mtime}\n".encode())
    return uris, paths, digest.hexdigest()


def select_files(
    hashed: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Split hash rows into files to featurise (sorted by path) and ``(path, reason)`` rejections.

    A clip whose bytes equal an earlier one's is a duplicate: of each group the shortest path
    (then the alphabetically first) is kept, so ``Actor_01/x.wav`` wins over
    ``audio_speech_actors_01-24/Actor_01/x.wav`` whatever order the files were listed in.
    """
    rejected: list[tuple[str, str]] = []
    good = []
    for row in hashed:
        if row["error"]:
            rejected.append((row["path"], row["error"]))
            continue
        good.append(row)
    keeper: dict[str, str] = {}
    keep = []
    for row in sorted(good, key=lambda r: (len(r["path"]), r["path"])):
        first = keeper.setdefault(row["sha256"], row["path"])
        if first == row["path"]:
            keep.append(row)
        else:
            rejected.append((row["path"], f"duplicate of {first} (same content)"))
    keep.sort(key=lambda r: r["path"])
    return keep, rejected


def reason_kind(reason: str) -> str:
    """``truncated WAV (expected ...)`` -> ``truncated WAV``: the summary's grouping key."""
    if reason.startswith("duplicate of "):
        return "duplicate"
    return reason.split(" (")[0].split(":")[0]


def _rejected_csv(rejected: list[tuple[str, str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "reason"])
    writer.writerows(rejected)
    return buf.getvalue()


def _counts(values: list[int], names: tuple[str, ...] | None = None) -> dict[str, int]:
    counts = Counter(values)
    out = {}
    for key in sorted(counts):
        if key == UNKNOWN:
            out["unknown"] = counts[key]
        else:
            out[names[key - 1] if names else str(key)] = counts[key]
    return out


def build_manifest(
    kept: list[dict[str, Any]],
    shards: list[str],
    shard_rows: list[int],
    rejected: list[tuple[str, str]],
    cfg: PrepareConfig,
    listing: str,
    specs: dict[str, dict] | None = None,
    labelled: LabelledFiles | None = None,
) -> dict[str, Any]:
    """The manifest of a dataset about to be committed (``kept``: its small per-file rows;
    ``specs``: :func:`~knd.audio.features.group_specs` of ``cfg.features`` when known;
    ``labelled``: the files' labels, by default RAVDESS's names)."""
    params = cfg.features
    content = hashlib.sha256("\n".join(sorted(r["sha256"] for r in kept)).encode()).hexdigest()
    labelled = labelled or label_inputs(cfg, [r["path"] for r in kept], [r["path"] for r in kept])
    speakers = {int(r["actor"]) for r in kept}
    return {
        "version": MANIFEST_VERSION,
        "knd_version": knd.__version__,
        "feature_params": to_dict(params),  # JSON-plain: a tuple would read back as a list
        "feature_groups": specs or group_specs(params),
        "num_rows": len(kept),
        "rows_per_actor": _counts([r["actor"] for r in kept]),
        "rows_per_emotion": _counts([r["emotion"] for r in kept], labelled.emotions),
        **labelled.manifest_keys(speakers),
        "corpus_checksum": content,
        "input": cfg.input,
        "input_listing": listing,
        "require_labels": cfg.require_labels,
        "num_files": len(kept) + len(rejected),
        "num_rejected": len(rejected),
        "rejected_reasons": dict(Counter(reason_kind(r) for _, r in rejected).most_common()),
        "shards": shards,
        "shard_rows": shard_rows,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def files_per_task(n: int, cpus: float, cfg: PrepareConfig) -> int:
    """Files per featurise task (= rows per shard, at most ``rows_per_shard``)."""
    balanced = math.ceil(n / max(1.0, cpus * TASKS_PER_CPU))
    return max(1, min(cfg.rows_per_shard, max(cfg.batch_size, balanced)))


def prepare_files(
    cfg: PrepareConfig,
    uris: list[str],
    paths: list[str],
    listing: str,
    map_tasks: TaskMap,
    cpus: float,
    lease: OutputLease | None = None,
    labelled: LabelledFiles | None = None,
) -> tuple[list[dict[str, Any]], list[tuple[str, str]], dict[str, Any] | None]:
    """Label, hash, select, featurise (workers write the shards) and commit.

    Args:
        map_tasks: how tasks run (:func:`knd.runtime.tasks.ray_map`, ``serial_map`` or a pool's).
        cpus: CPUs the tasks share (sizes the tasks).
        lease: the output's lease, renewed while tasks run and checked before the commit.
        labelled: the files' labels (:func:`label_inputs`), when the caller has them.

    Returns:
        ``(kept rows, rejections, manifest)``; the manifest is None when nothing usable remained,
        in which case nothing is committed.
    """
    renew = lease.renew if lease else (lambda: None)
    labelled = labelled or label_inputs(cfg, uris, paths)
    order = sorted(range(len(labelled.paths)), key=lambda i: labelled.paths[i])
    uris, paths = [labelled.uris[i] for i in order], [labelled.paths[i] for i in order]
    size = min(MAX_HASH_FILES_PER_TASK, max(1, math.ceil(len(paths) / (cpus * HASH_TASKS_PER_CPU))))
    hash_tasks = [{"uris": uris[s], "paths": paths[s]} for s in _chunks(len(paths), size)]
    hashed = run_tasks(map_tasks, hash_files, hash_tasks, {}, lambda files: renew())
    keep, rejected = select_files(hashed)
    rejected += labelled.rejected
    uri_of = dict(zip(paths, uris, strict=True))

    specs = group_specs(cfg.features)
    folders = staging_folders(cfg, listing, specs, labelled.digest)
    rows = _featurise(cfg, keep, uri_of, folders, map_tasks, cpus, renew, labelled.fields)
    rejected += [(r["path"], r["error"]) for r in rows if r.get("error")]
    rejected.sort()
    kept = sorted((r for r in rows if not r.get("error")), key=lambda r: r["path"])
    for path, reason in rejected:
        log.warning("rejected %s: %s", path, reason)
    manifest = _commit(cfg, kept, rejected, folders, listing, lease, specs, labelled)
    return kept, rejected, manifest


def label_inputs(cfg: PrepareConfig, uris: list[str], paths: list[str]) -> LabelledFiles:
    """The labels of the listed files from ``cfg.corpus`` (:mod:`knd.data.labelling`)."""
    return label_files(cfg.corpus, cfg.input, uris, paths, cfg.require_labels, cfg.label_map)


def staging_folders(
    cfg: PrepareConfig,
    listing: str,
    specs: dict[str, dict] | None = None,
    labels_digest: str = "",
) -> tuple[str, str]:
    """``(staging, folder)`` of this dataset: named by a hash of what defines it, so a rerun of an
    interrupted run stages into the same folder and finds the parts it finished.
    ``labels_digest`` (:attr:`knd.data.labelling.LabelledFiles.digest`) covers the files' labels:
    a label table edited between two runs makes another dataset.

    Locally the folder appears under its final name only once complete (one rename); on S3 a
    rename is a copy, so shards go straight to their folder and the manifest alone commits them.
    """
    groups = {g: spec["hash"] for g, spec in (specs or group_specs(cfg.features)).items()}
    logmel = feature_hash(cfg.features)
    # The shard format's version is part of the identity: parts a version-1 run staged (their
    # log-mel in a ``features`` column) must not be committed under a version-2 manifest.
    identity = [listing, logmel, groups, cfg.require_labels, MANIFEST_VERSION, labels_digest]
    key = staging_key(identity)
    folder = f"shards-{logmel[:8]}-{key[:8]}"
    return (folder if storage.is_remote(cfg.output) else f".tmp-{folder}"), folder


def finished_parts(stage: Staging, keep: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of the parts an interrupted run finished in ``stage``, for files of ``keep``.

    A part counts when its record exists (written after its shard) and every one of its files is
    still to prepare with the same content and not in an earlier counted part (a task whose node
    died after its record was written had its files redone one per task).
    """
    names = stage.names()
    records = sorted(n for n in names if n.endswith(DONE_SUFFIX))
    wanted = {r["path"]: r["sha256"] for r in keep}
    rows: list[dict[str, Any]] = []
    covered: set[str] = set()
    # Records are small, one GET each on S3: read many at a time.
    for name, part_rows in stage.read_finished(records, _parse_record, workers=16):
        paths = [r.get("path") for r in part_rows]
        has_shard = any(r.get("shard") for r in part_rows)
        if (
            not part_rows
            or (has_shard and name.removesuffix(DONE_SUFFIX) not in names)
            or any(p not in wanted or p in covered for p in paths)
            or any(r.get("sha256") not in (None, wanted[r["path"]]) for r in part_rows)
        ):
            continue
        covered.update(paths)
        rows.extend(r | {"reused": True} for r in part_rows)
    return rows


def _parse_record(data: bytes) -> list[dict[str, Any]]:
    """A part's record: its per-file rows.

    Raises:
        ValueError: not a record (then the part is discarded and done again).
    """
    rows = json.loads(data)
    if not (isinstance(rows, list) and all(isinstance(r, dict) and "path" in r for r in rows)):
        raise ValueError("not a list of per-file rows")
    return rows


def _featurise_tasks(
    todo: list[dict[str, Any]],
    uri_of: dict[str, str],
    per_task: int,
    fields: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """The featurise tasks of ``todo``, ``per_task`` files each, each with its part's name and
    its files' label ``fields``."""
    # A new name per run: a part still being written by a task of a killed run is never this
    # run's part (it is deleted at the commit, unlisted).
    run_token = uuid.uuid4().hex[:6]
    tasks = []
    for i, s in enumerate(_chunks(len(todo), per_task)):
        part = todo[s]
        tasks.append(
            {
                "uris": [uri_of[r["path"]] for r in part],
                "paths": [r["path"] for r in part],
                "hashes": [r["sha256"] for r in part],
                "labels": [fields[r["path"]] for r in part],
                "part": f"part-{run_token}-{i:05d}.parquet",
            }
        )
    return tasks


def _featurise(
    cfg: PrepareConfig,
    keep: list[dict[str, Any]],
    uri_of: dict[str, str],
    folders: tuple[str, str],
    map_tasks: TaskMap,
    cpus: float,
    renew: Callable[[], None],
    fields: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """The featurise pass over the selected files: each task writes its shard into staging.

    Files of parts an interrupted run finished (:func:`finished_parts`) are not featurised again.
    """
    staging, folder = folders
    stage = Staging(storage.join(cfg.output, staging))
    stage.create()
    reused = finished_parts(stage, keep)
    done = {r["path"] for r in reused}
    todo = [r for r in keep if r["path"] not in done]
    if reused:
        log.info(
            "reusing %d file(s) of parts an interrupted run finished in %s; featurising %d file(s)",
            len(done), staging, len(todo),
        )  # fmt: skip
    consts = {
        "output": cfg.output,
        "staging": staging,
        "folder": folder,
        "params": cfg.features,
    }
    tasks = _featurise_tasks(todo, uri_of, files_per_task(len(keep), cpus, cfg), fields)
    with file_progress(len(keep), "knd prepare", cfg.ray.verbose) as bar:
        bar.update(len(done))

        def progress(files: int) -> None:
            renew()
            bar.update(files)

        def discard(task: dict) -> None:
            # The record first: a task whose worker died after writing it (its node lost before
            # the result came back) must not leave a record of a shard that is then deleted.
            stage.discard(task["part"] + DONE_SUFFIX, task["part"])

        rows = run_tasks(
            map_tasks, featurize_part, tasks, consts, progress, discard, _part_per_file
        )
        return reused + rows


def _commit(
    cfg: PrepareConfig,
    kept: list[dict[str, Any]],
    rejected: list[tuple[str, str]],
    folders: tuple[str, str],
    listing: str,
    lease: OutputLease | None,
    specs: dict[str, dict],
    labelled: LabelledFiles,
) -> dict[str, Any] | None:
    """Move the staged shards into place and write the manifest last (the commit point).

    Nothing is committed when no file was kept (the staging folder is removed); the manifest is
    then None. ``rejected.csv`` is written either way.
    """
    staging, folder = folders
    stage = Staging(storage.join(cfg.output, staging))
    if not kept:
        stage.remove()
        if lease:
            lease.check()
        storage.write_text(storage.join(cfg.output, REJECTED), _rejected_csv(rejected))
        return None
    counts = Counter(r["shard"] for r in kept)
    shards = sorted(counts)
    # A folder of this very dataset is already there only when its commit lost a shard (else
    # this run would have been skipped): it is replaced.
    committed = stage.commit_folder(storage.join(cfg.output, folder))
    counted = [counts[s] for s in shards]
    manifest = build_manifest(kept, shards, counted, rejected, cfg, listing, specs, labelled)
    if lease:
        lease.check()  # a run that lost its lease must not commit over the winner's
    storage.write_text(storage.join(cfg.output, REJECTED), _rejected_csv(rejected))
    storage.write_text(storage.join(cfg.output, MANIFEST), json.dumps(manifest, indent=2) + "\n")
    # Records, and shards of tasks that died (or were cut off with their node) before their
    # result came back: never listed, so never read.
    committed.keep_only({shard.rsplit("/", 1)[1] for shard in shards})
    removed = remove_superseded(cfg.output, folder)
    if removed:
        log.info("removed %d superseded or unfinished shard folder(s): %s", len(removed), removed)
    return manifest


def _already_prepared(
    cfg: PrepareConfig, listing: str, specs: dict[str, dict], labels_digest: str
) -> dict[str, Any] | None:
    """The committed manifest when it holds exactly this dataset and all its shards exist."""
    current = read_manifest(cfg.output)
    # A manifest from before other corpora were read labelled RAVDESS names the one way.
    by_names = cfg.corpus == "ravdess" and not cfg.label_map
    if (
        current is None
        or current.get("labels_digest", labels_digest if by_names else None) != labels_digest
        or {g: s["hash"] for g, s in manifest_groups(current).items()}
        != {g: s["hash"] for g, s in specs.items()}
        or current.get("input_listing") != listing
        or current.get("require_labels") != cfg.require_labels
    ):
        return None
    missing = missing_shards(cfg.output, current)
    if missing:
        log.warning(
            "%s lists %d shard(s) that are missing (e.g. %s): preparing again",
            MANIFEST,
            len(missing),
            missing[0],
        )
        return None
    return current


def run(cfg: PrepareConfig) -> PrepareResult:
    """Prepare ``cfg.input`` into ``cfg.output`` (see the module docstring).

    Returns:
        A :class:`PrepareResult`; ``exit_code`` is 1 only when no usable clip remained.

    Raises:
        FileNotFoundError: the input does not exist or holds no audio file.
        knd.data.lease.OutputBusyError: another ``knd prepare`` is writing the output.
    """
    started = time.perf_counter()
    wanted = feature_hash(cfg.features)
    specs = group_specs(cfg.features)  # an unusable encoder: one error now, not one per file
    uris, paths, listing = list_inputs(cfg.input)
    if not uris:
        suffixes = ", ".join(storage.AUDIO_SUFFIXES)
        raise FileNotFoundError(f"no audio files ({suffixes}) under {cfg.input}")
    labelled = label_inputs(cfg, uris, paths)
    current = _already_prepared(cfg, listing, specs, labelled.digest)
    if current is not None:
        log.info(
            "nothing to do: %s already holds these %d files prepared with feature hash %s "
            "(%d rows, %d rejected)",
            cfg.output, len(uris), wanted, current["num_rows"], current.get("num_rejected", 0),
        )  # fmt: skip
        rows, rejected = current["num_rows"], current.get("num_rejected", 0)
        return PrepareResult(cfg.output, current, rows, rejected, skipped=True, exit_code=0)
    import ray

    from knd.runtime.cluster import init_ray

    # A job retried on a new cluster finds the lease of the run it replaces, held from another
    # host: it waits for that lease to go stale rather than failing the retry at once.
    with OutputLease(cfg.output, wait_s=LEASE_WAIT_S) as lease:
        ray_started = time.perf_counter()
        init_ray(cfg.ray)
        ray_start = time.perf_counter() - ray_started
        cpus = ray.cluster_resources().get("CPU", 1.0)
        log.info("preparing %d audio files from %s (feature hash %s)", len(uris), cfg.input, wanted)
        kept, rejected, manifest = prepare_files(
            cfg, uris, paths, listing, ray_map, cpus, lease, labelled
        )
    _log_outcome(cfg, len(uris), kept, rejected, manifest, time.perf_counter() - started, ray_start)
    reused = sum(1 for r in kept if r.get("reused"))
    if manifest is None:
        return PrepareResult(cfg.output, None, 0, len(rejected), False, 1, reused)
    return PrepareResult(cfg.output, manifest, len(kept), len(rejected), False, 0, reused)


def _log_outcome(
    cfg: PrepareConfig,
    num_files: int,
    kept: list[dict[str, Any]],
    rejected: list[tuple[str, str]],
    manifest: dict[str, Any] | None,
    elapsed: float,
    ray_start: float,
) -> None:
    """One line: what was prepared and rejected (by kind), or why nothing was committed."""
    kinds = Counter(reason_kind(r) for _, r in rejected)
    detail = ", ".join(f"{n} {k}" for k, n in kinds.most_common())
    summary = f"{len(rejected)} rejected" + (f" ({detail})" if detail else "")
    if manifest is None:
        log.error(
            "no usable clip among %d files: %s; nothing committed to %s (see %s)",
            num_files, summary, cfg.output, REJECTED,
        )  # fmt: skip
        return
    log.info(
        "prepared %d clips from %d files in %.1f s (Ray start-up %.1f s), %s; "
        "wrote %d shard(s) to %s",
        len(kept), num_files, elapsed, ray_start, summary, len(manifest["shards"]), cfg.output,
    )  # fmt: skip
