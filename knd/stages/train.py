"""``knd train``: Ray Train (DDP) of a spectrogram classifier on prepared features.

The driver (:func:`run`) splits the prepared features by actor, computes per-mel-band
normalisation statistics on the training actors only, and hands Ray Train the Datasets
``train_<rank>`` (one fixed, equal share of the training rows per worker) and ``val`` (every
worker reads it whole and scores its own share of rows); the data plane, both the driver's
split and a worker's batches, is :mod:`knd.learning.feed`. Each worker runs
:func:`train_loop_per_worker`, whose shape is fixed: dataset shard -> learner (model, DDP,
optimiser; :mod:`knd.learning.engine`) -> resume from the last checkpoint if any -> epochs ->
validation metrics synced across ranks -> ``ray.train.report(metrics, checkpoint)``.

Model selection never uses the test actors. With validation actors (``split.val_speakers``) the
kept checkpoint is the best epoch by ``train.checkpoint_metric``; with none
(``split.val_speakers=[]``) every non-test actor trains on a fixed schedule and the last epoch
is kept. ``metrics.json`` says which (``model_selection``). The driver then copies that
checkpoint to ``<run_dir>/<name>/checkpoint/``, scores the validation and test actors with it,
and writes ``metrics.json`` and ``confusion.png`` beside it; ``history.jsonl`` has one line
per epoch.

**Resume.** A run whose driver was killed (or whose whole cluster was lost) continues when the
same command runs again with the same ``run_dir`` and ``name``: Ray Train restores the run's
record of reported checkpoints and the workers start after the last one, so epoch numbering goes
on and ``history.jsonl`` keeps each epoch once. ``resume=CHECKPOINT`` is different: a new run
starting from a checkpoint's weights and optimiser state. The default ``name`` carries a
timestamp, so a job that must resume on retry names its run.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import torch
import yaml

from knd.config.loading import to_dict
from knd.config.schema import TrainConfig
from knd.data import storage
from knd.data.label_sets import spec_name
from knd.data.ravdess import ActorSplit
from knd.data.shards import check_groups, manifest_emotions, manifest_groups
from knd.learning.checkpoint import (
    META_FILE,
    MODEL_FILE,
    load_meta,
    load_tensors,
    load_train_state,
    make_meta,
    model_groups,
    save_checkpoint,
)
from knd.learning.engine import Learner, group_stats
from knd.learning.feed import SplitData, load_split, training_batches, validation_batches
from knd.learning.inference import norm_stats
from knd.learning.models import unwrap
from knd.learning.postfit import score_and_report
from knd.learning.report import append_history, read_history
from knd.runtime.console import follow_epochs
from knd.runtime.tracking import scrub, start_tracking

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoint"


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


@dataclass(frozen=True)
class LoopConfig:
    """What the driver hands every Ray Train worker: one typed, picklable object.

    Ray Train (V2) wants ``train_loop_config`` to be a dict (it records it as JSON with the run),
    so the trainer gets ``{"loop": LoopConfig(...)}`` and the worker reads this one object.
    """

    cfg: TrainConfig
    meta: dict = field(repr=False)
    """The checkpoint meta without ``epoch`` and ``metrics`` (:func:`_run_meta`)."""
    rows_per_worker: int
    """Rows of each rank's fixed, equal training share (dataset ``train_<rank>``)."""
    local_batch: int
    in_memory: bool
    """Whether a worker's share fits in memory (it then reads it once, not every epoch)."""
    has_val: bool
    label_table: tuple[int, ...]
    """``label_table[emotion code]``: the class id of a clip (the dataset's labels mapped)."""
    run_path: str
    name: str
    hooks: TrainHooks = field(default_factory=TrainHooks, repr=False, compare=False)

    @property
    def groups(self) -> tuple[str, ...]:
        """The feature groups a batch carries (``cfg.model.inputs``)."""
        return self.cfg.model.inputs

    @property
    def resume(self) -> str | None:
        return self.cfg.resume


# ----------------------------------------------------------------------------------------------
# The worker


def _sync_batch_norm(model: torch.nn.Module, world: int) -> None:
    """Score exactly rank 0's model (the one that is checkpointed) on every rank.

    BatchNorm running statistics drift apart between ranks: DDP averages gradients and
    re-broadcasts buffers only at the next forward.
    """
    if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        for buffer in unwrap(model).buffers():
            torch.distributed.broadcast(buffer, src=0)


def _mean_over_ranks(loss_sum: float, count: int, device: torch.device) -> float:
    totals = torch.tensor([loss_sum, count], dtype=torch.float64, device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(totals)
    return float(totals[0] / totals[1].clamp(min=1))


def _restore(resume: str | None) -> dict | None:
    """The learner state of Ray's latest checkpoint of this run, else of ``resume``."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            weights = load_tensors(os.path.join(folder, MODEL_FILE))
            state = load_train_state(folder)
    elif resume:
        weights, state = load_tensors(storage.join(resume, MODEL_FILE)), load_train_state(resume)
    else:
        return None
    return {"model": weights} | (state or {})


def _report_epoch(learner: Learner, meta: dict, loop: LoopConfig, tracker: Any, rank: int) -> None:
    """``ray.train.report`` of one epoch; rank 0 also writes the checkpoint and the history."""
    import ray.train
    from ray.train import Checkpoint

    metrics, epoch = meta["metrics"], meta["epoch"]
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = None
        if rank == 0:
            state = learner.state_dict()
            train_state = {"epoch": epoch, "step": state["step"], "optimizer": state["optimizer"]}
            save_checkpoint(folder, learner.model, meta, train_state)
            checkpoint = Checkpoint.from_directory(folder)
            append_history(loop.run_path, metrics)
            tracker.log(metrics, step=epoch)
        ray.train.report(metrics, checkpoint=checkpoint)


def train_loop_per_worker(config: dict) -> None:
    """The Ray Train worker: shard -> learner (DDP) -> resume -> epochs -> report.

    ``config`` is ``{"loop": LoopConfig}`` (built by :func:`run`). Rank ``r`` trains on the
    dataset ``train_<r>``, its fixed, equal share of the rows.
    """
    import ray.train
    import ray.train.torch

    loop: LoopConfig = config["loop"]
    cfg, meta, hooks = loop.cfg, loop.meta, loop.hooks
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if device.type != "cuda":
        torch.set_num_threads(max(1, int(cfg.train.cpus_per_worker)))
    torch.manual_seed(cfg.train.seed + 1000 * rank)
    label_table = torch.tensor(loop.label_table, device=device)

    loading = time.perf_counter()
    train_batches = training_batches(
        ray.train.get_dataset_shard(f"train_{rank}"),
        label_table,
        loop.groups,
        loop.local_batch,
        cfg.train.seed + rank,
        in_memory=loop.in_memory,
        rows=loop.rows_per_worker,
    )
    val_batches = None
    if loop.has_val:
        val_shard = ray.train.get_dataset_shard("val")
        val_batches = validation_batches(
            val_shard, label_table, loop.groups, (rank, world), in_memory=loop.in_memory
        )
    load_s = time.perf_counter() - loading

    learner, start_epoch = _worker_learner(loop, device, rank)
    tracker = start_tracking(cfg.wandb, loop.run_path, loop.name, scrub(to_dict(cfg)), rank=rank)
    for epoch in range(start_epoch, cfg.optim.epochs + 1):
        metrics = _train_epoch(learner, train_batches, val_batches, epoch, hooks, (rank, world))
        metrics["load_s"] = load_s if epoch == start_epoch else 0.0
        _report_epoch(learner, meta | {"epoch": epoch, "metrics": metrics}, loop, tracker, rank)
        hooks.on_epoch_end(epoch, rank, metrics)
    tracker.finish()


def _worker_learner(loop: LoopConfig, device: torch.device, rank: int) -> tuple[Learner, int]:
    """The DDP-wrapped learner of this worker and the first epoch to train (after a restore);
    each rank draws its augmentation from its own seeded generator."""
    import ray.train.torch

    cfg = loop.cfg
    learner = Learner(
        cfg,
        num_classes=len(loop.meta["labels"]),
        norm=norm_stats(loop.meta),
        steps_per_epoch=loop.rows_per_worker // loop.local_batch,
        device=device,
        wrap=ray.train.torch.prepare_model,
        seed=cfg.train.seed + 1000 * rank,
    )
    restored = _restore(loop.resume)
    if restored is None:
        return learner, 1
    learner.load_state_dict(restored)
    return learner, int(restored.get("epoch", 0)) + 1


def _train_epoch(
    learner: Learner,
    train_batches: Any,
    val_batches: Any,
    epoch: int,
    hooks: TrainHooks,
    ranks: tuple[int, int],
) -> dict:
    """One epoch of training (and validation when there is a group): its metrics and timings."""
    rank, world = ranks
    started, started_at = time.perf_counter(), time.time()
    first_batch: list[float] = []

    def on_batch(index: int, batch: tuple) -> None:
        if index == 0:
            first_batch.append(time.perf_counter() - started)
        hooks.on_batch(epoch, index, rank, batch[2])

    loss_sum, count = learner.train_epoch(train_batches.epoch(epoch), on_batch)
    train_s = time.perf_counter() - started
    metrics = {
        "epoch": epoch,
        "step": learner.step,
        "lr": learner.lr(learner.step - 1),
        "train_loss": _mean_over_ranks(loss_sum, count, learner.device),
    }
    if val_batches is not None:
        _sync_batch_norm(learner.model, world)
        val = learner.evaluate(val_batches())
        metrics |= {f"val_{k}": val[k] for k in ("loss", "accuracy", "uar", "macro_f1", "n")}
    return metrics | {
        "train_epoch_s": train_s,
        "first_batch_s": first_batch[0] if first_batch else 0.0,
        "epoch_s": time.perf_counter() - started,
        "epoch_started_at": started_at,
        "world_size": world,
        "epoch_samples": count * world,
    }


# ----------------------------------------------------------------------------------------------
# The driver


def _copy_checkpoint(checkpoint: Any, dest: str) -> None:
    """Copy a Ray checkpoint folder to ``dest``, replacing what is there."""
    import pyarrow.fs as pafs

    fs, path = storage.resolve(dest)
    if storage.is_remote(dest):
        # File by file, meta.json last, stale files after: never a moment without a checkpoint.
        storage.replace_folder(checkpoint.filesystem, checkpoint.path, dest, last=(META_FILE,))
        return
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    fs.create_dir(tmp, recursive=True)
    pafs.copy_files(checkpoint.path, tmp, checkpoint.filesystem, fs)
    storage.delete_dir(dest)
    fs.move(tmp, path)


def _check_resume(cfg: TrainConfig, manifest: dict, test: tuple[int, ...]) -> dict:
    meta = load_meta(cfg.resume)
    state = load_train_state(cfg.resume)
    if state is None:
        raise ValueError(f"{cfg.resume}: no train_state.pt, so training cannot resume from it")
    present = manifest_groups(manifest)
    for group, wanted in model_groups(meta).items():
        if group in present and wanted != present[group]["hash"]:
            raise ValueError(
                f"{cfg.resume}: checkpoint expects {group} features with hash {wanted}, "
                f"{cfg.data} has {present[group]['hash']}"
            )
    check_groups(cfg.data, manifest, model_groups(meta))
    if tuple(meta["split"]["test"]) != test or meta["label_set"] != spec_name(cfg.labels):
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


CHECKPOINT_ORDER = {"val_uar": "max", "val_loss": "min"}


def model_selection(split: ActorSplit, metric: str) -> str:
    """How the kept checkpoint is chosen, in words (recorded in ``metrics.json``)."""
    if not split.val:
        return "fixed schedule: last epoch (no validation group; every non-test actor trains)"
    return f"best epoch by {metric} on validation actors {list(split.val)}"


def kept_checkpoint(result: Any, cfg: TrainConfig, has_val: bool) -> tuple[Any, dict]:
    """The kept checkpoint: the last epoch without validation, else the best by the metric
    (ties: the other metric, then the later epoch)."""
    kept = [(c, m) for c, m in (result.best_checkpoints or []) if c is not None and m]
    if not kept:
        raise RuntimeError(f"training reported no checkpoint (run folder {result.path})")
    metric = cfg.train.checkpoint_metric

    def rank(cm: tuple[Any, dict]) -> tuple[float, ...]:
        m = cm[1]
        if not has_val:
            return (m["epoch"],)
        if metric == "val_loss":
            return (-m["val_loss"], m["val_uar"], m["epoch"])
        return (m["val_uar"], -m["val_loss"], m["epoch"])

    return max(kept, key=rank)


def _trainer(cfg: TrainConfig, data: SplitData, loop: LoopConfig, root: str) -> Any:
    """The TorchTrainer: equal training shards per rank, validation read whole by every rank."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    datasets = {f"train_{r}": shard for r, shard in enumerate(data.shards)}
    if data.val is not None:
        datasets["val"] = data.val
    fs, storage_path = storage.resolve(root)
    has_val = loop.has_val
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"loop": loop},
        scaling_config=ScalingConfig(
            num_workers=cfg.train.num_workers,
            use_gpu=cfg.train.use_gpu,
            resources_per_worker={"CPU": cfg.train.cpus_per_worker},
        ),
        datasets=datasets,
        # Ray splits nothing: the train shards are made above; validation is read whole by
        # every rank, which scores its share by path hash (equal splits would drop rows).
        dataset_config=DataConfig(datasets_to_split=[]),
        run_config=RunConfig(
            name=loop.name,
            storage_path=storage_path,
            storage_filesystem=fs if storage.is_remote(root) else None,
            checkpoint_config=CheckpointConfig(
                num_to_keep=cfg.train.num_to_keep,
                checkpoint_score_attribute=cfg.train.checkpoint_metric if has_val else None,
                checkpoint_score_order=CHECKPOINT_ORDER[cfg.train.checkpoint_metric],
            ),
            failure_config=FailureConfig(max_failures=cfg.train.max_failures),
        ),
    )


def _loop_config(
    cfg: TrainConfig,
    data: SplitData,
    meta: dict,
    run_path: str,
    name: str,
    hooks: TrainHooks | None,
) -> LoopConfig:
    """What every worker gets: the config, the checkpoint meta, its share and batch size."""
    local_batch = max(1, min(cfg.optim.batch_size // cfg.train.num_workers, data.rows_per_worker))
    return LoopConfig(
        cfg=cfg,
        meta=meta,
        rows_per_worker=data.rows_per_worker,
        local_batch=local_batch,
        in_memory=data.in_memory,
        has_val=data.val is not None,
        label_table=tuple(data.labels.code_table(manifest_emotions(data.manifest))),
        run_path=run_path,
        name=name,
        hooks=hooks or TrainHooks(),
    )


def _run_meta(cfg: TrainConfig, data: SplitData, name: str) -> dict:
    """The checkpoint meta of this run: the resumed checkpoint's normalisation statistics, or
    ones computed on the training actors (streamed, one pass per feature group)."""
    split = data.split
    resumed = _check_resume(cfg, data.manifest, split.test) if cfg.resume else None
    if resumed is not None:
        norm = norm_stats(resumed)
    else:
        norm = group_stats(data.train_batches, cfg.model.inputs)
    parts = {"train": split.train, "val": split.val, "test": split.test}
    by_speaker = {"speaker_norm": data.speaker_norm} if data.speaker_norm else {}
    return make_meta(cfg, data.manifest, norm, parts, run=name, **by_speaker)


def _report_facts(
    cfg: TrainConfig, meta: dict, data: SplitData, best_epoch: int, history: list[dict]
) -> dict:
    """The run's own ``metrics.json`` keys: split, model, recipe, how the checkpoint was kept."""
    split = data.split
    return {
        "val_actors": list(split.val),
        "train_actors": list(split.train),
        "label_set": spec_name(cfg.labels),
        "model": meta["model"],
        "recipe": cfg.recipe,
        "model_selection": model_selection(split, cfg.train.checkpoint_metric),
        "best_epoch": best_epoch,
        "epochs": [int(h["epoch"]) for h in history],
        "feature_hash": manifest_groups(data.manifest)["logmel"]["hash"],
    }


RAY_RUN_SNAPSHOT = "checkpoint_manager_snapshot.json"
"""What Ray Train (V2) leaves in ``<storage_path>/<name>/`` once a checkpoint was reported
(``CHECKPOINT_MANAGER_SNAPSHOT_FILENAME``): a trainer with the same name and storage restores
it, and its workers start from the latest checkpoint (``ray.train.get_checkpoint``)."""


def _log_continuation(run_path: str, resume: str | None) -> None:
    """Say when this run continues an interrupted one of the same ``run_dir`` and ``name``."""
    if storage.exists(storage.join(run_path, RAY_RUN_SNAPSHOT)):
        done = [int(h["epoch"]) for h in read_history(run_path)]
        log.info(
            "continuing %s from its last checkpoint (epochs recorded: %s)%s",
            run_path, done[-1] if done else "none",
            f"; its checkpoint wins over resume={resume}" if resume else "",
        )  # fmt: skip


def _fit_and_keep(
    cfg: TrainConfig, data: SplitData, loop: LoopConfig, root: str
) -> tuple[dict, str]:
    """Run the Ray Train job; copy the checkpoint it keeps to ``<run>/checkpoint``.

    Returns:
        ``(the kept checkpoint's metrics, its folder)``.
    """
    trainer = _trainer(cfg, data, loop, root)
    # One console line per epoch, from history.jsonl (rank 0 appends to it every epoch).
    with follow_epochs(lambda: read_history(loop.run_path), cfg.optim.epochs):
        result = trainer.fit()
    best, best_metrics = kept_checkpoint(result, cfg, has_val=data.val is not None)
    checkpoint_uri = storage.join(loop.run_path, CHECKPOINT_DIR)
    _copy_checkpoint(best, checkpoint_uri)
    return best_metrics, checkpoint_uri


def run(cfg: TrainConfig, hooks: TrainHooks | None = None) -> TrainResult:
    """Train, keep one checkpoint chosen without the test actors, report val and test metrics.

    A rerun into the ``run_dir``/``name`` of an interrupted run continues it (module docstring).

    Args:
        cfg: the ``knd train`` config.
        hooks: callbacks run inside each worker (see :class:`TrainHooks`).

    Raises:
        ValueError: bad data or split (missing manifest, unknown actors), or a checkpoint to
            resume from that does not fit.
        ray.train.TrainingFailedError: training failed more often than ``train.max_failures``.
    """
    from knd.runtime.cluster import init_ray

    init_ray(cfg.ray)
    name = cfg.name or f"{cfg.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    root = storage.absolute(cfg.run_dir)
    run_path = storage.join(root, name)

    data = load_split(cfg)
    split = data.split
    meta = _run_meta(cfg, data, name)
    storage.write_text(storage.join(run_path, CONFIG_FILE), yaml.safe_dump(scrub(to_dict(cfg))))
    selection = model_selection(split, cfg.train.checkpoint_metric)
    log.info(
        "training %s (%s) on %d clips of actors %s; %s; testing on %s -> %s",
        name, cfg.model.name, data.num_train_rows, list(split.train), selection,
        list(split.test), run_path,
    )  # fmt: skip

    _log_continuation(run_path, cfg.resume)
    loop = _loop_config(cfg, data, meta, run_path, name, hooks)
    best_metrics, checkpoint_uri = _fit_and_keep(cfg, data, loop, root)

    history = read_history(run_path)
    report = score_and_report(
        run_path,
        checkpoint_uri,
        cfg.data,
        split.test,
        split.val,
        facts=_report_facts(cfg, meta, data, int(best_metrics["epoch"]), history),
        config=scrub(to_dict(cfg)),
        history=history,
        title=f"knd train: {name}",
    )
    test = report["test"]
    log.info(
        "kept epoch %d (%s): test accuracy %.3f, UAR %.3f, macro-F1 %.3f; report in %s",
        best_metrics["epoch"], selection, test["accuracy"], test["uar"], test["macro_f1"], run_path,
    )  # fmt: skip
    return TrainResult(
        run_dir=run_path,
        checkpoint=checkpoint_uri,
        metrics=report,
        history=history,
        best_epoch=int(best_metrics["epoch"]),
    )
