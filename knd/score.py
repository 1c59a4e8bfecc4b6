"""Batch emotion scoring of audio folders (``knd score``): Ray Data tasks, then an actor pool.

::

    paths (driver) ─▶ from_items ─▶ map_batches(featurize_batch)  ─▶ map_batches(Scorer)  ─▶ driver
                                    read → decode → downmix →         actor pool: model loaded
                                    resample → trim → window →        once per actor, batched,
                                    log-mel (one row per window)      GPU + bf16 when asked

Paths, not bytes, go into the dataset: each task reads its own files, so audio bytes never cross the
object store (DESIGN.md, "Facts": shipping bytes ran at 0.53x a plain loop, paths at 1.73x). On
CPU both steps ask for the same CPUs (:func:`stage_cpus`), so Ray Data fuses them into the actors:
each actor decodes and scores its own files. On GPU decode tasks on the CPUs feed the GPU actors.

A file goes through exactly the path ``knd prepare`` takes (downmix, resample, trim, fit to
``clip_seconds``, log-mel, rounded to the stored feature dtype), so a clip scored here gets the
probabilities ``knd evaluate`` gives on its prepared features. Only a file still longer than one
clip after trimming is cut into overlapping windows (hop ``window_hop_seconds``) whose probabilities
are averaged. A file that cannot be scored becomes a row with its reason in ``error``: nothing
raises.
"""

from __future__ import annotations

import io
import logging
import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from knd import audio, features, storage
from knd.config import FeatureConfig, ScoreConfig, build

log = logging.getLogger(__name__)

FILES_PER_TASK = 8
"""Files per decode batch: enough to amortise Ray's per-task cost, few enough to stream early."""

OUTPUT_SUFFIXES = (".parquet", ".csv")
MAX_FAILURES_SHOWN = 20


@dataclass(frozen=True)
class Window:
    """One scored stretch of a file: its times in the original file and its log-mel features."""

    start: float
    end: float
    features: np.ndarray


def file_windows(
    samples: np.ndarray, sample_rate: int, params: FeatureConfig, hop_seconds: float
) -> list[Window]:
    """Decoded audio -> the log-mel windows that score it.

    A file no longer than one clip after trimming takes exactly :func:`knd.features.clip_features`'
    steps (downmix, resample, trim, pad to ``clip_seconds``, log-mel), so it matches its prepared
    features. A longer one is cut into clip-long windows every ``hop_seconds`` (the last aligned
    to the end) over the trimmed signal.

    Args:
        samples: ``[frames, channels]`` or ``[frames]`` float32.
        sample_rate: rate of ``samples`` in Hz.
        params: the checkpoint's feature parameters.
        hop_seconds: hop between windows of a long file.

    Returns:
        Windows in time order; ``start``/``end`` are seconds in the original file.
    """
    wave = features.mono_at_feature_rate(samples, sample_rate, params)
    trimmed = audio.trim_silence(wave, params.trim_db)
    offset = _view_offset(trimmed, wave)
    clip = features.clip_samples(params)
    rate = float(params.sample_rate)
    if len(trimmed) <= clip:
        feats = features.log_mel(audio.fit_length(trimmed, clip), params)
        return [Window(offset / rate, (offset + len(trimmed)) / rate, feats)]
    hop = max(1, int(round(hop_seconds * params.sample_rate)))
    return [
        Window((offset + s) / rate, (offset + e) / rate, features.log_mel(trimmed[s:e], params))
        for s, e in audio.windows(len(trimmed), clip, hop)
    ]


def _view_offset(view: np.ndarray, base: np.ndarray) -> int:
    """Index in ``base`` where ``view`` (a slice of it, as ``trim_silence`` returns) starts."""
    if len(view) == 0 or not np.shares_memory(view, base):
        return 0
    delta = view.__array_interface__["data"][0] - base.__array_interface__["data"][0]
    return int(delta // base.strides[0])


def featurize_batch(
    batch: dict[str, np.ndarray], params: FeatureConfig, hop_seconds: float
) -> dict[str, np.ndarray]:
    """Ray Data step: paths -> one row per window (or one error row per unusable file).

    Every file yields at least one row; a file that fails gets ``error`` set and zero features, so
    failures travel through the pipeline as data instead of exceptions.
    """
    import torch

    # One Ray task per CPU already fills the machine; torch's own threads would oversubscribe it.
    torch.set_num_threads(1)
    shape = features.feature_shape(params)
    stored = np.dtype(params.dtype)
    rows: dict[str, list] = {k: [] for k in ("path", "window", "n_windows", "start", "end")}
    rows.update(duration=[], error=[], features=[])
    fs = None
    for path in batch["path"]:
        path = str(path)
        duration, error, wins = math.nan, "", []
        try:
            if fs is None:  # one filesystem (one S3 connection pool) per batch, not per file
                fs, _ = storage.resolve(path)
            samples, rate = audio.decode_audio(storage.read_bytes(path, fs), path)
            duration = len(samples) / float(rate)
            wins = file_windows(samples, rate, params, hop_seconds)
        except audio.AudioError as e:
            error = str(e)
        except OSError as e:
            error = f"unreadable ({e.strerror or str(e) or type(e).__name__})"
        except Exception as e:  # noqa: BLE001 - any failure is this file's, never the job's
            error = f"{type(e).__name__}: {e}".splitlines()[0]
        if error:
            wins = [Window(math.nan, math.nan, np.zeros(shape, dtype=np.float32))]
        for i, win in enumerate(wins):
            rows["path"].append(path)
            rows["window"].append(i)
            rows["n_windows"].append(len(wins))
            rows["start"].append(win.start)
            rows["end"].append(win.end)
            rows["duration"].append(duration)
            rows["error"].append(error)
            # Rounded to the stored dtype: the model was trained on features rounded this way.
            rows["features"].append(win.features.astype(stored))
    out = {k: np.asarray(v) for k, v in rows.items() if k != "features"}
    out["path"] = np.asarray(rows["path"], dtype=object)
    out["error"] = np.asarray(rows["error"], dtype=object)
    out["features"] = np.stack(rows["features"])
    return out


class Scorer:
    """Ray Data callable class: loads the model once per actor, then scores batches of windows."""

    def __init__(self, checkpoint: str, use_gpu: bool):
        import torch

        from knd.checkpoint import load_model

        self.device = torch.device("cuda" if use_gpu else "cpu")
        self.model, meta = load_model(checkpoint, device=self.device)
        self.mean = torch.as_tensor(meta["norm"]["mean"], dtype=torch.float32, device=self.device)
        self.std = torch.as_tensor(meta["norm"]["std"], dtype=torch.float32, device=self.device)
        self.num_classes = len(meta["labels"])

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from knd.inference import probabilities

        feats = batch.pop("features")
        ok = np.asarray(batch["error"] == "", dtype=bool)
        probs = np.full((len(ok), self.num_classes), np.nan, dtype=np.float32)
        if ok.any():
            x = torch.from_numpy(np.ascontiguousarray(feats[ok])).to(self.device)
            probs[ok] = probabilities(self.model, x, self.mean, self.std).cpu().numpy()
        batch["probs"] = probs
        return batch


@dataclass
class ScoreResult:
    """What ``knd score`` did; ``table`` is what was written to ``output``."""

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
    table: pd.DataFrame = field(repr=False)


def stage_cpus(total_cpus: float, num_actors: int, use_gpu: bool) -> float:
    """Logical CPUs asked by each decode task and each inference actor.

    On CPU both stages ask for the same share, ``min(1, total / num_actors)``: Ray Data then fuses
    the decode step into the actors, so each actor reads, decodes and scores its own files, no
    features cross the object store, and the actors together hold every CPU. Asking less for
    the actors (to leave CPUs to separate decode tasks) left one decode task at a time on two
    cores. On GPU the stages stay apart: decode tasks on the CPUs feed one actor per GPU.
    """
    if use_gpu:
        return 1.0
    return float(min(1.0, max(0.1, total_cpus / max(1, num_actors))))


def run(cfg: ScoreConfig) -> ScoreResult:
    """Score every audio file under ``cfg.input`` and write one row per file (or window).

    Raises:
        ValueError: an unsupported output suffix, or no audio file under the input.
        FileNotFoundError: the input or the checkpoint does not exist.
    """
    import ray

    from knd.checkpoint import load_meta
    from knd.runtime import init_ray

    output = str(cfg.output)
    if not output.lower().endswith(OUTPUT_SUFFIXES):
        raise ValueError(f"output must end in .parquet or .csv: {output}")
    if cfg.batch_size < 1 or cfg.num_actors < 1 or cfg.window_hop_seconds <= 0:
        raise ValueError("batch_size and num_actors must be >= 1 and window_hop_seconds > 0")
    meta = load_meta(cfg.checkpoint)
    labels = list(meta["labels"])
    params = build(FeatureConfig, meta["feature_params"], "feature_params.")
    paths = storage.list_files(cfg.input, storage.AUDIO_SUFFIXES)
    if not paths:
        raise ValueError(f"no audio files ({', '.join(storage.AUDIO_SUFFIXES)}) under {cfg.input}")

    started = time.perf_counter()
    init_ray(cfg.ray)
    ray_start = time.perf_counter() - started
    log.info("scoring %d files under %s with %s", len(paths), cfg.input, cfg.checkpoint)

    started = time.perf_counter()
    cpus = stage_cpus(ray.cluster_resources().get("CPU", 1.0), cfg.num_actors, cfg.use_gpu)
    ds = ray.data.from_items(
        [{"path": p} for p in paths],
        override_num_blocks=max(1, math.ceil(len(paths) / FILES_PER_TASK)),
    )
    ds = ds.map_batches(
        featurize_batch,
        fn_kwargs={"params": params, "hop_seconds": cfg.window_hop_seconds},
        batch_size=FILES_PER_TASK,
        batch_format="numpy",
        num_cpus=1.0 if cfg.use_gpu else cpus,
    )
    ds = ds.map_batches(
        Scorer,
        fn_constructor_kwargs={"checkpoint": cfg.checkpoint, "use_gpu": cfg.use_gpu},
        batch_size=cfg.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=cfg.num_actors),
        num_cpus=cpus,
        num_gpus=1 if cfg.use_gpu else 0,
    )
    windows = _collect(ds, len(paths))
    table = aggregate(windows, labels, per_window=cfg.per_window)
    write_table(table, output)
    seconds = time.perf_counter() - started

    files = table.drop_duplicates("path")
    failed_rows = files[files["error"] != ""]
    audio_seconds = float(files.loc[files["error"] == "", "duration"].sum())
    result = ScoreResult(
        output=output,
        num_files=len(paths),
        num_rows=len(table),
        failed=len(failed_rows),
        audio_hours=audio_seconds / 3600.0,
        seconds=seconds,
        files_per_second=len(paths) / seconds,
        realtime_factor=audio_seconds / seconds,
        ray_start_seconds=ray_start,
        exit_code=1 if cfg.strict and len(failed_rows) else 0,
        table=table,
    )
    _print_summary(result, failed_rows)
    return result


def _collect(ds, num_files: int) -> pd.DataFrame:
    """Stream the scored windows to the driver with a progress bar over files."""
    from tqdm import tqdm

    parts = []
    bar_format = "{l_bar}{bar}| {n:.0f}/{total} files [{elapsed}<{remaining}]"
    with tqdm(total=num_files, unit="file", bar_format=bar_format, file=sys.stderr) as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            probs = batch.pop("probs")
            part = pd.DataFrame({k: v for k, v in batch.items()})
            part["probs"] = list(probs)
            parts.append(part)
            # A file's windows may land in several batches; each counts for its share.
            bar.update(float((1.0 / batch["n_windows"]).sum()))
    return pd.concat(parts, ignore_index=True)


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


def write_table(table: pd.DataFrame, output: str) -> None:
    """Write ``.parquet`` or ``.csv`` atomically (local or s3://)."""
    if output.lower().endswith(".csv"):
        data = table.to_csv(index=False).encode("utf-8")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(table, preserve_index=False), buf)
        data = buf.getvalue()
    storage.write_bytes(output, data)


def _print_summary(result: ScoreResult, failed_rows: pd.DataFrame) -> None:
    for path, error in failed_rows[["path", "error"]].head(MAX_FAILURES_SHOWN).itertuples(False):
        print(f"failed {path}: {error}", file=sys.stderr)
    if result.failed > MAX_FAILURES_SHOWN:
        print(f"... and {result.failed - MAX_FAILURES_SHOWN} more failures", file=sys.stderr)
    print(
        f"scored {result.num_files - result.failed} files, {result.failed} failed; "
        f"{result.audio_hours:.3f} h of audio in {result.seconds:.1f} s "
        f"({result.files_per_second:.1f} files/s, real-time factor {result.realtime_factor:.0f}x; "
        f"Ray start-up {result.ray_start_seconds:.1f} s) -> {result.output}"
    )
