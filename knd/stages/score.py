"""Batch emotion scoring of audio folders (``knd score``): plain Ray tasks on CPU, an actor pool on
GPU (``compute``).

::

    CPU (tasks):   paths (driver) ─▶ ray_map(score_task) ─────────────────────────────▶ driver
                                     read → decode → downmix → resample → trim → window →
                                     log-mel → model (cached per worker process) → mean
                                     over each file's windows (one row per file)

    GPU (actors):  paths (driver) ─▶ from_items ─▶ map_batches(featurize_batch) ─▶
                                     map_batches(Scorer): actor pool, model loaded once per
                                     actor, batched, bf16 ─▶ driver (mean over windows)

On CPU the tasks run on the worker processes Ray started with the cluster (prepare's tasks run
there too); a pool's actors would each start a new process. Each process loads the model once
and keeps it, keyed by the checkpoint's hash, and a few tasks per CPU are queued so a worker
never waits for the next (:func:`knd.runtime.tasks.ray_map`).

Paths, not bytes, go into the dataset: each task reads its own files, so audio bytes never cross the
object store (DESIGN.md, "Facts": shipping bytes ran at 0.53x a plain loop, paths at 1.73x). With
``compute=actors`` on CPU both steps ask for the same CPUs (:func:`stage_cpus`) and each actor
decodes and scores its own files (:class:`FileScorer`); on GPU decode tasks feed the GPU actors.

A file goes through exactly the path ``knd prepare`` takes (downmix, resample, trim, fit to
``clip_seconds``, log-mel, rounded to the stored feature dtype), so a clip scored here gets the
probabilities ``knd evaluate`` gives on its prepared features. Only a file still longer than one
clip after trimming is cut into overlapping windows (hop ``window_hop_seconds``) whose probabilities
are averaged. A file that cannot be scored becomes a row with its reason in ``error``: nothing
raises.

Results stream: per-file rows (a task's own; the pool's windows averaged by the driver once all
of a file's windows have arrived) are staged as whole chunk files beside the output
(:class:`StagedTable`), concatenated under the output's name in one step at the end, so driver
memory holds only the files in flight. The staging folder is named by what defines the rows
(checkpoint, input listing, options): a rerun of a killed run keeps the rows it staged and scores
only the other files.

Retries are bounded by the policy of prepare's tasks
(:func:`knd.runtime.tasks.retry_file_by_file`): a task whose worker died (a file that takes its
worker down, a lost node) or that failed as a whole is redone one file per task, and a file that
fails alone too becomes an error row; Ray itself retries no task. The actor pool has no per-call
retry options (deprecated in ``map_batches``, removed in Ray 2.64): an actor that dies is
restarted and Ray runs its task again; the rerun goes file by file, and a file in flight at a
second death becomes an error row (:func:`knd.runtime.tasks.bounded_rerun`, with an
:class:`knd.runtime.tasks.AttemptLedger` actor). A block that still fails is skipped
(``max_errored_blocks``); the driver scores its files once more, one file per task, and reports
those that fail again (the same policy).

Ray's C++ core logs once per actor that its "constructor arguments [are] in the object store and
max_restarts > 0": Ray Data hands every actor of a pool its context and function as object
references. Harmless here: the driver owns those objects until the pipeline ends, so a restarted
actor finds them (docs/guides/troubleshooting.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import logging
import math
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from knd.audio import features, waveform
from knd.config.schema import FeatureConfig, ScoreConfig
from knd.data import staging, storage
from knd.runtime.console import file_progress
from knd.runtime.tasks import (
    AttemptLedger,
    Failed,
    WorkerDied,
    bounded_rerun,
    failure_reason,
    one_torch_thread,
    ray_map,
    retry_file_by_file,
)

log = logging.getLogger(__name__)

FILES_PER_TASK = 16
"""Files per actor call: enough to amortise the per-batch cost of Ray's tasks and of the driver's
aggregation and staging (8 files cost the driver twice the CPU, taken from the actors on 2
cores), few enough to stream early and to lose little with a killed run."""

OUTPUT_SUFFIXES = (".parquet", ".csv")
MAX_FAILURES_SHOWN = 20


def featurize_batch(
    batch: dict[str, np.ndarray],
    params: FeatureConfig,
    hop_seconds: float,
    device: str = "cpu",
    ledger=None,
) -> dict[str, np.ndarray]:
    """Ray Data step: paths -> one row per window (or one error row per unusable file).

    Every file yields at least one row; a file that fails gets ``error`` set and zero features, so
    failures travel through the pipeline as data instead of exceptions. With ``ledger`` (an
    :class:`AttemptLedger` handle) a batch that Ray runs again after its worker died is bounded
    (:func:`knd.runtime.tasks.bounded_rerun`): a file that takes its worker down twice becomes an
    error row.
    """
    one_torch_thread()
    paths = [str(p) for p in batch["path"]]
    if ledger is None:
        return _featurize_paths(paths, params, hop_seconds, {}, device)
    return bounded_rerun(
        paths, ledger, lambda some, skip: _featurize_paths(some, params, hop_seconds, skip, device)
    )


def _decode_windows(path: str, fs, params: FeatureConfig, hop_seconds: float | None, device: str):
    """``(duration, error, windows)`` of one file; any failure is its ``error``, never raised."""
    try:
        samples, rate = waveform.decode_audio(storage.read_bytes(path, fs))
        wins = features.file_windows(samples, rate, params, hop_seconds, device)
        return len(samples) / float(rate), "", wins
    except Exception as e:  # noqa: BLE001 - any failure is this file's, never the job's
        return math.nan, failure_reason(e), []


def _featurize_paths(
    paths: list[str],
    params: FeatureConfig,
    hop_seconds: float | None,
    skip: dict[str, str],
    device: str = "cpu",
) -> dict[str, np.ndarray]:
    """The rows of :func:`featurize_batch`; a file of ``skip`` is not read: its row carries the
    reason ``skip`` gives (``hop_seconds`` None: one clip per file, as prepare makes it)."""
    specs = features.group_specs(params)
    rows: dict[str, list] = {k: [] for k in ("path", "window", "n_windows", "start", "end")}
    rows.update(duration=[], error=[], **{group: [] for group in specs})
    fs = None
    for path in paths:
        duration, error, wins = math.nan, skip.get(path, ""), []
        if not error:
            if fs is None:  # one filesystem (one S3 connection pool) per batch, not per file
                fs, _ = storage.resolve(path)
            duration, error, wins = _decode_windows(path, fs, params, hop_seconds, device)
        if error:
            empty = {g: np.zeros(spec["shape"], dtype=np.float32) for g, spec in specs.items()}
            wins = [features.Window(math.nan, math.nan, empty)]
        for i, win in enumerate(wins):
            rows["path"].append(path)
            rows["window"].append(i)
            rows["n_windows"].append(len(wins))
            rows["start"].append(win.start)
            rows["end"].append(win.end)
            rows["duration"].append(duration)
            rows["error"].append(error)
            # Rounded to the stored dtype: the model was trained on features rounded this way.
            for group, spec in specs.items():
                rows[group].append(win.groups[group].astype(spec["dtype"]))
    out = {k: np.asarray(v) for k, v in rows.items() if k not in specs}
    out["path"] = np.asarray(rows["path"], dtype=object)
    out["error"] = np.asarray(rows["error"], dtype=object)
    for group in specs:
        out[group] = np.stack(rows[group])
    return out


@functools.lru_cache(maxsize=2)
def _cached_model(model_key: str, checkpoint: str, device: str):
    """``(model, meta)`` loaded once per worker process for each checkpoint hash and device: the
    tasks of one job that land on a worker reuse what its first task loaded."""
    from knd.learning.checkpoint import load_model

    return load_model(checkpoint, device=device)


class Scorer:
    """Ray Data callable class: loads the model once per actor, then scores batches of windows.

    With ``model_key`` (the checkpoint's :func:`knd.learning.checkpoint.checkpoint_hash`) the
    model comes from the worker process's cache, so a task can build a Scorer per batch.
    """

    def __init__(
        self,
        checkpoint: str,
        use_gpu: bool,
        speakers: SpeakerStats | None = None,
        model_key: str = "",
    ):
        import torch

        from knd.learning.checkpoint import load_model
        from knd.learning.inference import norm_stats, norm_tensors

        self.device = torch.device("cuda" if use_gpu else "cpu")
        if model_key:
            self.model, meta = _cached_model(model_key, checkpoint, self.device.type)
        else:
            self.model, meta = load_model(checkpoint, device=self.device)
        self.norm = norm_tensors(norm_stats(meta), self.device)
        self.num_classes = len(meta["labels"])
        self.speakers = speakers

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from knd.learning.inference import probabilities

        values = {g: batch.pop(g) for g in self.norm}
        if self.speakers is not None:  # each window by its speaker's statistics first
            values = self.speakers.normalise(values, batch["path"])
        ok = np.asarray(batch["error"] == "", dtype=bool)
        probs = np.full((len(ok), self.num_classes), np.nan, dtype=np.float32)
        if ok.any():
            inputs = {
                g: torch.from_numpy(np.ascontiguousarray(v[ok])).to(self.device)
                for g, v in values.items()
            }
            probs[ok] = probabilities(self.model, inputs, self.norm).cpu().numpy()
        batch["probs"] = probs
        return batch


class FileScorer(Scorer):
    """Actor: paths -> windows -> probabilities, in one process (model and encoder loaded once).

    One actor step rather than a decode step that Ray Data would have to fuse into the actors:
    each actor reads its own files, so no features cross the object store. On a GPU (a
    checkpoint that reads a pretrained encoder's embeddings) the encoder runs there too.
    """

    def __init__(
        self,
        checkpoint: str,
        params: FeatureConfig,
        hop_seconds: float,
        batch_size: int,
        use_gpu: bool = False,
        ledger=None,
        speakers: SpeakerStats | None = None,
        model_key: str = "",
    ):
        super().__init__(checkpoint, use_gpu=use_gpu, speakers=speakers, model_key=model_key)
        self.params, self.hop_seconds, self.batch_size = params, hop_seconds, batch_size
        self.ledger = ledger

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        windows = featurize_batch(
            batch, self.params, self.hop_seconds, self.device.type, self.ledger
        )
        n = len(windows["path"])
        parts = [
            Scorer.__call__(self, {k: v[i : i + self.batch_size] for k, v in windows.items()})
            for i in range(0, n, self.batch_size)
        ]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def score_task(
    paths: list[str], labels: list[str], per_window: bool, **scorer_args
) -> pd.DataFrame:
    """Plain Ray task: the output rows of whole files, scored on whichever worker runs it.

    Tasks run on the worker processes Ray already started, where a pool's actors each start a
    new one; ``scorer_args`` carries a ``model_key``, so the model is loaded once per worker
    process, not once per task. A task holds all of its files' windows, so it averages them
    itself and only per-file rows travel back to the driver.
    """
    windows = FileScorer(**scorer_args)({"path": np.asarray(paths, dtype=object)})
    return aggregate(windows_frame(windows), labels, per_window)


@dataclass(frozen=True)
class SpeakerStats:
    """Each speaker's statistics for a checkpoint trained with ``normalise=speaker``: what a
    scoring actor standardises its windows by (small: a mean and std per group and speaker)."""

    speaker_from: str
    table: dict
    """:func:`knd.learning.speaker_norm.speaker_table`."""
    files: dict[str, str] | None = None
    """``speaker_from=table``: ``{path: speaker}`` of the files the label table names."""

    def normalise(self, values: dict[str, np.ndarray], paths) -> dict[str, np.ndarray]:
        from knd.learning.speaker_norm import normalise_rows, speaker_key

        keys = [speaker_key(p, self.speaker_from, self.files) for p in paths]
        return normalise_rows(values, keys, self.table)

    def described(self, paths) -> list[str]:
        """The output's ``speaker_stats`` column: whose statistics standardised each file."""
        from knd.learning.speaker_norm import speaker_key

        if self.speaker_from == "none":
            return ["pooled"] * len(paths)
        if self.speaker_from == "file":
            return ["file"] * len(paths)
        if self.speaker_from == "table":
            keys = [speaker_key(p, "table", self.files) for p in paths]
            return [f"table:{key}" if key else "pooled" for key in keys]
        return [f"folder:{speaker_key(p, 'folder').rsplit('/', 1)[-1]}" for p in paths]


def check_speaker_from(cfg: ScoreConfig, meta: dict) -> dict | None:
    """The checkpoint's ``speaker_norm`` record (None: trained with ``normalise=global``).

    Raises:
        ValueError: ``speaker_from`` names a mode the checkpoint was not trained for, or is unset
            for a checkpoint trained per speaker.
    """
    record, mode = meta.get("speaker_norm"), cfg.speaker_from
    if not record and mode in ("folder", "table", "file"):
        raise ValueError(
            f"speaker_from={mode}: {cfg.checkpoint} was trained with normalise=global, so it "
            "takes no speaker statistics (leave speaker_from unset)"
        )
    if record and mode == "table" and not cfg.speaker_table:
        raise ValueError("speaker_from=table needs speaker_table=<label table naming speakers>")
    if record and mode is None:
        raise ValueError(
            f"{cfg.checkpoint} was trained with normalise=speaker: say who speaks with "
            "speaker_from=folder (a folder per speaker) or file (each file alone), or "
            "speaker_from=none to use the training speakers' pooled statistics instead"
        )
    return record or None


def speaker_stats(
    cfg: ScoreConfig, meta: dict, paths: list[str], params: FeatureConfig, cpus: float
) -> SpeakerStats | None:
    """The speakers' statistics ``cfg.speaker_from`` asks for (None: a globally normalised
    checkpoint). A first pass over the files gathers each speaker's sums (Ray tasks; the driver
    holds sums, never features); ``none`` needs no pass."""
    from knd.learning.speaker_norm import speaker_table

    record, mode = check_speaker_from(cfg, meta), cfg.speaker_from
    if record is None:
        return None
    files = _table_speakers(cfg, paths) if mode == "table" else None
    moments = {} if mode == "none" else _speaker_moments(paths, cfg, params, record, cpus, files)
    if mode == "none":
        log.info("speaker_from=none: every file standardised by the training speakers' "
                 "pooled statistics, not its own speaker's")  # fmt: skip
    else:
        log.info("speaker_from=%s: statistics of %d speakers", mode, len(moments))
    return SpeakerStats(mode, speaker_table(moments, record), files)


def _table_speakers(cfg: ScoreConfig, paths: list[str]) -> dict[str, str]:
    """``{path: speaker}`` from ``cfg.speaker_table``; files it has no row for are counted."""
    from knd.data.corpora import read_label_table, speakers_by_file

    files = speakers_by_file(read_label_table(str(cfg.speaker_table)), str(cfg.input), paths)
    if len(files) < len(paths):
        log.warning("%d of %d files have no row in %s: scored with the pooled statistics",
                    len(paths) - len(files), len(paths), cfg.speaker_table)  # fmt: skip
    return files


def _speaker_moments(
    paths, cfg: ScoreConfig, params, record: dict, cpus: float, files: dict | None = None
) -> dict:
    """``{speaker key: {group: Moments}}`` of every window of ``paths``, by Ray tasks."""
    import ray

    from knd.learning.speaker_norm import add_moments

    task = ray.remote(num_cpus=cpus)(_file_moments)
    units = [paths[i : i + FILES_PER_TASK] for i in range(0, len(paths), FILES_PER_TASK)]
    # A folder's files count as prepare makes them, one clip each (what training counted); a
    # file alone, by its windows.
    hop = cfg.window_hop_seconds if cfg.speaker_from == "file" else None
    refs = [
        task.remote(unit, params, hop, record["groups"], cfg.speaker_from, _subset(files, unit))
        for unit in units
    ]
    moments: dict = {}
    for part in ray.get(refs):
        add_moments(moments, part)
    return moments


def _subset(files: dict | None, paths: list[str]) -> dict | None:
    return None if files is None else {p: files[p] for p in paths if p in files}


def _file_moments(
    paths, params, hop_seconds: float | None, groups, speaker_from: str, files=None
) -> dict:
    """The moments of some files' windows by speaker (files that fail count for nobody)."""
    from knd.learning.speaker_norm import speaker_key, speaker_moments

    one_torch_thread()
    rows = _featurize_paths(paths, params, hop_seconds, {})
    ok = rows["error"] == ""
    keys = [speaker_key(p, speaker_from, files) for p in rows["path"][ok]]
    keys = np.asarray(keys, dtype=object)
    if not len(keys):
        return {}
    names, codes = np.unique(keys, return_inverse=True)
    by_code = speaker_moments({g: rows[g][ok] for g in groups}, codes)
    return {str(names[code]): m for code, m in by_code.items()}


@dataclass
class ScoreResult:
    """What ``knd score`` did (the rows themselves are in ``output``)."""

    output: str
    num_files: int
    num_rows: int
    failed: int
    audio_hours: float
    seconds: float
    files_per_second: float
    realtime_factor: float
    ray_start_seconds: float
    exit_code: int
    first_rows_seconds: float = math.nan
    """From the pipeline's start to the first scored rows: actor start-up (torch import, model
    load) and the first batch; ``seconds`` minus this is the steady state."""
    resumed: int = 0
    """Files an interrupted run had scored (staged beside the output), not scored again."""


def stage_cpus(total_cpus: float, num_actors: int, use_gpu: bool) -> float:
    """Logical CPUs asked by each decode task and each inference actor.

    On CPU both stages ask for the same share, ``min(1, total / num_actors)``: each actor reads,
    decodes and scores its own files (:class:`FileScorer`), no features cross the object store,
    and the actors together hold every CPU. Asking less for the actors (to leave CPUs to separate
    decode tasks) left one decode task at a time on two cores. On GPU the stages stay apart:
    decode tasks on the CPUs feed one actor per GPU.
    """
    if use_gpu:
        return 1.0
    return float(min(1.0, max(0.1, total_cpus / max(1, num_actors))))


def scoring_params(meta: dict, checkpoint: str, encoder: str = "") -> FeatureConfig:
    """The feature parameters that score a checkpoint: exactly the groups its model was trained
    on, computed by prepare's own front end (with ``encoder`` in place of the recorded encoder
    folder when given).

    Raises:
        ValueError: this knd would compute a group differently from the features it trained on
            (another version of an algorithm, or an encoder whose files differ).
    """
    from knd.learning.checkpoint import model_groups

    trained_on = model_groups(meta)
    stored = features.stored_params(meta["feature_params"])
    params = dataclasses.replace(
        stored, groups=tuple(trained_on), encoder=encoder or stored.encoder
    )
    features.check_computes(trained_on, params, checkpoint)
    return params


def run(cfg: ScoreConfig) -> ScoreResult:
    """Score every audio file under ``cfg.input`` and write one row per file (or window).

    Raises:
        ValueError: an unsupported output suffix, or no audio file under the input.
        FileNotFoundError: the input or the checkpoint does not exist.
    """
    import ray

    from knd.learning.checkpoint import load_meta
    from knd.runtime.cluster import init_ray

    output = str(cfg.output)
    if not output.lower().endswith(OUTPUT_SUFFIXES):
        raise ValueError(f"output must end in .parquet or .csv: {output}")
    meta = load_meta(cfg.checkpoint)
    check_speaker_from(cfg, meta)
    params = scoring_params(meta, cfg.checkpoint, cfg.encoder)
    paths = storage.list_files(cfg.input, storage.AUDIO_SUFFIXES)
    if not paths:
        raise ValueError(f"no audio files ({', '.join(storage.AUDIO_SUFFIXES)}) under {cfg.input}")

    started = time.perf_counter()
    init_ray(cfg.ray)
    ray_start = time.perf_counter() - started
    log.info("scoring %d files under %s with %s", len(paths), cfg.input, cfg.checkpoint)

    started = time.perf_counter()
    cpus = stage_cpus(ray.cluster_resources().get("CPU", 1.0), cfg.num_actors, cfg.use_gpu)
    speakers = speaker_stats(cfg, meta, paths, params, cpus)
    tally = _score_all(cfg, meta, paths, params, cpus, speakers)
    seconds = time.perf_counter() - started

    result = ScoreResult(
        output=output,
        num_files=len(paths),
        num_rows=tally.rows,
        failed=len(tally.failures),
        audio_hours=tally.audio_seconds / 3600.0,
        seconds=seconds,
        files_per_second=len(paths) / seconds,
        realtime_factor=tally.audio_seconds / seconds,
        ray_start_seconds=ray_start,
        exit_code=1 if cfg.strict and tally.failures else 0,
        first_rows_seconds=(tally.first_rows - started) if tally.first_rows else math.nan,
        resumed=tally.resumed,
    )
    _print_summary(result, tally.failures)
    return result


def _score_all(
    cfg: ScoreConfig, meta: dict, paths: list[str], params, cpus: float, speakers=None
) -> _Tally:
    """Score ``paths`` into the staged output and commit it; files an interrupted run staged are
    kept, and a file lost with its worker is scored once more alone, then reported
    (:func:`knd.runtime.tasks.retry_file_by_file`)."""
    from knd.learning.checkpoint import checkpoint_hash

    tally, labels = _Tally(), list(meta["labels"])
    # A chunk per batch of every actor: a killed run loses at most one batch per actor.
    chunk_files = FILES_PER_TASK * cfg.num_actors
    # The model's own bytes: a checkpoint rewritten in place is neither resumed from rows nor
    # served from a worker's cache that its predecessor left.
    model_key = checkpoint_hash(cfg.checkpoint)
    key = staging_key(cfg, meta, paths, speakers.files if speakers else None, model_key)
    with StagedTable(str(cfg.output), key, chunk_files) as sink:
        todo = _resume(sink, tally, paths)
        units = [todo[i : i + FILES_PER_TASK] for i in range(0, len(todo), FILES_PER_TASK)]
        if uses_actors(cfg):
            attempt = lambda some: _score_units(some, cfg, params, labels, cpus, speakers)  # noqa: E731
        else:
            attempt = _task_attempt(cfg, params, labels, speakers, model_key)
        for files, out in retry_file_by_file(attempt, units, lambda lost: [[p] for p in lost]):
            if isinstance(out, Failed):
                out = _failed_rows(files, out.reason, labels, cfg.per_window)
            if speakers is not None:
                out["speaker_stats"] = speakers.described(out["path"])
            sink.write(out, tally)
    return tally


def staging_key(
    cfg: ScoreConfig,
    meta: dict,
    paths: list[str],
    speaker_files: dict | None = None,
    model_key: str = "",
) -> str:
    """A hash of what defines the output's rows: the checkpoint (where, its meta and its weights'
    hash ``model_key``), the input listing and the options that change a row (the encoder folder
    among them; a speaker table's speakers, not just its name). A rerun with the same key
    resumes."""
    return staging.staging_key(
        {
            "checkpoint": storage.absolute(str(cfg.checkpoint)),
            "meta": json.dumps(meta, sort_keys=True, default=str),
            "model": model_key,
            "paths": paths,
            "per_window": cfg.per_window,
            "window_hop_seconds": cfg.window_hop_seconds,
            "encoder": cfg.encoder,
            "speaker_from": cfg.speaker_from,
            "speaker_files": sorted((speaker_files or {}).items()),
        }
    )


def _resume(sink: StagedTable, tally: _Tally, paths: list[str]) -> list[str]:
    """The paths still to score: those an interrupted run staged are counted, not scored."""
    staged = sink.staged_rows()
    if not len(staged):
        return paths
    tally.add(staged, timed=False)
    done = set(staged["path"])
    tally.resumed = len(done)
    todo = [p for p in paths if p not in done]
    log.info(
        "resuming: %d file(s) already scored in %s; scoring the other %d",
        len(done), sink.staging.uri, len(todo),
    )  # fmt: skip
    return todo


@dataclass
class _Tally:
    """What the written rows add up to: counts, scored audio, the first failures."""

    rows: int = 0
    audio_seconds: float = 0.0
    failures: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    first_rows: float = 0.0
    resumed: int = 0
    """Files whose rows an interrupted run had staged."""

    def add(self, table: pd.DataFrame, timed: bool = True) -> None:
        if timed:
            self.first_rows = self.first_rows or time.perf_counter()
        self.rows += len(table)
        files = table.drop_duplicates("path")
        ok = files["error"] == ""
        self.audio_seconds += float(files.loc[ok, "duration"].sum())
        self.failures.extend(files.loc[~ok, ["path", "error"]].itertuples(index=False, name=None))


def _file_scorer_args(cfg: ScoreConfig, params, speakers) -> dict:
    """The :class:`FileScorer` arguments both paths share (the tasks' and the pool's)."""
    return {
        "checkpoint": cfg.checkpoint,
        "params": params,
        "hop_seconds": cfg.window_hop_seconds,
        "batch_size": cfg.batch_size,
        "use_gpu": cfg.use_gpu,
        "speakers": speakers,
    }


def _task_attempt(cfg: ScoreConfig, params, labels, speakers, model_key: str):
    """The attempt of :func:`_score_all` that scores units of files as plain Ray tasks on the
    warm workers, in input order (:func:`knd.runtime.tasks.ray_map`): ``(files, their rows)``,
    or ``(files, the exception)`` of a task that failed or whose worker died."""
    consts = {
        **_file_scorer_args(cfg, params, speakers),
        "labels": labels,
        "per_window": cfg.per_window,
        "model_key": model_key,  # each worker process loads the model once
    }
    options = {"num_gpus": 1} if cfg.use_gpu else {}

    def attempt(units: list[list[str]]) -> Iterator[tuple[list[str], Any]]:
        tasks = [{"paths": unit} for unit in units]
        with file_progress(sum(map(len, units)), "score") as bar:
            for task, out in ray_map(score_task, tasks, consts, in_order=True, **options):
                bar.update(len(task["paths"]))
                yield task["paths"], out

    return attempt


def _score_units(
    units: list[list[str]], cfg: ScoreConfig, params, labels, cpus: float, speakers=None
) -> Iterator[tuple[list[str], pd.DataFrame | WorkerDied]]:
    """One pipeline over the files of ``units`` (a task per unit): ``(files, their rows)`` as
    files complete, then ``(files, WorkerDied())`` for the files whose rows never came back."""
    paths = [path for unit in units for path in unit]
    seen: set[str] = set()
    per_task = max(map(len, units))
    for table in _scored_files(paths, cfg, params, labels, cpus, per_task, speakers):
        files = list(dict.fromkeys(table["path"]))
        seen.update(files)
        yield files, table
    lost = [p for p in paths if p not in seen]
    if lost:
        yield lost, WorkerDied()


def _scored_files(
    paths: list[str],
    cfg: ScoreConfig,
    params,
    labels,
    cpus: float,
    files_per_task: int,
    speakers: SpeakerStats | None = None,
) -> Iterator[pd.DataFrame]:
    """Output rows of completed files, in input order, as the pipeline delivers them.

    Retries are bounded without Ray's retry options (passing them to ``map_batches`` is
    deprecated, and removed in Ray 2.64): Ray Data restarts a dead actor and runs its task again,
    and :func:`knd.runtime.tasks.bounded_rerun` makes each rerun progress (file by file, a file
    that killed two workers reported). A block that still fails is skipped
    (``max_errored_blocks``) and its files are scored again one per task by the caller.
    """
    import ray
    from ray.data import DataContext
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ctx = DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.max_errored_blocks)
    # In input order, so the streamed output keeps the listing's path order.
    ctx.execution_options.preserve_order = True
    ctx.max_errored_blocks = -1
    # On the driver's node: it lives as long as the job, whichever worker node is lost.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    ledger = ray.remote(AttemptLedger).options(num_cpus=0, scheduling_strategy=here).remote()
    try:
        ds = _pipeline(paths, cfg, params, cpus, files_per_task, ledger, speakers)
        yield from _complete_files(_batches_with_progress(ds, len(paths)), labels, cfg.per_window)
    finally:
        ctx.execution_options.preserve_order, ctx.max_errored_blocks = saved
        ray.kill(ledger)


def uses_actors(cfg: ScoreConfig) -> bool:
    """Whether the model runs in an actor pool (``compute=actors``, or ``auto`` on GPU: one model
    held per GPU) rather than in tasks on the warm workers (``auto`` on CPU)."""
    return cfg.compute == "actors" or (cfg.compute == "auto" and cfg.use_gpu)


def _pipeline(
    paths: list[str], cfg: ScoreConfig, params, cpus: float, files_per_task: int, ledger, speakers
):
    """The Ray Dataset of scored windows: paths -> (decode tasks ->) scoring actors."""
    import ray

    ds = ray.data.from_items(
        [{"path": p} for p in paths],
        override_num_blocks=max(1, math.ceil(len(paths) / files_per_task)),
    )
    pool = ray.data.ActorPoolStrategy(size=cfg.num_actors)
    scorer_args = {**_file_scorer_args(cfg, params, speakers), "ledger": ledger}
    if cfg.use_gpu and "embedding" not in params.groups:  # CPU decode feeds GPU actors
        ds = ds.map_batches(
            featurize_batch,
            fn_kwargs={"params": params, "hop_seconds": cfg.window_hop_seconds, "ledger": ledger},
            batch_size=files_per_task,
            batch_format="numpy",
            num_cpus=1.0,
        )
        return ds.map_batches(
            Scorer,
            fn_constructor_kwargs={
                "checkpoint": cfg.checkpoint,
                "use_gpu": True,
                "speakers": speakers,
            },
            batch_size=cfg.batch_size,
            batch_format="numpy",
            compute=pool,
            num_cpus=cpus,
            num_gpus=1,
        )
    # Each actor reads, decodes (runs the encoder) and scores its own files: no features in transit.
    return ds.map_batches(
        FileScorer,
        fn_constructor_kwargs=scorer_args,
        batch_size=files_per_task,
        batch_format="numpy",
        compute=pool,
        num_cpus=cpus,
        num_gpus=1 if cfg.use_gpu else 0,
    )


def _batches_with_progress(ds, num_files: int) -> Iterator[pd.DataFrame]:
    """The scored windows as DataFrames, with progress over files (a bar only on a terminal)."""
    with file_progress(num_files, "score") as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            # A file's windows may land in several batches; each counts for its share.
            bar.update(float((1.0 / batch["n_windows"]).sum()))
            yield windows_frame(batch)


def windows_frame(windows: dict[str, np.ndarray]) -> pd.DataFrame:
    """Scored windows (:class:`Scorer`'s columns) as a DataFrame, one ``probs`` array a row."""
    probs = windows.pop("probs")
    frame = pd.DataFrame(windows)
    frame["probs"] = list(probs)
    return frame


def _complete_files(
    parts: Iterator[pd.DataFrame], labels: list[str], per_window: bool
) -> Iterator[pd.DataFrame]:
    """Aggregate each file once all its windows have arrived; hold only files in flight."""
    pending: pd.DataFrame | None = None
    for part in parts:
        pending = part if pending is None else pd.concat([pending, part], ignore_index=True)
        counts = pending.groupby("path")["window"].transform("size")
        done = (counts == pending["n_windows"]).to_numpy()
        if done.any():
            yield aggregate(pending[done], labels, per_window)
            pending = pending[~done].reset_index(drop=True)
    # Files still pending lost some windows with a failed block: not yielded, so the caller
    # scores them again (one per task) instead of averaging part of a file.


def _failed_rows(
    paths: list[str], reason: str, labels: list[str], per_window: bool
) -> pd.DataFrame:
    """The output rows of files that failed before any window was scored."""
    windows = pd.DataFrame(
        {
            "path": paths,
            "window": 0,
            "n_windows": 1,
            "start": math.nan,
            "end": math.nan,
            "duration": math.nan,
            "error": reason,
        }
    )
    windows["probs"] = [np.full(len(labels), np.nan, dtype=np.float32)] * len(paths)
    return aggregate(windows, labels, per_window)


class StagedTable:
    """An output table staged as whole chunk files beside the output, committed in one step.

    The chunks are the parts of a :class:`knd.data.staging.Staging` folder named by ``key`` (a
    hash of what defines the rows), each written atomically once ``chunk_files`` files are
    buffered, so a killed run leaves only whole chunks. A rerun with the same key finds them
    (:meth:`staged_rows`) and scores only the other files. The commit concatenates the chunks in
    the order they were written into the output (:meth:`knd.data.staging.Staging.commit_file`):
    a reader sees the old output or the whole new one, never a part. On error the buffered rows
    are staged, not lost.
    """

    def __init__(self, output: str, key: str, chunk_files: int = FILES_PER_TASK):
        self.output = storage.absolute(output)
        self.csv = output.lower().endswith(".csv")
        head, name = self.output.rsplit("/", 1)
        self.staging = staging.Staging(f"{head}/.{name}.staged-{key[:16]}")
        self.chunk_files = max(1, chunk_files)
        self.buffer: list[pd.DataFrame] = []
        self.buffered = 0
        self.token = uuid.uuid4().hex[:6]
        self.next_chunk = 0

    def __enter__(self) -> StagedTable:
        return self

    def _chunks(self) -> list[str]:
        """The staged chunks' names, in the order they were written."""
        return self.staging.finished(prefix="chunk-")

    def _read(self, data: bytes, columns: list[str] | None = None) -> pd.DataFrame:
        if self.csv:
            na = {"duration": ["", "nan", "NaN"]}
            return pd.read_csv(
                io.BytesIO(data), usecols=columns, keep_default_na=False, na_values=na
            )
        import pyarrow.parquet as pq

        return pq.read_table(io.BytesIO(data), columns=columns).to_pandas()

    def staged_rows(self) -> pd.DataFrame:
        """``path, error, duration`` of the rows an interrupted run staged (one chunk in memory
        at a time); an unreadable chunk is discarded, so its files are scored again."""
        chunks = self._chunks()
        columns = ["path", "error", "duration"]
        frames = [
            frame
            for _, frame in self.staging.read_finished(chunks, lambda d: self._read(d, columns))
        ]
        self.next_chunk = len(chunks)
        if not frames:
            return pd.DataFrame({"path": [], "error": [], "duration": []})
        staged = pd.concat(frames, ignore_index=True)
        staged["error"] = staged["error"].fillna("").astype(str)
        return staged

    def write(self, table: pd.DataFrame, tally: _Tally | None = None) -> None:
        """Append the rows of whole files (staged once ``chunk_files`` files are buffered)."""
        if tally is not None:
            tally.add(table)
        self.buffer.append(table)
        self.buffered += table["path"].nunique()
        if self.buffered >= self.chunk_files:
            self.flush()

    def flush(self) -> None:
        """Stage the buffered rows as one whole chunk file."""
        if not self.buffer:
            return
        table = pd.concat(self.buffer, ignore_index=True)
        name = f"chunk-{self.next_chunk:06d}-{self.token}.{'csv' if self.csv else 'parquet'}"
        if self.csv:
            data = table.to_csv(index=False).encode()
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            sink = io.BytesIO()
            pq.write_table(pa.Table.from_pandas(table, preserve_index=False), sink)
            data = sink.getvalue()
        self.staging.write(name, data)
        self.buffer, self.buffered, self.next_chunk = [], 0, self.next_chunk + 1

    def commit(self) -> None:
        """Concatenate the chunks into the output in one step, then drop the staging folder."""
        self.flush()
        self.staging.commit_file(self.output, self._concatenate)

    def _concatenate(self, stream) -> None:
        """Every chunk into ``stream``: CSV bodies after the first header; Parquet row groups
        cast to the first chunk's schema."""
        import pyarrow.parquet as pq

        writer = None
        for i, chunk in enumerate(self._chunks()):
            data = storage.read_bytes(self.staging.uri_of(chunk))
            if self.csv:
                stream.write(data if i == 0 else data[data.index(b"\n") + 1 :])
                continue
            rows = pq.read_table(io.BytesIO(data))
            if writer is None:
                writer = pq.ParquetWriter(stream, rows.schema)
            writer.write_table(rows.cast(writer.schema))
        if writer is not None:
            writer.close()

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            self.commit()
            return
        with contextlib.suppress(Exception):  # the original error is the one to report
            self.flush()


def aggregate(windows: pd.DataFrame, labels: list[str], per_window: bool) -> pd.DataFrame:
    """Window rows -> the output table (per file: mean probabilities over the file's windows).

    Args:
        windows: columns ``path, window, n_windows, start, end, duration, error, probs``.
        labels: class names in the model's output order.
        per_window: keep one row per window (with ``window, start, end``) instead of per file.

    Returns:
        Columns ``path, [window, start, end,] label, confidence, p_<class>..., duration, error``,
        sorted by path (and window).
    """
    windows = windows.sort_values(["path", "window"], kind="stable").reset_index(drop=True)
    probs = np.stack(windows["probs"].to_numpy()).astype(np.float64)
    if per_window:
        table = windows[["path", "window", "start", "end"]].copy()
    else:
        codes, uniques = pd.factorize(windows["path"], sort=True)
        summed = np.zeros((len(uniques), probs.shape[1]))
        np.add.at(summed, codes, probs)
        probs = summed / np.bincount(codes)[:, None]
        windows = windows.drop_duplicates("path").reset_index(drop=True)
        table = windows[["path"]].copy()
    errors = windows["error"].astype(str).to_numpy().copy()
    # A model that returns NaN/inf (e.g. a checkpoint with non-finite weights) fails the file.
    errors[(errors == "") & ~np.isfinite(probs).all(axis=1)] = "non-finite probabilities"
    ok = errors == ""
    best = np.where(ok, np.nan_to_num(probs, nan=-1.0).argmax(axis=1), 0)
    table["label"] = np.where(ok, np.asarray(labels, dtype=object)[best], "")
    table["confidence"] = np.where(ok, probs.max(axis=1, initial=-np.inf), np.nan)
    for i, name in enumerate(labels):
        table[f"p_{name}"] = probs[:, i]
    table["duration"] = windows["duration"].to_numpy(dtype=np.float64)
    table["error"] = errors
    return table.reset_index(drop=True)


def _print_summary(result: ScoreResult, failures: list[tuple[str, str]]) -> None:
    for path, error in failures[:MAX_FAILURES_SHOWN]:
        print(f"failed {path}: {error}", file=sys.stderr)
    if result.failed > MAX_FAILURES_SHOWN:
        print(f"... and {result.failed - MAX_FAILURES_SHOWN} more failures", file=sys.stderr)
    print(
        f"scored {result.num_files - result.failed} files, {result.failed} failed; "
        f"{result.audio_hours:.3f} h of audio in {result.seconds:.1f} s "
        f"({result.files_per_second:.1f} files/s, real-time factor {result.realtime_factor:.0f}x; "
        f"Ray start-up {result.ray_start_seconds:.1f} s, first rows after "
        f"{result.first_rows_seconds:.1f} s"
        + (f"; {result.resumed} files resumed from an interrupted run" if result.resumed else "")
        + f") -> {result.output}"
    )
