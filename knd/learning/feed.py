"""Train's data plane: the prepared feature shards as Ray Datasets and as the engine's batches.

The driver side (:func:`load_split`) reads the features, splits them by actor and shares the
training rows equally by rank, held in the object store by the driver when a share fits in
memory and materialised by Ray Data beyond that. The worker side (:func:`training_batches`,
:func:`validation_batches`) turns a rank's dataset shard into the engine's batches. The shard
format itself (schema, manifest, in-memory reads) is :mod:`knd.data.shards`'s, which never
imports Ray; this module is where Ray Data meets it.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import torch

from knd.config.schema import TrainConfig
from knd.data.datasets import (
    Data,
    UnionPart,
    checked_manifest,
    data_paths,
    data_text,
    load_features,
    read_manifest,
    union_parts,
)
from knd.data.label_sets import LabelSet, label_set
from knd.data.ravdess import ActorSplit, split_actors
from knd.data.shards import (
    expected_groups,
    manifest_actors,
    manifest_emotions,
    manifest_groups,
    shard_paths,
    to_numpy_batch,
)
from knd.data.speakers import default_split
from knd.learning.engine import ArrayBatches, ordered_batches
from knd.learning.speaker_norm import (
    add_moments,
    kept_rows,
    normalise_by_speaker,
    pooled_stats,
    speaker_moments,
    speaker_norm_meta,
    speaker_normalised,
)

IN_MEMORY_BYTES = 2 * 1024**3
"""A worker holds its share of the features in memory (on its GPU when it has one) up to this
size: indexing a tensor costs nothing next to iterating a Ray Dataset every epoch."""
STREAM_BATCH = 256


def read_features(
    path: Data,
    actors: Iterable[int] | None = None,
    expected_hash: str | None = None,
    groups: Iterable[str] | dict[str, str | None] | None = None,
    emotions: Iterable[int] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """A Ray Dataset over the committed shards of a prepared feature set, and its manifest.

    Args:
        path: the ``output`` of ``knd prepare`` (folder or ``s3://``), or several read as one
            (:mod:`knd.data.datasets`: ``actors`` and ``emotions`` in the union's numbering).
        actors: keep only these actors (None: all).
        emotions: keep only clips of these emotion codes (None: all).
        expected_hash: refuse features whose log-mel ``feature_hash`` differs.
        groups: feature groups to read besides the log-mel, as names or ``{name: hash}`` (a
            hash refuses the group when it differs).

    Returns:
        ``(dataset, manifest)``; each group is a float32 column named after it (the log-mel's
        ``logmel``: arrays ``[n_mels, n_frames]``).

    Raises:
        ValueError: no manifest, a missing group, or features made with other parameters.
    """
    paths = data_paths(path)
    if len(paths) > 1:
        return _read_union(paths, actors, expected_hash, groups, emotions)
    manifest, specs = checked_manifest(paths[0], expected_groups(groups, expected_hash))
    fs, files = shard_paths(paths[0], manifest)
    wanted = None if actors is None else tuple(int(a) for a in actors)
    codes = None if emotions is None else tuple(int(e) for e in emotions)
    ds = ray.data.read_parquet(files, filesystem=fs)
    ds = ds.map_batches(
        to_numpy_batch,
        batch_format="pyarrow",
        batch_size=None,
        fn_kwargs={"specs": specs, "actors": wanted, "emotions": codes},
    )
    return ds, manifest


def _read_union(paths, actors, expected_hash, groups, emotions) -> tuple[Any, dict[str, Any]]:
    """Several feature sets as one Ray Dataset, each part renumbered into the union."""
    merged = read_manifest(paths)
    if merged is None:
        raise ValueError(f"no prepared features at one of {paths} (run knd prepare first)")
    parts = []
    for part in union_parts(paths, merged, actors, emotions):
        ds, _ = read_features(part.path, part.actors, expected_hash, groups, part.emotions)
        parts.append(ds.map_batches(_renumbered, batch_format="numpy", fn_kwargs={"part": part}))
    if not parts:
        raise ValueError(f"{data_text(paths)}: no clips of these speakers and labels")
    return (parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]), merged


def _renumbered(batch: dict[str, np.ndarray], part: UnionPart) -> dict[str, np.ndarray]:
    batch["actor"], batch["emotion"] = part.renumber(batch["actor"], batch["emotion"])
    batch["label"] = batch["emotion"] - 1
    return batch


# ----------------------------------------------------------------------------------------------
# Inside a worker: a rank's shard as engine batches


def _shard_columns(shard: Any, columns: list[str]) -> dict[str, np.ndarray]:
    """Every row of a worker's dataset shard, as numpy columns (read once)."""
    parts: dict[str, list[np.ndarray]] = {c: [] for c in columns}
    for batch in shard.iter_batches(batch_size=1024, batch_format="numpy"):
        for c in columns:
            parts[c].append(np.asarray(batch[c]))
    return {c: np.concatenate(v) if v else np.zeros(0) for c, v in parts.items()}


class StreamedBatches:
    """A shard too large for memory, streamed from Ray Data every epoch (locally shuffled)."""

    def __init__(
        self,
        shard: Any,
        label_table: torch.Tensor,
        batch_size: int,
        rows: int,
        groups: tuple[str, ...],
    ):
        self.shard, self.label_table, self.groups = shard, label_table, groups
        self.batch_size, self.buffer = batch_size, min(rows, 4096)

    def epoch(self, epoch: int):
        device = self.label_table.device
        for batch in self.shard.iter_torch_batches(
            batch_size=self.batch_size, drop_last=True, local_shuffle_buffer_size=self.buffer
        ):
            labels = self.label_table[batch["emotion"].to(device).long()]
            yield {g: batch[g] for g in self.groups}, labels, batch["actor"]


def _inputs(cols: dict[str, np.ndarray], groups: tuple[str, ...], device) -> dict:
    """The model's input groups out of numpy shard columns, as tensors on ``device``."""
    return {g: torch.from_numpy(np.asarray(cols[g])).to(device) for g in groups}


def training_batches(
    shard: Any,
    label_table: torch.Tensor,
    groups: tuple[str, ...],
    batch: int,
    seed: int,
    *,
    in_memory: bool,
    rows: int,
) -> ArrayBatches | StreamedBatches:
    """This rank's training batches: from memory when the shard fits, else streamed.

    Args:
        shard: the rank's dataset shard (``rows`` rows).
        label_table: emotion id -> label id, on the rank's device (where batches go).
        groups: the feature groups a batch carries.
        batch: the rank's batch size.
        seed: shuffles the in-memory rows (by seed and epoch).
        in_memory: read the shard once and index it (else stream it every epoch).
        rows: rows of the shard.
    """
    if not in_memory:
        return StreamedBatches(shard, label_table, batch, rows, groups)
    cols = _shard_columns(shard, [*groups, "emotion", "actor"])
    device = label_table.device
    inputs = _inputs(cols, groups, device)
    labels = label_table[torch.from_numpy(cols["emotion"]).to(device).long()]
    return ArrayBatches(inputs, labels, batch, seed, extra=torch.from_numpy(cols["actor"]))


def rank_share(paths: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Rows of the (unsplit) validation set that this rank scores: a stable hash of the path."""
    return np.array([zlib.crc32(str(p).encode()) % world == rank for p in paths], dtype=bool)


def validation_batches(
    val: Any,
    label_table: torch.Tensor,
    groups: tuple[str, ...],
    ranks: tuple[int, int],
    *,
    in_memory: bool,
) -> Callable[[], Iterable[tuple[dict, torch.Tensor]]]:
    """A function giving this rank's share of the validation rows as engine batches.

    Every rank reads the validation set whole and keeps the rows :func:`rank_share` gives it
    (``ranks`` is ``(rank, world size)``), in memory or streamed.
    """
    (rank, world), device = ranks, label_table.device

    def share(batch: dict) -> tuple[dict, torch.Tensor] | None:
        mine = rank_share(batch["path"], rank, world)
        if not mine.any():
            return None
        inputs = _inputs({k: np.asarray(v)[mine] for k, v in batch.items()}, groups, device)
        labels = label_table[torch.from_numpy(np.asarray(batch["emotion"])[mine]).to(device).long()]
        return inputs, labels

    if in_memory:
        columns = [*groups, "emotion", "path"]
        kept = share(_shard_columns(val, columns))
        empty = ({g: torch.zeros(0) for g in groups}, torch.zeros(0))
        inputs, labels = kept if kept is not None else empty
        return lambda: ordered_batches(inputs, labels)

    def streamed():
        for batch in val.iter_batches(batch_size=STREAM_BATCH, batch_format="numpy"):
            kept = share(batch)
            if kept is not None:
                yield kept

    return streamed


# ----------------------------------------------------------------------------------------------
# On the driver: the features split by actor, shared equally by rank


@dataclass(frozen=True)
class SplitData:
    """The prepared features of one run, split by actor, then into equal shares per rank."""

    manifest: dict
    split: ActorSplit
    shards: list[Any]
    """One Ray Dataset per rank, with ``rows_per_worker`` rows each."""
    val: Any | None
    rows_per_worker: int
    in_memory: bool
    """Whether a worker's share fits in memory (it then reads it once, not every epoch)."""
    train_batches: Callable[[], Iterable[dict]]
    """Batches of every training row (``{column: array}``), for the normalisation statistics."""
    num_train_rows: int
    labels: LabelSet
    """The classes trained (``cfg.labels`` over the dataset's labels); clips of other labels
    are not read."""
    speaker_norm: dict | None = None
    """With ``normalise=speaker``: the checkpoint's record of it
    (:func:`~knd.learning.speaker_norm.speaker_norm_meta`)."""


def _row_bytes(manifest: dict, groups: tuple[str, ...]) -> int:
    return sum(
        int(np.prod(spec["shape"])) * np.dtype(spec["dtype"]).itemsize
        for group, spec in manifest_groups(manifest).items()
        if group in groups
    )


def _arrow_dataset(columns: dict[str, np.ndarray], rows: np.ndarray) -> Any:
    """``rows`` of numpy columns as a Ray Dataset of blocks put by this process (the driver)."""
    import pyarrow as pa
    from ray.data.extensions import ArrowTensorArray

    def arrow(values: np.ndarray) -> Any:
        return ArrowTensorArray.from_numpy(values) if values.ndim > 1 else pa.array(values)

    blocks = [
        pa.table({name: arrow(values[rows[i : i + 4096]]) for name, values in columns.items()})
        for i in range(0, len(rows), 4096)
    ]
    return ray.data.from_arrow(blocks)


def _held_by_driver(
    cfg: TrainConfig, manifest: dict, split: ActorSplit, labels: LabelSet
) -> SplitData:
    """Shares that fit in memory, read here and put into the object store by the driver.

    Blocks the driver puts live on its node and need no task to rebuild: a worker node lost
    mid-run takes none of them with it, and the restarted worker group reads them again. Blocks
    made by Ray Data's tasks (a materialised read) lived on the worker nodes, and rebuilding
    them needs a CPU that the restarted training workers hold: it waited for ever.
    """
    groups, world = cfg.model.inputs, cfg.train.num_workers
    codes = labels.kept_codes(manifest_emotions(manifest))
    prior = None

    def columns_of(actors: tuple[int, ...], extra: str) -> tuple[dict[str, np.ndarray], Any]:
        nonlocal prior
        if cfg.normalise == "speaker":  # every clip of each speaker gives its statistics
            table = load_features(cfg.data, actors=actors, groups=groups)
            table, prior = speaker_normalised(table, groups, prior, cfg.speaker_prior_clips)
            table = kept_rows(table, np.isin(table.emotion, codes))
        else:
            table = load_features(cfg.data, actors=actors, groups=groups, emotions=codes)
        inputs = table.inputs()
        named = {g: inputs[g] for g in groups}
        return named | {"emotion": table.emotion, extra: getattr(table, extra)}, table

    columns, table = columns_of(split.train, "actor")
    # Rank r takes every world-th clip in path order: equal, and the same on every run.
    order = np.argsort(table.path, kind="stable")
    per_rank = len(order) // world
    if per_rank < 1:
        raise ValueError(
            f"{len(order)} training clips (actors {list(split.train)}) cannot feed {world} "
            "workers: lower train.num_workers"
        )
    shards = [_arrow_dataset(columns, order[r::world][:per_rank]) for r in range(world)]
    val = None
    if split.val:
        val_columns, held = columns_of(split.val, "path")
        val = _arrow_dataset(val_columns, np.arange(len(held.path)))

    def train_batches() -> Iterable[dict]:
        for i in range(0, len(order), STREAM_BATCH):
            yield {name: values[i : i + STREAM_BATCH] for name, values in columns.items()}

    rows = len(table.path)
    norm = _speaker_norm_meta(cfg, prior)
    return SplitData(
        manifest, split, shards, val, per_rank, True, train_batches, rows, labels, norm
    )


def _speaker_norm_meta(cfg: TrainConfig, prior: dict | None) -> dict | None:
    if cfg.normalise != "speaker":
        return None
    return speaker_norm_meta(cfg.model.inputs, prior, cfg.speaker_prior_clips)


def _streamed(cfg: TrainConfig, manifest: dict, split: ActorSplit, labels: LabelSet) -> SplitData:
    """Shares too large for memory: materialised by Ray Data once, split equally, streamed."""
    groups, world = cfg.model.inputs, cfg.train.num_workers
    columns = [*groups, "emotion", "actor"]
    codes = labels.kept_codes(manifest_emotions(manifest))
    prior = None

    def rows_of(actors: tuple[int, ...], extra: tuple[str, ...] = ()) -> Any:
        nonlocal prior
        if cfg.normalise != "speaker":
            ds = read_features(cfg.data, actors=actors, groups=groups, emotions=codes)[0]
            return ds.select_columns([*columns, *extra]).materialize()
        ds = read_features(cfg.data, actors=actors, groups=groups)[0]
        ds = ds.select_columns([*columns, *extra]).materialize()
        moments: dict = {}  # one pass of per-speaker sums: the driver never holds features
        for batch in ds.iter_batches(batch_size=STREAM_BATCH, batch_format="numpy"):
            add_moments(moments, speaker_moments({g: batch[g] for g in groups}, batch["actor"]))
        prior = prior or pooled_stats(moments)
        by_speaker = _SpeakerBatches(groups, moments, prior, cfg.speaker_prior_clips, codes)
        return ds.map_batches(by_speaker, batch_format="numpy").materialize()

    train = rows_of(split.train)
    val = rows_of(split.val, ("path",)) if split.val else None
    shards = train.split(world, equal=True) if world > 1 else [train]
    rows = shards[0].count()
    batches = lambda: train.iter_batches(batch_size=STREAM_BATCH)  # noqa: E731
    norm = _speaker_norm_meta(cfg, prior)
    return SplitData(
        manifest, split, shards, val, rows, False, batches, train.count(), labels, norm
    )


@dataclass(frozen=True)
class _SpeakerBatches:
    """A Ray Data batch standardised by its speakers' statistics, then kept by label."""

    groups: tuple[str, ...]
    moments: dict
    prior: dict
    prior_clips: float
    codes: list[int]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        chosen = {g: batch[g] for g in self.groups}
        normed = normalise_by_speaker(
            chosen, batch["actor"], self.moments, self.prior, self.prior_clips
        )
        keep = np.isin(batch["emotion"], self.codes)
        return {name: values[keep] for name, values in (batch | normed).items()}


def load_split(cfg: TrainConfig) -> SplitData:
    """Read the features, split them by actor, and share the training rows equally by rank.

    Each rank keeps one fixed share rather than Ray Train's per-epoch streaming_split (3-5 s
    before each epoch's first batch on 2 cores, more than a small epoch's compute); it
    reshuffles its share every epoch, and DDP averages across shares.

    Raises:
        ValueError: no prepared features, or a split that does not fit the corpus.
    """
    manifest, _ = checked_manifest(cfg.data, expected_groups(cfg.model.inputs, None))
    test, val = default_split(manifest, cfg.split.test_speakers, cfg.split.val_speakers)
    split = split_actors(test, val, actors=manifest_actors(manifest))
    labels = label_set(cfg.labels, manifest_emotions(manifest))
    counts = manifest.get("rows_per_actor", {})
    num_train = sum(int(counts.get(str(a), 0)) for a in split.train)
    share_bytes = num_train // cfg.train.num_workers * _row_bytes(manifest, cfg.model.inputs)
    if share_bytes <= IN_MEMORY_BYTES:
        return _held_by_driver(cfg, manifest, split, labels)
    return _streamed(cfg, manifest, split, labels)
