"""``knd tune``: hyperparameter search with Ray Tune, every configuration scored by actor folds.

How the pieces fit (see docs/guides/tuning.md for the reasoning):

- The test actors (``test_actors``) are removed before anything else: their clips are never loaded
  while the search runs, so no trial (and no normalisation statistic) can see them.
- The remaining actors form K actor-disjoint folds (:func:`knd.data.ravdess.actor_folds`).
- One Tune trial is one configuration. Inside it, K models (one per fold) train side by side:
  each epoch trains every fold's model one more epoch, scores it on its held-out actors, and
  reports the mean validation UAR over the folds (``uar``), its standard deviation over the folds
  (``uar_std``, population) and every fold's score (``uar_fold_1``...). ASHA compares trials on that
  cross-validated score at equal epochs (``time_attr="epoch"``).
- Every epoch's report carries a checkpoint with every fold's model and optimiser state, so a
  search whose driver was killed resumes (``knd tune resume=PATH``, ``Tuner.restore``) and each
  unfinished trial continues from its last epoch; finished trials are not rerun.
- After the search the best configuration is retrained on all non-test actors for its number of
  epochs, evaluated once on the test actors, and written beside the experiment
  (``best_result.json``, ``best_config.yaml``, ``best/checkpoint``).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from knd.config.loading import to_dict
from knd.config.schema import TrainConfig, TuneConfig
from knd.data import storage
from knd.data.label_sets import LabelSet
from knd.learning.engine import ArrayBatches, Learner, ordered_batches, row_stats
from knd.learning.experiment import (
    BEST_DIR,
    best_row,
    experiment_groups,
    experiment_label_set,
    load_experiment,
    open_experiment,
    speaker_norm_prior_clips,
    stored_base,
    trial_rows,
    trial_train_config,
    write_best,
)
from knd.learning.metrics import fold_summary
from knd.learning.postfit import score_and_report
from knd.learning.search_space import check_search, param_space
from knd.runtime.console import is_verbose, tune_callback
from knd.runtime.tracking import wandb_callbacks

log = logging.getLogger(__name__)

TRIAL_MAX_FAILURES = 2
"""Restarts of a trial from its last checkpoint after its worker or node died."""

FOLDS_FILE = "folds.pt"


@dataclass(frozen=True)
class TuneResult:
    """Where the experiment is and what the search found."""

    experiment: str
    num_trials: int
    best: dict | None
    test: dict | None
    exit_code: int = 0


# ----------------------------------------------------------------------------------------------
# One configuration, K fold models trained side by side


class FoldModel:
    """One model of a trial, trained by the engine on some rows of the trial's data.

    Normalisation statistics come from its training rows only.

    Args:
        cfg: the trial's train config.
        data: the trial's columns as tensors on ``device``: its input groups and ``label``.
        train_rows: row indices this model trains on.
        val_rows: row indices it is scored on (none for a final retrain).
        seed: the model's seed (initialisation and shuffling).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        data: dict[str, torch.Tensor],
        train_rows: np.ndarray,
        val_rows: np.ndarray,
        device: torch.device,
        seed: int,
        num_classes: int,
    ):
        if len(train_rows) == 0:
            raise ValueError("a fold has no training clips")
        self.train_rows, self.val_rows = train_rows, val_rows
        inputs = {g: data[g] for g in cfg.model.inputs}
        labels = data["label"]
        rows = torch.as_tensor(train_rows, device=labels.device)
        norm = row_stats(inputs, rows)
        torch.manual_seed(seed)
        self.batches = ArrayBatches(inputs, labels, cfg.optim.batch_size, seed, rows=rows)
        self.learner = Learner(cfg, num_classes, norm, self.batches.steps, device, seed=seed)
        val = torch.as_tensor(val_rows, device=labels.device, dtype=torch.long)
        self.val = ({g: v[val] for g, v in inputs.items()}, labels[val])

    def train_epoch(self, epoch: int) -> float:
        """One pass over the training rows (shuffled by seed and epoch); the mean loss."""
        loss_sum, count = self.learner.train_epoch(self.batches.epoch(epoch))
        return loss_sum / max(1, count)

    def validate(self) -> dict:
        """Accuracy, UAR, macro-F1, loss and confusion on the held-out rows."""
        return self.learner.evaluate(ordered_batches(*self.val))

    def state_dict(self) -> dict:
        return self.learner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.learner.load_state_dict(state)


def trial_tensors(
    data: dict[str, np.ndarray], cfg: TrainConfig, device: torch.device
) -> dict[str, torch.Tensor]:
    """The trial's feature groups and label ids as tensors on ``device`` (one copy for all
    folds), keyed by feature group (``logmel``, ``prosody``...) and ``label``."""
    prefix = "speaker:" if cfg.normalise == "speaker" else ""
    columns = {g: data[prefix + g] for g in cfg.model.inputs}
    return {g: torch.tensor(v, device=device) for g, v in columns.items()} | {
        "label": torch.as_tensor(data["label"], device=device, dtype=torch.long)
    }


class CrossValidation:
    """K fold models of one configuration, advanced one epoch at a time."""

    def __init__(
        self,
        cfg: TrainConfig,
        data: dict[str, np.ndarray],
        folds: list[list[int]],
        device: torch.device,
        num_classes: int,
    ):
        actor = data["actor"]
        tensors = trial_tensors(data, cfg, device)
        self.models = []
        for i, fold in enumerate(folds):
            held_out = np.isin(actor, fold)
            if not held_out.any():
                raise ValueError(f"fold of actors {list(fold)} has no clips")
            rows, val = np.flatnonzero(~held_out), np.flatnonzero(held_out)
            seed = cfg.train.seed + i
            self.models.append(FoldModel(cfg, tensors, rows, val, device, seed, num_classes))
        self.epochs, self.epoch = cfg.optim.epochs, 0

    def run_epoch(self) -> dict:
        """Train every fold's model one epoch, then score each on its held-out actors."""
        started = time.perf_counter()
        scores = []
        for model in self.models:
            loss = model.train_epoch(self.epoch + 1)
            scores.append(model.validate() | {"train_loss": loss})
        self.epoch += 1
        out = fold_summary(scores)
        return out | {
            "epoch": self.epoch,
            "epochs_planned": self.epochs,
            "epoch_s": time.perf_counter() - started,
        }

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "folds": [m.state_dict() for m in self.models]}

    def load_state_dict(self, state: dict) -> None:
        for model, fold_state in zip(self.models, state["folds"], strict=True):
            model.load_state_dict(fold_state)
        self.epoch = int(state["epoch"])


def _trial_device(cpus: float) -> torch.device:
    import ray

    if torch.cuda.is_available() and ray.get_gpu_ids():
        return torch.device("cuda")  # Ray set CUDA_VISIBLE_DEVICES to this trial's GPU
    torch.set_num_threads(max(1, int(cpus)))
    return torch.device("cpu")


def cross_validation_trial(config: dict, data: dict[str, np.ndarray], meta: dict) -> None:
    """The Tune trainable: one configuration, K folds, one report (and checkpoint) per epoch.

    Args:
        config: the sampled search-space keys.
        data: the input groups' columns and ``emotion, actor, path``, of the non-test actors only.
        meta: the experiment description (base train configs, folds, max_epochs...).
    """
    from ray import tune

    from knd.learning.checkpoint import load_tensors

    cfg = trial_train_config(config, meta)
    device = _trial_device(meta["cpus_per_trial"])
    torch.manual_seed(cfg.train.seed)
    cv = CrossValidation(cfg, data, meta["folds"], device, len(experiment_label_set(meta).names))
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            cv.load_state_dict(load_tensors(os.path.join(folder, FOLDS_FILE), device))
        log.info("trial resumes after epoch %d of %d", cv.epoch, cv.epochs)
    # What this trial was given, so anyone can check that no test actor reached it.
    actors = ",".join(str(int(a)) for a in np.unique(data["actor"]))
    while cv.epoch < cv.epochs:
        metrics = cv.run_epoch() | {"actors": actors}
        with tempfile.TemporaryDirectory() as folder:
            torch.save(cv.state_dict(), os.path.join(folder, FOLDS_FILE))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def retrain(params: dict, data: dict[str, np.ndarray], meta: dict, cpus: float) -> dict:
    """Train one model of ``params`` on every row of ``data`` (all non-test actors).

    Returns:
        ``{"model": CPU state dict, "norm": {"mean", "std"}, "epochs", "train_s"}``.
    """
    cfg = trial_train_config(params, meta)
    device = _trial_device(cpus)
    torch.manual_seed(cfg.train.seed)
    started = time.perf_counter()
    every_row = np.arange(len(data["actor"]))
    tensors = trial_tensors(data, cfg, device)
    num_classes = len(experiment_label_set(meta).names)
    model = FoldModel(cfg, tensors, every_row, every_row[:0], device, cfg.train.seed, num_classes)
    for epoch in range(1, cfg.optim.epochs + 1):
        model.train_epoch(epoch)
    state = {k: v.detach().cpu() for k, v in model.learner.model.state_dict().items()}
    return {
        "model": state,
        "norm": model.learner.norm_stats,
        "epochs": cfg.optim.epochs,
        "train_s": time.perf_counter() - started,
    }


# ----------------------------------------------------------------------------------------------
# The driver


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"  # Tune's default name holds every parameter: too long


def load_columns(
    data: str,
    actors: list[int],
    groups: dict[str, str],
    labels: LabelSet,
    prior_clips: float | None = None,
) -> dict[str, np.ndarray]:
    """The columns trials train on (every feature group of ``groups``, a ``{group: hash}``,
    under its name, plus ``label`` (class ids of ``labels``), ``emotion, actor, path``) of
    ``actors`` and the labels kept only: a trial whose configuration reads fewer groups takes
    what it needs.

    With ``prior_clips``, each group also standardised per speaker, under ``speaker:<group>``
    (:mod:`knd.learning.speaker_norm`, from every clip of each speaker, labels unread; the prior
    pools every tuning speaker, the validation folds' too, without labels), and the prior under
    ``speaker_prior`` (a JSON string) for the retrained checkpoint.
    """
    from knd.data.datasets import load_features, read_manifest
    from knd.data.shards import manifest_emotions
    from knd.learning.speaker_norm import kept_rows, speaker_normalised

    emotions = manifest_emotions(read_manifest(data) or {})
    codes = labels.kept_codes(emotions)
    by_speaker: dict[str, np.ndarray] = {}
    if prior_clips is None:
        table = load_features(data, actors=actors, groups=groups, emotions=codes)
    else:
        table = load_features(data, actors=actors, groups=groups)
        normed, prior = speaker_normalised(table, list(groups), None, prior_clips)
        keep = np.isin(table.emotion, codes)
        table, normed = kept_rows(table, keep), kept_rows(normed, keep)
        by_speaker = {f"speaker:{g}": v for g, v in normed.groups.items()}
        by_speaker["speaker_prior"] = np.asarray(json.dumps(prior))
    if len(table) == 0:
        raise ValueError(f"{data}: no clips of actors {actors} with labels {list(labels.names)}")
    targets = labels.targets(table.emotion, emotions)
    columns = {"label": targets, "emotion": table.emotion, "actor": table.actor}
    return table.inputs() | by_speaker | columns | {"path": table.path}


def search_algorithm(cfg: TuneConfig, space: dict, where: str) -> tuple[Any, int | None]:
    """The search algorithm of ``cfg.search`` and the ``max_concurrent_trials`` Tune should get.

    Raises:
        ConfigError: grid keys with ``search=optuna`` (TPE samples; it cannot enumerate a grid).
    """
    check_search(cfg.search, space, where)
    if cfg.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(seed=cfg.seed), cfg.max_concurrent or None
    from ray.tune.search import BasicVariantGenerator

    # Tune ignores max_concurrent_trials when given a generator instance: it limits itself.
    return BasicVariantGenerator(random_state=cfg.seed, max_concurrent=cfg.max_concurrent), None


def _search(cfg: TuneConfig, meta: dict, data: dict, experiment: str) -> None:
    """Run (or finish) the Tune experiment at ``experiment``."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    trainable = tune.with_resources(
        tune.with_parameters(cross_validation_trial, data=data, meta=meta),
        {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial},
    )
    fs, fs_path = storage.resolve(experiment)
    remote_fs = fs if storage.is_remote(experiment) else None
    callbacks = [*wandb_callbacks(cfg.wandb, experiment), tune_callback(cfg.metric, cfg.max_epochs)]
    # A search killed before Tune wrote its state (only knd_tune.json exists) starts afresh.
    if cfg.resume and tune.Tuner.can_restore(fs_path, storage_filesystem=remote_fs):
        log.info("resuming the search at %s", experiment)
        tuner = tune.Tuner.restore(
            fs_path, trainable=trainable, resume_errored=True, storage_filesystem=remote_fs
        )
        tuner.fit()
        return
    bases = {name: stored_base(tree, name) for name, tree in meta["bases"].items()}
    space = param_space(meta["space"], bases, meta["recipe"], meta["space_file"])
    search_alg, limit = search_algorithm(cfg, space, meta["space_file"])
    scheduler = ASHAScheduler(
        time_attr="epoch",
        max_t=cfg.max_epochs,
        grace_period=max(1, min(cfg.grace_epochs, cfg.max_epochs)),
        reduction_factor=cfg.reduction_factor,
    )
    parent, name = fs_path.rsplit("/", 1)
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            metric=cfg.metric,
            mode="max",
            search_alg=search_alg,
            scheduler=scheduler,
            num_samples=cfg.num_samples,
            max_concurrent_trials=limit,
            trial_dirname_creator=_trial_dirname,
            # A trial's process (torch, the fold data) serves the next trial: no start-up each.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=parent,
            storage_filesystem=remote_fs,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            # A trial whose node is lost (or whose process dies) restarts from its last
            # checkpoint elsewhere, a bounded number of times, instead of ending in ERROR.
            failure_config=tune.FailureConfig(max_failures=TRIAL_MAX_FAILURES),
            callbacks=callbacks,
            verbose=2
            if is_verbose(cfg.ray.verbose)
            else 0,  # knd's lines (knd.runtime.console) instead
        ),
    )
    tuner.fit()


def retrain_best(
    cfg: TuneConfig, meta: dict, best: dict, data_ref: Any, experiment: str, prior=None
) -> dict:
    """Retrain the best configuration on all non-test actors; score it once on the test actors.

    Writes ``best/checkpoint`` (usable by ``knd evaluate`` and ``knd score``), ``best/metrics.json``
    and ``best/confusion.png``, and returns the test metrics.
    """
    import ray

    params = best["params"]
    # The search is over, so the one retrain may use every free CPU of a node, not a trial's share.
    alive = [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")]
    free = ray.available_resources().get("CPU", 0.0)
    cpus = max(cfg.cpus_per_trial, float(int(min(max(alive, default=0.0), free))))
    task = ray.remote(num_cpus=cpus, num_gpus=cfg.gpus_per_trial)(retrain)
    trained = ray.get(task.remote(params, data_ref, meta, cpus))
    train_cfg = trial_train_config(params, meta)
    checkpoint = _save_retrained(cfg, meta, train_cfg, trained, experiment, prior)
    # The test actors are read only now, after the search, and scored exactly once.
    facts = {"train_actors": meta["train_actors"], "epochs": trained["epochs"]}
    report = score_and_report(
        storage.join(experiment, BEST_DIR), checkpoint, cfg.data, meta["test_actors"], facts=facts
    )
    return report["test"] | {"checkpoint": checkpoint, "train_s": trained["train_s"]}


def _save_retrained(
    cfg: TuneConfig, meta: dict, train_cfg: TrainConfig, trained: dict, experiment: str, prior
) -> str:
    """Write the retrained model to ``best/checkpoint`` (with the meta of the features it trained
    on); its folder."""
    from knd.data.datasets import read_manifest
    from knd.learning.checkpoint import make_meta, save_checkpoint
    from knd.learning.models import build_from_spec
    from knd.learning.speaker_norm import speaker_norm_meta

    labels = list(experiment_label_set(meta).names)
    by_speaker = {}
    if train_cfg.normalise == "speaker":
        inputs, clips = train_cfg.model.inputs, speaker_norm_prior_clips(meta)
        by_speaker = {"speaker_norm": speaker_norm_meta(inputs, prior, clips)}
    model = build_from_spec(to_dict(train_cfg.model), len(labels), trained["norm"])
    model.load_state_dict(trained["model"])
    ckpt_meta = make_meta(
        train_cfg,
        read_manifest(cfg.data),  # the features it trained on (checked by open_experiment)
        trained["norm"],
        {"train": meta["train_actors"], "test": meta["test_actors"]},
        run=f"{experiment.rstrip('/').rsplit('/', 1)[-1]}/best",
        epoch=trained["epochs"],
        metrics={},
        **by_speaker,
    )
    checkpoint = storage.join(experiment, BEST_DIR, "checkpoint")
    save_checkpoint(checkpoint, model, ckpt_meta)
    return checkpoint


def run(cfg: TuneConfig) -> TuneResult:
    """Search, pick the best configuration by mean fold score, retrain it and test it once.

    Raises:
        ConfigError: neither ``data`` nor ``resume``, or a bad search space.
        ValueError: no prepared features, an experiment folder that already exists, or too few
            actors for the folds.
    """
    import ray

    from knd.runtime.cluster import init_ray

    cfg, meta, experiment = open_experiment(cfg)
    log.info(
        "searching %s: test actors %s set aside; %d folds %s; %d samples x %d epochs -> %s",
        meta["space_file"], meta["test_actors"], len(meta["folds"]), meta["folds"],
        cfg.num_samples, cfg.max_epochs, experiment,
    )  # fmt: skip
    init_ray(cfg.ray)
    # Only the non-test actors are ever loaded while the search runs.
    labels = experiment_label_set(meta)
    groups, prior_clips = experiment_groups(meta), speaker_norm_prior_clips(meta)
    data = load_columns(cfg.data, meta["train_actors"], groups, labels, prior_clips)
    started = time.time()
    _search(cfg, meta, data, experiment)
    search_s = time.time() - started

    rows = trial_rows(load_experiment(experiment), meta)
    best = best_row(rows, cfg.metric)
    if best is None:
        log.error("no trial reported a score; see the trial errors under %s", experiment)
        return TuneResult(experiment, len(rows), None, None, exit_code=1)
    prior = json.loads(str(data["speaker_prior"])) if "speaker_prior" in data else None
    data_ref = ray.put(data)
    test = retrain_best(cfg, meta, best, data_ref, experiment, prior) if cfg.retrain_best else None
    write_best(
        cfg, meta, best, experiment, {"test": test, "num_trials": len(rows), "search_s": search_s}
    )
    log.info(
        "best of %d trials %s: fold %s %.3f +- %.3f%s; results in %s",
        len(rows), best["trial_id"], cfg.metric, best[cfg.metric], best[f"{cfg.metric}_std"],
        "" if test is None else f"; test UAR {test['uar']:.3f}, accuracy {test['accuracy']:.3f}",
        experiment,
    )  # fmt: skip
    return TuneResult(experiment, len(rows), best, test)
