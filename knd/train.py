"""``knd train``: Ray Train (DDP) of a spectrogram classifier on prepared features.

The driver (:func:`run`) splits the prepared features by actor, computes per-mel-band
normalisation statistics on the training actors only, and hands Ray Train the Datasets
``train_<rank>`` (one fixed, equal share of the training rows per worker) and ``val`` (every
worker reads it whole and scores its own share of rows). Each worker runs
:func:`train_loop_per_worker`, whose shape is fixed: dataset shard -> model -> ``prepare_model``
(DDP) -> resume from the last checkpoint if any -> epochs -> validation metrics synced across
ranks -> ``ray.train.report(metrics, checkpoint)``.

After training the driver copies the best checkpoint (by ``train.checkpoint_metric`` on the
validation actors; with no validation group, ``split.val_actors=[]``, the last epoch) to
``<run_dir>/<name>/checkpoint/``, scores the validation and test actors with it, and writes
``metrics.json`` and ``confusion.png`` beside it. Ray Train's own files (every kept checkpoint,
its bookkeeping) live in the same folder; ``history.jsonl`` has one line per reported epoch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from knd import storage
from knd.checkpoint import (
    MODEL_FILE,
    load_meta,
    load_model,
    load_tensors,
    load_train_state,
    save_checkpoint,
    unwrap,
)
from knd.config import TrainConfig, build, to_dict
from knd.features import normalise
from knd.metrics import metric_collection, metrics_report, split_metrics, summarise, write_report
from knd.models import build_model
from knd.ravdess import emotion_to_label_table, label_names, split_actors
from knd.tracking import scrub, start_tracking

log = logging.getLogger(__name__)

HISTORY_FILE = "history.jsonl"
CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoint"
VAL_BATCH = 256


@dataclass(frozen=True)
class TrainResult:
    """Where a training run wrote its outputs, and what it measured."""

    run_dir: str
    checkpoint: str
    metrics: dict
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    exit_code: int = 0


class TrainHooks:
    """Callbacks run inside every training worker; the default does nothing.

    Subclass to observe training from the inside (tests record the actors of every training
    batch, or kill a worker at a given point to prove recovery). Instances travel to the workers
    by pickle, so keep their state small.
    """

    def on_batch(self, epoch: int, index: int, rank: int, actors: torch.Tensor) -> None:
        """Before the optimiser step of each training batch."""

    def on_epoch_end(self, epoch: int, rank: int, metrics: dict) -> None:
        """After ``ray.train.report`` of each epoch."""


# ----------------------------------------------------------------------------------------------
# The pieces of one optimisation step (pure torch, shared with bench/train.py and knd.tune)


ONECYCLE_START = 25.0
"""One-cycle starts at ``peak / 25`` (torch's ``OneCycleLR`` div_factor) ..."""
ONECYCLE_END = 1e4
"""... and ends at ``peak / 25 / 1e4`` (its final_div_factor)."""


def lr_at(
    step: int, total_steps: int, warmup_steps: int, peak: float, schedule: str = "cosine"
) -> float:
    """The learning rate of optimiser step ``step`` (0-based) of ``total_steps``.

    ``cosine``: linear warm-up to ``peak`` over ``warmup_steps``, then cosine decay to zero.
    ``onecycle``: torch's ``OneCycleLR`` (cos annealing, no momentum cycling): cosine from
    ``peak / 25`` up to ``peak`` over ``warmup_steps``, then cosine down to ``peak / 2.5e5``.
    """
    if schedule == "onecycle":
        low, end = peak / ONECYCLE_START, peak / ONECYCLE_START / ONECYCLE_END
        top = max(warmup_steps - 1, 0)  # the step at the peak, as in OneCycleLR
        if step < top:
            return low + (peak - low) * 0.5 * (1.0 - math.cos(math.pi * step / top))
        progress = min(1.0, (step - top) / max(1, total_steps - 1 - top))
        return end + (peak - end) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule != "cosine":
        raise ValueError(f"optim.schedule must be cosine or onecycle, got {schedule!r}")
    if warmup_steps > 0 and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def spec_augment(x: torch.Tensor, freq_mask: int, time_mask: int, num_masks: int) -> torch.Tensor:
    """SpecAugment masking of normalised ``[B, n_mels, frames]``: masked cells become 0 (the mean).

    Each example gets ``num_masks`` frequency bands of up to ``freq_mask`` mel bins and as many
    time spans of up to ``time_mask`` frames, at random places.
    """
    if num_masks <= 0 or (freq_mask <= 0 and time_mask <= 0):
        return x
    b, m, t = x.shape
    keep = torch.ones(b, m, t, dtype=torch.bool, device=x.device)
    for size, width, axis in ((m, freq_mask, 1), (t, time_mask, 2)):
        if width <= 0:
            continue
        index = torch.arange(size, device=x.device)[None, :]
        for _ in range(num_masks):
            w = torch.randint(0, min(width, size) + 1, (b, 1), device=x.device)
            start = (torch.rand(b, 1, device=x.device) * (size - w + 1)).long()
            hit = (index >= start) & (index < start + w)
            keep &= ~(hit[:, :, None] if axis == 1 else hit[:, None, :])
    return x * keep


def shift_and_gain(x: torch.Tensor, max_shift: int, gain_db: float) -> torch.Tensor:
    """Per-example mel-band shift and level change of raw log-mel ``[B, n_mels, frames]`` (dB).

    A shift of ``k`` bands moves the whole spectrum up or down (edge bands repeat), roughly what
    a higher or lower voice and a longer or shorter vocal tract do: the model must then rely on
    the shape of the spectrum over time rather than on one speaker's pitch and formant bands. A
    level change stands for another microphone distance or recording gain.
    """
    b, m, _ = x.shape
    if max_shift > 0:
        shift = torch.randint(-max_shift, max_shift + 1, (b, 1), device=x.device)
        index = (torch.arange(m, device=x.device)[None, :] - shift).clamp(0, m - 1)
        x = x.gather(1, index[:, :, None].expand_as(x))
    if gain_db > 0:
        x = x + (torch.rand(b, 1, 1, device=x.device) * 2.0 - 1.0) * gain_db
    return x


def mixup(
    x: torch.Tensor, y: torch.Tensor, alpha: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Mix each example with a random partner: ``(x_mixed, y, y_partner, weight_of_y)``."""
    if alpha <= 0:
        return x, y, y, 1.0
    lam = float(np.random.beta(alpha, alpha))
    lam = max(lam, 1.0 - lam)  # keep the first example dominant so its label stays meaningful
    perm = torch.randperm(x.shape[0], device=x.device)
    return lam * x + (1.0 - lam) * x[perm], y, y[perm], lam


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    features: torch.Tensor,
    labels: torch.Tensor,
    cfg: TrainConfig,
    norm: tuple[torch.Tensor, torch.Tensor],
    gpu: bool,
) -> torch.Tensor:
    """One optimiser step on raw log-mel ``[B, n_mels, frames]``; returns the (detached) loss."""
    aug = cfg.augment
    x = shift_and_gain(features.float(), aug.freq_shift, aug.gain_db)
    x = normalise(x, norm[0], norm[1])
    x = spec_augment(x, aug.freq_mask, aug.time_mask, aug.num_masks)
    x, y_a, y_b, lam = mixup(x[:, None], labels, cfg.augment.mixup_alpha)
    if gpu:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=gpu):
        logits = model(x)
    logits = logits.float()
    smooth = cfg.optim.label_smoothing
    loss = lam * F.cross_entropy(logits, y_a, label_smoothing=smooth)
    if lam < 1.0:
        loss = loss + (1.0 - lam) * F.cross_entropy(logits, y_b, label_smoothing=smooth)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.optim.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
    optimizer.step()
    return loss.detach()


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; biases and normalisation weights get no weight decay."""
    decay, no_decay = [], []
    for param in model.parameters():
        (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": cfg.optim.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.optim.lr)


# ----------------------------------------------------------------------------------------------
# The worker loop


def _mine(paths: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Rows of the (unsplit) validation set that this rank scores: a stable hash of the path."""
    return np.array([zlib.crc32(str(p).encode()) % world == rank for p in paths], dtype=bool)


def validate(
    model: torch.nn.Module,
    val_iter: Any,
    label_table: torch.Tensor,
    norm: tuple[torch.Tensor, torch.Tensor],
    num_classes: int,
    device: torch.device,
    rank: int = 0,
    world: int = 1,
) -> dict:
    """Validation metrics over every rank's share of ``val_iter``, synced across ranks.

    Every rank must call this (torchmetrics gathers states on ``compute``). The plain module is
    used, not the DDP wrapper, so ranks with different row counts never wait on each other.
    """
    plain = unwrap(model)
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    if distributed and world > 1:
        # BatchNorm running statistics drift apart between ranks (DDP averages gradients and
        # re-broadcasts buffers only at the next forward): score exactly rank 0's model, the
        # one that is checkpointed.
        for buffer in plain.buffers():
            torch.distributed.broadcast(buffer, src=0)
    was_training = plain.training
    plain.eval()
    gpu = device.type == "cuda"
    collection = metric_collection(num_classes, sync=True).to(device)
    loss_sum = torch.zeros(2, dtype=torch.float64, device=device)
    with torch.no_grad():
        for batch in val_iter.iter_batches(batch_size=VAL_BATCH, batch_format="numpy"):
            mine = _mine(batch["path"], rank, world)
            if not mine.any():
                continue
            x = torch.as_tensor(batch["features"][mine], device=device).float()
            y = label_table[torch.as_tensor(batch["emotion"][mine], device=device).long()]
            x = normalise(x, norm[0], norm[1])[:, None]
            if gpu:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=gpu):
                logits = plain(x).float()
            collection.update(logits.argmax(dim=1), y)
            loss_sum[0] += F.cross_entropy(logits, y, reduction="sum").double()
            loss_sum[1] += len(y)
    if distributed:
        torch.distributed.all_reduce(loss_sum)
    out = summarise(collection.compute())
    out["loss"] = float(loss_sum[0] / loss_sum[1].clamp(min=1))
    plain.train(was_training)
    return out


def _restore(resume: str | None) -> tuple[dict, dict] | None:
    """``(weights, train_state)`` of Ray's latest checkpoint of this run, else of ``resume``."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            weights = load_tensors(os.path.join(folder, MODEL_FILE))
            state = load_train_state(folder)
        return weights, state
    if resume:
        return load_tensors(storage.join(resume, MODEL_FILE)), load_train_state(resume)
    return None


def _append_history(run_path: str, record: dict) -> None:
    uri = storage.join(run_path, HISTORY_FILE)
    old = storage.read_text(uri) if storage.exists(uri) else ""
    storage.write_text(uri, old + json.dumps(record) + "\n")


def train_loop_per_worker(config: dict) -> None:
    """The Ray Train worker: shard -> model -> DDP -> resume -> epochs -> report.

    ``config`` (built by :func:`run`): ``cfg`` (the TrainConfig as a dict), ``meta`` (checkpoint
    meta without epoch/metrics), ``rows_per_worker``, ``run_path``, ``name``, ``resume``,
    ``hooks``. Rank ``r`` trains on the dataset ``train_<r>``, its fixed, equal share of the rows.
    """
    import ray.train
    import ray.train.torch
    from ray.train import Checkpoint

    cfg: TrainConfig = build(TrainConfig, config["cfg"])
    meta, hooks = config["meta"], config.get("hooks") or TrainHooks()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    gpu = device.type == "cuda"
    if not gpu:
        torch.set_num_threads(max(1, int(cfg.train.cpus_per_worker)))
    torch.manual_seed(cfg.train.seed + 1000 * rank)
    np.random.seed(cfg.train.seed + 1000 * rank)
    num_classes = len(meta["labels"])
    label_table = torch.tensor(emotion_to_label_table(cfg.labels), device=device)
    norm = (
        torch.tensor(meta["norm"]["mean"], device=device),
        torch.tensor(meta["norm"]["std"], device=device),
    )

    train_shard = ray.train.get_dataset_shard(f"train_{rank}")
    # No validation group (split.val_actors=[]): a fixed schedule, nothing to score per epoch.
    val_data = ray.train.get_dataset_shard("val") if meta["split"]["val"] else None

    model = build_model(cfg.model.name, num_classes, cfg.model.width, cfg.model.dropout)
    if gpu:
        model = model.to(memory_format=torch.channels_last)
    model = ray.train.torch.prepare_model(model)
    optimizer = make_optimizer(model, cfg)

    start_epoch, step = 1, 0
    restored = _restore(config.get("resume"))
    if restored is not None:
        weights, state = restored
        unwrap(model).load_state_dict(weights)
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            start_epoch, step = int(state["epoch"]) + 1, int(state["step"])

    rows_per_worker = config["rows_per_worker"]
    local_batch = max(1, min(cfg.optim.batch_size // world, rows_per_worker))
    steps_per_epoch = max(1, rows_per_worker // local_batch)
    total_steps = cfg.optim.epochs * steps_per_epoch
    warmup_steps = round(cfg.optim.warmup_epochs * steps_per_epoch)
    tracker = start_tracking(
        cfg.wandb, config["run_path"], config["name"], scrub(to_dict(cfg)), rank=rank
    )

    for epoch in range(start_epoch, cfg.optim.epochs + 1):
        model.train()
        started, started_at = time.perf_counter(), time.time()
        first_batch_s = None
        loss_sum = torch.zeros(2, dtype=torch.float64, device=device)
        batches = train_shard.iter_torch_batches(
            batch_size=local_batch,
            drop_last=True,
            local_shuffle_buffer_size=min(rows_per_worker, 4096),
        )
        for index, batch in enumerate(batches):
            if first_batch_s is None:
                first_batch_s = time.perf_counter() - started
            hooks.on_batch(epoch, index, rank, batch["actor"])
            lr = lr_at(step, total_steps, warmup_steps, cfg.optim.lr, cfg.optim.schedule)
            for group in optimizer.param_groups:
                group["lr"] = lr
            labels = label_table[batch["emotion"].long()]
            loss = train_step(model, optimizer, batch["features"], labels, cfg, norm, gpu)
            loss_sum += torch.stack([loss.double() * len(labels), loss_sum.new_tensor(len(labels))])
            step += 1
        train_s = time.perf_counter() - started
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(loss_sum)
        metrics = {
            "epoch": epoch,
            "step": step,
            "lr": lr_at(step - 1, total_steps, warmup_steps, cfg.optim.lr, cfg.optim.schedule),
            "train_loss": float(loss_sum[0] / loss_sum[1].clamp(min=1)),
        }
        if val_data is not None:
            val = validate(model, val_data, label_table, norm, num_classes, device, rank, world)
            metrics |= {
                "val_loss": val["loss"],
                "val_accuracy": val["accuracy"],
                "val_uar": val["uar"],
                "val_macro_f1": val["macro_f1"],
                "val_n": val["n"],
            }
        metrics |= {
            "train_epoch_s": train_s,
            "first_batch_s": first_batch_s or 0.0,
            "epoch_s": time.perf_counter() - started,
            "epoch_started_at": started_at,
            "world_size": world,
            "epoch_samples": steps_per_epoch * local_batch * world,
        }
        with tempfile.TemporaryDirectory() as folder:
            checkpoint = None
            if rank == 0:
                state = {"epoch": epoch, "step": step, "optimizer": optimizer.state_dict()}
                save_checkpoint(folder, model, meta | {"epoch": epoch, "metrics": metrics}, state)
                checkpoint = Checkpoint.from_directory(folder)
                _append_history(config["run_path"], metrics)
                tracker.log(metrics, step=epoch)
            ray.train.report(metrics, checkpoint=checkpoint)
        hooks.on_epoch_end(epoch, rank, metrics)
    tracker.finish()


# ----------------------------------------------------------------------------------------------
# The driver


def band_stats(ds: Any) -> tuple[list[float], list[float]]:
    """Per-mel-band mean and standard deviation over every frame of every clip of ``ds``."""
    total = squares = None
    count = 0
    for batch in ds.iter_batches(batch_size=256, batch_format="numpy"):
        f = np.asarray(batch["features"], dtype=np.float64)  # [B, n_mels, frames]
        if total is None:
            total, squares = np.zeros(f.shape[1]), np.zeros(f.shape[1])
        total += f.sum(axis=(0, 2))
        squares += np.square(f).sum(axis=(0, 2))
        count += f.shape[0] * f.shape[2]
    if not count:
        raise ValueError("no training clips to compute normalisation statistics on")
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return mean.tolist(), std.tolist()


def _run_root(run_dir: str) -> str:
    return run_dir if storage.is_remote(run_dir) else str(Path(run_dir).expanduser().resolve())


def _read_history(run_path: str) -> list[dict]:
    uri = storage.join(run_path, HISTORY_FILE)
    if not storage.exists(uri):
        return []
    return [json.loads(line) for line in storage.read_text(uri).splitlines() if line.strip()]


def _copy_checkpoint(checkpoint: Any, dest: str) -> None:
    """Copy a Ray checkpoint folder to ``dest``, replacing what is there."""
    import pyarrow.fs as pafs

    fs, path = storage.resolve(dest)
    if storage.is_remote(dest):
        storage.delete_dir(dest)
        pafs.copy_files(checkpoint.path, path, checkpoint.filesystem, fs)
        return
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    fs.create_dir(tmp, recursive=True)
    pafs.copy_files(checkpoint.path, tmp, checkpoint.filesystem, fs)
    storage.delete_dir(dest)
    fs.move(tmp, path)


CHECKPOINT_METRICS = {"val_uar": "max", "val_loss": "min"}


def checkpoint_order(metric: str) -> str:
    """``"max"`` or ``"min"``: which end of ``metric`` is the best epoch.

    Raises:
        ValueError: a metric that training does not rank checkpoints by.
    """
    if metric not in CHECKPOINT_METRICS:
        raise ValueError(
            f"train.checkpoint_metric must be one of {sorted(CHECKPOINT_METRICS)}, got {metric!r}"
        )
    return CHECKPOINT_METRICS[metric]


def _best(result: Any, metric: str) -> tuple[Any, dict]:
    """The best kept checkpoint by ``metric`` (ties: the other metric, then the later epoch);
    ``metric="epoch"`` (no validation group) is the last epoch."""
    kept = [(c, m) for c, m in (result.best_checkpoints or []) if c is not None and m]
    if not kept:
        raise RuntimeError(f"training reported no checkpoint (run folder {result.path})")
    if metric == "epoch":
        return max(kept, key=lambda cm: cm[1]["epoch"])

    def rank(cm: tuple[Any, dict]) -> tuple[float, float, int]:
        m = cm[1]
        if metric == "val_loss":
            return (-m["val_loss"], m["val_uar"], m["epoch"])
        return (m["val_uar"], -m["val_loss"], m["epoch"])

    return max(kept, key=rank)


def _check_resume(cfg: TrainConfig, manifest: dict, test: tuple[int, ...]) -> dict:
    meta = load_meta(cfg.resume)
    state = load_train_state(cfg.resume)
    if state is None:
        raise ValueError(f"{cfg.resume}: no train_state.pt, so training cannot resume from it")
    if meta["feature_hash"] != manifest["feature_hash"]:
        raise ValueError(
            f"{cfg.resume}: checkpoint expects features with hash {meta['feature_hash']}, "
            f"{cfg.data} has {manifest['feature_hash']}"
        )
    if tuple(meta["split"]["test"]) != test or meta["label_set"] != cfg.labels:
        raise ValueError(
            f"{cfg.resume}: checkpoint was trained on labels {meta['label_set']} with test "
            f"actors {meta['split']['test']}; resume with the same labels and split"
        )
    if int(state["epoch"]) >= cfg.optim.epochs:
        raise ValueError(
            f"{cfg.resume}: checkpoint is at epoch {state['epoch']}; set optim.epochs above it "
            "to train further"
        )
    return meta


def run(cfg: TrainConfig, hooks: TrainHooks | None = None) -> TrainResult:
    """Train, keep the best checkpoint (or the last, without validation actors), report metrics.

    Args:
        cfg: the ``knd train`` config.
        hooks: callbacks run inside each worker (see :class:`TrainHooks`).

    Raises:
        ValueError: bad data or split (missing manifest, unknown actors), or a checkpoint to
            resume from that does not fit.
        ray.train.TrainingFailedError: training failed more often than ``train.max_failures``.
    """
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from knd.evaluate import predict, targets_of
    from knd.prepare import load_features, read_features
    from knd.runtime import init_ray

    init_ray(cfg.ray)
    name = cfg.name or f"{cfg.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    root = _run_root(cfg.run_dir)
    run_path = storage.join(root, name)

    _, manifest = read_features(cfg.data)
    present = sorted(int(a) for a in manifest["rows_per_actor"] if a != "unknown")
    split = split_actors(cfg.split.test_actors, cfg.split.val_actors, actors=present)
    resumed = _check_resume(cfg, manifest, split.test) if cfg.resume else None

    columns = ["features", "emotion", "actor"]
    train_ds = read_features(cfg.data, actors=split.train)[0].select_columns(columns)
    # Materialised once: every epoch then streams from the object store, not from Parquet.
    train_ds = train_ds.materialize()
    val_sets = {}
    if split.val:
        val_ds = read_features(cfg.data, actors=split.val)[0].select_columns([*columns, "path"])
        val_sets["val"] = val_ds.materialize()
    # Model selection must not cost speakers by default: with no validation group the schedule
    # is fixed and the last epoch is the model (see model_selection in metrics.json).
    if split.val:
        score_metric = cfg.train.checkpoint_metric
        selection = f"best epoch by {score_metric} on actors {list(split.val)}"
    else:
        score_metric, selection = "epoch", "fixed schedule, last epoch (no validation group)"
    num_train_rows = train_ds.count()
    world = cfg.train.num_workers
    # Equal shards, split once here rather than by Ray Train's per-epoch streaming_split: that
    # cost 3-5 s before each epoch's first batch (measured on 2 cores), more than a small
    # epoch's compute. Each rank reshuffles its shard every epoch; DDP averages across shards.
    shards = train_ds.split(world, equal=True) if world > 1 else [train_ds]
    rows_per_worker = shards[0].count()
    if resumed is not None:
        mean, std = resumed["norm"]["mean"], resumed["norm"]["std"]
    else:
        mean, std = band_stats(train_ds)
    labels = list(label_names(cfg.labels))
    meta = {
        "label_set": cfg.labels,
        "labels": labels,
        "feature_params": manifest["feature_params"],
        "feature_hash": manifest["feature_hash"],
        "feature_shape": manifest["feature_shape"],
        "model": {"name": cfg.model.name, "width": cfg.model.width, "dropout": cfg.model.dropout},
        "norm": {"mean": mean, "std": std},
        "split": {"train": list(split.train), "val": list(split.val), "test": list(split.test)},
        "recipe": cfg.recipe,
        "run": name,
    }
    storage.write_text(storage.join(run_path, CONFIG_FILE), yaml.safe_dump(scrub(to_dict(cfg))))
    log.info(
        "training %s (%s) on %d clips of actors %s; validating on %s, testing on %s -> %s",
        name, cfg.model.name, num_train_rows, list(split.train), list(split.val),
        list(split.test), run_path,
    )  # fmt: skip

    fs, storage_path = storage.resolve(root)
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "cfg": to_dict(cfg),
            "meta": meta,
            "rows_per_worker": rows_per_worker,
            "run_path": run_path,
            "name": name,
            "resume": cfg.resume,
            "hooks": hooks,
        },
        scaling_config=ScalingConfig(
            num_workers=cfg.train.num_workers,
            use_gpu=cfg.train.use_gpu,
            resources_per_worker={"CPU": cfg.train.cpus_per_worker},
        ),
        datasets=val_sets | {f"train_{r}": shard for r, shard in enumerate(shards)},
        # Ray splits nothing: the train shards are made above; validation is read whole by
        # every rank, which scores its share by path hash (equal splits would drop rows).
        dataset_config=DataConfig(datasets_to_split=[]),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            storage_filesystem=fs if storage.is_remote(root) else None,
            checkpoint_config=CheckpointConfig(
                num_to_keep=cfg.train.num_to_keep,
                checkpoint_score_attribute=score_metric,
                checkpoint_score_order="max"
                if score_metric == "epoch"
                else checkpoint_order(score_metric),
            ),
            failure_config=FailureConfig(max_failures=cfg.train.max_failures),
        ),
    )
    result = trainer.fit()
    best, best_metrics = _best(result, score_metric)
    checkpoint_uri = storage.join(run_path, CHECKPOINT_DIR)
    _copy_checkpoint(best, checkpoint_uri)

    model, ckpt_meta = load_model(checkpoint_uri)
    parts = {"val": None}
    for part, actors in (("val", split.val), ("test", split.test)):
        if not actors:
            continue
        table = load_features(cfg.data, actors=actors, expected_hash=manifest["feature_hash"])
        preds, _ = predict(model, ckpt_meta, table.features)
        targets = targets_of(table.emotion, cfg.labels)
        parts[part] = split_metrics(preds, targets, len(labels), actors=table.actor)
    history = _read_history(run_path)
    report = metrics_report(
        labels,
        test=parts["test"],
        val=parts["val"],
        test_actors=split.test,
        val_actors=list(split.val),
        train_actors=list(split.train),
        label_set=cfg.labels,
        model=meta["model"],
        recipe=cfg.recipe,
        best_epoch=int(best_metrics["epoch"]),
        model_selection=selection,
        epochs=[int(h["epoch"]) for h in history],
        feature_hash=manifest["feature_hash"],
        checkpoint=checkpoint_uri,
    )
    write_report(run_path, report)
    test = parts["test"]
    log.info(
        "epoch %d (%s): test accuracy %.3f, UAR %.3f, macro-F1 %.3f; report in %s",
        best_metrics["epoch"], selection, test["accuracy"], test["uar"], test["macro_f1"],
        run_path,
    )  # fmt: skip
    return TrainResult(
        run_dir=run_path,
        checkpoint=checkpoint_uri,
        metrics=report,
        history=history,
        best_epoch=int(best_metrics["epoch"]),
    )
