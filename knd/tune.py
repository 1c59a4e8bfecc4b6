"""``knd tune``: hyperparameter search with Ray Tune, every configuration scored by actor folds.

How the pieces fit (see docs/guides/tuning.md for the reasoning):

- The test actors (``test_actors``) are removed before anything else: their clips are never loaded
  while the search runs, so no trial (and no normalisation statistic) can see them.
- The remaining actors form K actor-disjoint folds (:func:`knd.ravdess.actor_folds`).
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
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from knd import storage
from knd.config import (
    ConfigError,
    TrainConfig,
    TuneConfig,
    build,
    config_dir,
    load_config,
    load_yaml,
    replace,
    to_dict,
)
from knd.console import is_verbose, tune_callback
from knd.dataset import check_groups, group_column, manifest_groups
from knd.engine import ArrayBatches, Learner, band_stats, ordered_batches
from knd.experiment import (
    BEST_CONFIG_FILE,
    BEST_DIR,
    BEST_RESULT_FILE,
    META_FILE,
    best_row,
    best_train_config,
    load_experiment,
    read_meta,
    stored_base,
    trial_rows,
    trial_train_config,
)
from knd.ravdess import actor_folds, emotion_to_label_table, label_names

log = logging.getLogger(__name__)

FOLDS_FILE = "folds.pt"
SPACE_SECTIONS = ("model.", "optim.", "augment.")
SPACE_KEYS = ("recipe", "train.seed")


@dataclass(frozen=True)
class TuneResult:
    """Where the experiment is and what the search found."""

    experiment: str
    num_trials: int
    best: dict | None
    test: dict | None
    exit_code: int = 0


# ----------------------------------------------------------------------------------------------
# Search spaces: YAML of knd train keys -> Ray Tune domains


def space_path(space: str) -> str:
    """``space`` as given, else relative to the project (``configs/tune/x.yaml``), else a name."""
    candidates = [Path(space), config_dir().parent / space, config_dir() / "tune" / f"{space}.yaml"]
    for path in candidates:
        if path.is_file():
            return str(path)
    known = sorted(p.stem for p in (config_dir() / "tune").glob("*.yaml"))
    raise ConfigError(f"space: search space {space!r} not found (shipped: {known})")


def _typed(base: TrainConfig, key: str, value: Any, where: str) -> Any:
    """``value`` coerced by the train schema at ``key`` (so ``1e-3`` strings become floats)."""
    try:
        cfg = replace(base, **{key: value})
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def param_space(space: dict, bases: dict[str, TrainConfig], recipe: str, where: str) -> dict:
    """Ray Tune's ``param_space`` from a space mapping, every key and value checked.

    Args:
        space: ``{dotted train key: value | {type: loguniform|uniform|randint, low, high} |
            {choice: [...]} | {grid: [...]}}``.
        bases: the base train config of every recipe the space may pick.
        recipe: the recipe of trials whose space does not pick one.
        where: the space file, for error messages.

    Raises:
        ConfigError: a key outside ``recipe``/``train.seed``/``model.*``/``optim.*``/``augment.*``,
            a value the train schema rejects, or a malformed distribution.
    """
    from ray import tune

    out: dict[str, Any] = {}
    # Fixed values hold for every trial: the other keys are checked against a base that has them
    # (model.groups is only valid once model.name says which architecture reads the groups).
    fixed = {
        k: v
        for k, v in space.items()
        if not isinstance(v, dict) and (k in SPACE_KEYS or k.startswith(SPACE_SECTIONS))
    }
    fixed.pop("recipe", None)
    try:
        base = replace(bases[recipe], **fixed)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    for key, spec in space.items():
        here = f"{where}: {key}"
        if key not in SPACE_KEYS and not key.startswith(SPACE_SECTIONS):
            raise ConfigError(f"{here}: not searchable (allowed: recipe, train.seed, model.*, "
                              "optim.*, augment.*)")  # fmt: skip

        def check(value: Any, key: str = key, here: str = here) -> Any:
            if key == "recipe":
                if value not in bases:
                    raise ConfigError(f"{here}: unknown recipe {value!r}")
                return value
            return _typed(base, key, value, here)

        if not isinstance(spec, dict):
            out[key] = check(spec)
            continue
        if set(spec) in ({"choice"}, {"grid"}):
            (kind, values), = spec.items()  # fmt: skip
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{here}: {kind} needs a non-empty list")
            values = [check(v) for v in values]
            out[key] = tune.choice(values) if kind == "choice" else tune.grid_search(values)
            continue
        kind = spec.get("type")
        if kind not in ("uniform", "loguniform", "randint") or set(spec) != {"type", "low", "high"}:
            raise ConfigError(
                f"{here}: expected a value, {{choice: [..]}}, {{grid: [..]}} or "
                f"{{type: uniform|loguniform|randint, low: A, high: B}}, got {spec!r}"
            )
        low, high = check(spec["low"]), check(spec["high"])
        if not low < high or (kind == "loguniform" and low <= 0):
            raise ConfigError(f"{here}: need 0 < low < high for {kind}, got {low}, {high}")
        if kind == "randint":
            out[key] = tune.randint(int(low), int(high))
        else:
            out[key] = getattr(tune, kind)(float(low), float(high))
    return out


def space_groups(space: dict, bases) -> list[str]:
    """Every feature group a trial of ``space`` (on one of the ``bases``) may read."""
    groups = {g for base in bases for g in base.model.groups}
    spec = space.get("model.groups")
    values = next(iter(spec.values())) if isinstance(spec, dict) else [spec] if spec else []
    for value in values:
        groups.update(value if isinstance(value, list | tuple) else [value])
    return sorted(groups, key=("logmel", "prosody", "egemaps").index)


def space_recipes(space: dict, recipe: str) -> list[str]:
    """Every recipe a trial of ``space`` may build on."""
    spec = space.get("recipe", recipe)
    if isinstance(spec, dict):
        values = next(iter(spec.values()))
        return sorted({str(v) for v in values}) if isinstance(values, list) else [recipe]
    return [str(spec)]


# ----------------------------------------------------------------------------------------------
# One configuration, K fold models trained side by side


class FoldModel:
    """One model of a trial, trained by the engine on some rows of the trial's data.

    Normalisation statistics come from its training rows only.

    Args:
        cfg: the trial's train config.
        data: the trial's columns as tensors on ``device`` (``features``, ``label``).
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
    ):
        if len(train_rows) == 0:
            raise ValueError("a fold has no training clips")
        self.train_rows, self.val_rows = train_rows, val_rows
        inputs = {g: data[group_column(g)] for g in cfg.model.groups}
        labels = data["label"]
        rows = torch.as_tensor(train_rows, device=labels.device)
        norm = {}
        for group, values in inputs.items():
            chunks = (values[rows[i : i + 256]].cpu().numpy() for i in range(0, len(rows), 256))
            mean, std = band_stats(chunks)
            norm[group] = {"mean": mean, "std": std}
        torch.manual_seed(seed)
        self.batches = ArrayBatches(inputs, labels, cfg.optim.batch_size, seed, rows=rows)
        self.learner = Learner(cfg, len(label_names(cfg.labels)), norm, self.batches.steps, device)
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
    folds), keyed by shard column (``features``, ``prosody``...) and ``label``."""
    table = np.asarray(emotion_to_label_table(cfg.labels))
    columns = [group_column(g) for g in cfg.model.groups]
    return {c: torch.tensor(data[c], device=device) for c in columns} | {
        "label": torch.as_tensor(table[data["emotion"]], device=device, dtype=torch.long)
    }


def fold_summary(scores: list[dict]) -> dict:
    """Mean and (population) standard deviation over folds, plus every fold's UAR."""
    out: dict[str, float] = {}
    for key in ("uar", "accuracy", "macro_f1"):
        values = np.array([s[key] for s in scores], dtype=np.float64)
        out[key], out[f"{key}_std"] = float(values.mean()), float(values.std())
    out |= {f"uar_fold_{i}": float(s["uar"]) for i, s in enumerate(scores, start=1)}
    out["val_loss"] = float(np.mean([s["loss"] for s in scores]))
    out["train_loss"] = float(np.mean([s["train_loss"] for s in scores]))
    return out


class CrossValidation:
    """K fold models of one configuration, advanced one epoch at a time."""

    def __init__(
        self,
        cfg: TrainConfig,
        data: dict[str, np.ndarray],
        folds: list[list[int]],
        device: torch.device,
    ):
        actor = data["actor"]
        tensors = trial_tensors(data, cfg, device)
        self.models = []
        for i, fold in enumerate(folds):
            held_out = np.isin(actor, fold)
            if not held_out.any():
                raise ValueError(f"fold of actors {list(fold)} has no clips")
            rows, val = np.flatnonzero(~held_out), np.flatnonzero(held_out)
            self.models.append(FoldModel(cfg, tensors, rows, val, device, cfg.train.seed + i))
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


def _seed(cfg: TrainConfig) -> None:
    torch.manual_seed(cfg.train.seed)
    np.random.seed(cfg.train.seed)  # mixup draws from numpy's global generator


def cross_validation_trial(config: dict, data: dict[str, np.ndarray], meta: dict) -> None:
    """The Tune trainable: one configuration, K folds, one report (and checkpoint) per epoch.

    Args:
        config: the sampled search-space keys.
        data: columns ``features, emotion, actor, path`` of the non-test actors only.
        meta: the experiment description (base train configs, folds, max_epochs...).
    """
    from ray import tune

    from knd.checkpoint import load_tensors

    cfg = trial_train_config(config, meta)
    device = _trial_device(meta["cpus_per_trial"])
    _seed(cfg)
    cv = CrossValidation(cfg, data, meta["folds"], device)
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
    _seed(cfg)
    started = time.perf_counter()
    every_row = np.arange(len(data["actor"]))
    tensors = trial_tensors(data, cfg, device)
    model = FoldModel(cfg, tensors, every_row, every_row[:0], device, cfg.train.seed)
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


def experiment_meta(cfg: TuneConfig, manifest: dict) -> dict:
    """Everything a trial, a resume and ``knd analyse`` need to know about the experiment.

    Raises:
        ValueError: no test actor in the corpus, or too few actors for the folds.
        ConfigError: a bad search space.
    """
    present = sorted(int(a) for a in manifest["rows_per_actor"] if str(a).isdigit())
    test = sorted({int(a) for a in cfg.test_actors})
    if not set(test) & set(present):
        raise ValueError(f"{cfg.data}: none of the test actors {test} is in the corpus {present}")
    missing = sorted(set(test) - set(present))
    if missing:
        log.warning("test actors %s are not in the corpus; testing on the others", missing)
    folds = [list(f) for f in actor_folds(present, cfg.folds, exclude=test)]
    # knd train picks its checkpoint on validation actors: best_config.yaml sets aside one group
    # of about four (an EmoBox group where they fit), so it trains on most non-test actors.
    rest = [a for a in present if a not in test]
    val = list(actor_folds(present, max(2, len(rest) // 4), exclude=test)[0])
    path = space_path(cfg.space)
    space = load_yaml(path)
    bases = {}
    for recipe in space_recipes(space, cfg.recipe):
        base = load_config(
            "train", [f"data={cfg.data}", f"recipe={recipe}", f"labels={cfg.labels}"]
        )
        split = {"split.test_actors": test, "split.val_actors": val}
        bases[recipe] = replace(base, **split, **{"optim.epochs": cfg.max_epochs})
    search_algorithm(cfg, param_space(space, bases, cfg.recipe, path), path)  # fail now
    check_groups(cfg.data, manifest, dict.fromkeys(space_groups(space, bases.values())))
    return {
        "tune": to_dict(cfg),
        "space_file": path,
        "space": space,
        "recipe": cfg.recipe,
        "bases": {name: to_dict(base) for name, base in bases.items()},
        "actors": present,
        "test_actors": [a for a in test if a in present],
        "train_actors": [a for a in present if a not in test],
        "folds": folds,
        "max_epochs": cfg.max_epochs,
        "metric": cfg.metric,
        "cpus_per_trial": cfg.cpus_per_trial,
        "feature_hash": manifest["feature_hash"],
        "feature_params": manifest["feature_params"],
        "feature_shape": manifest["feature_shape"],
        "feature_groups": manifest_groups(manifest),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def experiment_groups(meta: dict) -> dict[str, str]:
    """``{group: hash}`` of every feature group the experiment's corpus offers its trials."""
    specs = meta.get("feature_groups") or {"logmel": {"hash": meta["feature_hash"]}}
    return {group: spec["hash"] for group, spec in specs.items()}


def _experiment_uri(cfg: TuneConfig) -> str:
    name = cfg.name or f"tune-{cfg.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    if storage.is_remote(cfg.storage_path):
        return storage.join(cfg.storage_path, name)
    return str(Path(cfg.storage_path).expanduser().resolve() / name)


def load_columns(data: str, actors: list[int], groups: dict[str, str]) -> dict[str, np.ndarray]:
    """The columns trials train on (every feature group of ``groups``, a ``{group: hash}``,
    under its shard column, plus ``emotion, actor, path``) of ``actors`` only: a trial whose
    configuration reads fewer groups takes what it needs."""
    from knd.dataset import load_features

    table = load_features(data, actors=actors, expected_hash=groups["logmel"], groups=groups)
    if len(table) == 0:
        raise ValueError(f"{data}: no clips of actors {actors}")
    columns = {group_column(g): v for g, v in table.inputs().items()}
    return columns | {"emotion": table.emotion, "actor": table.actor, "path": table.path}


def _callbacks(cfg: TuneConfig, experiment: str) -> list:
    if not cfg.wandb.enabled:
        return []
    from ray.air.integrations.wandb import WandbLoggerCallback

    from knd.tracking import wandb_mode

    mode = wandb_mode()
    if mode == "offline":
        # Ray's callback otherwise insists on an API key before it knows the mode.
        os.environ.setdefault("WANDB_MODE", "offline")
    folder = tempfile.mkdtemp(prefix="knd-wandb-") if storage.is_remote(experiment) else experiment
    log.info("wandb (%s) logs every trial to project %s", mode, cfg.wandb.project)
    return [
        WandbLoggerCallback(
            project=cfg.wandb.project,
            group=experiment.rstrip("/").rsplit("/", 1)[-1],
            excludes=["actors"],
            mode=mode,
            dir=folder,
        )
    ]


def search_algorithm(cfg: TuneConfig, space: dict, where: str) -> tuple[Any, int | None]:
    """The search algorithm of ``cfg.search`` and the ``max_concurrent_trials`` Tune should get.

    Raises:
        ConfigError: grid keys with ``search=optuna`` (TPE samples; it cannot enumerate a grid).
    """
    if cfg.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        if any(isinstance(v, dict) and "grid_search" in v for v in space.values()):
            raise ConfigError(f"{where}: grid keys need search=random")
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
    if cfg.resume:
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
            callbacks=[*_callbacks(cfg, experiment), tune_callback(cfg.metric, cfg.max_epochs)],
            verbose=2 if is_verbose(cfg.ray.verbose) else 0,  # knd's lines (knd.console) instead
        ),
    )
    tuner.fit()


def _resumed_config(cfg: TuneConfig) -> tuple[TuneConfig, dict, str]:
    experiment = cfg.resume.rstrip("/")
    if not storage.is_remote(experiment):
        experiment = str(Path(experiment).expanduser().resolve())
    meta = read_meta(experiment)
    if meta is None:
        raise ValueError(f"{experiment}: not a knd tune experiment (no {META_FILE})")
    # The search continues exactly as it started; only where Ray and the data are may change.
    tree = meta["tune"] | {"resume": experiment, "ray": to_dict(cfg.ray)}
    if cfg.data:
        tree["data"] = cfg.data
    return build(TuneConfig, tree), meta, experiment


def retrain_best(cfg: TuneConfig, meta: dict, best: dict, data_ref: Any, experiment: str) -> dict:
    """Retrain the best configuration on all non-test actors; score it once on the test actors.

    Writes ``best/checkpoint`` (usable by ``knd evaluate`` and ``knd score``), ``best/metrics.json``
    and ``best/confusion.png``, and returns the test metrics.
    """
    import ray

    from knd.checkpoint import load_model, make_meta, save_checkpoint
    from knd.inference import score_actors
    from knd.metrics import metrics_report
    from knd.models import build_from_spec
    from knd.report import write_report

    params = best["params"]
    train_cfg = trial_train_config(params, meta)
    # The search is over, so the one retrain may use every free CPU of a node, not a trial's share.
    alive = [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")]
    free = ray.available_resources().get("CPU", 0.0)
    cpus = max(cfg.cpus_per_trial, float(int(min(max(alive, default=0.0), free))))
    task = ray.remote(num_cpus=cpus, num_gpus=cfg.gpus_per_trial)(retrain)
    trained = ray.get(task.remote(params, data_ref, meta, cpus))
    labels = list(label_names(cfg.labels))
    model = build_from_spec(to_dict(train_cfg.model), len(labels), trained["norm"])
    model.load_state_dict(trained["model"])
    ckpt_meta = make_meta(
        train_cfg,
        meta,
        trained["norm"],
        {"train": meta["train_actors"], "test": meta["test_actors"]},
        run=f"{experiment.rstrip('/').rsplit('/', 1)[-1]}/best",
        epoch=trained["epochs"],
        metrics={},
    )
    checkpoint = storage.join(experiment, BEST_DIR, "checkpoint")
    save_checkpoint(checkpoint, model, ckpt_meta)
    # The test actors are read only now, after the search, and scored exactly once.
    model, ckpt_meta = load_model(checkpoint)
    test = score_actors(model, ckpt_meta, cfg.data, meta["test_actors"]).metrics
    report = metrics_report(
        labels,
        test=test,
        val=None,
        test_actors=meta["test_actors"],
        train_actors=meta["train_actors"],
        epochs=trained["epochs"],
        feature_groups=list(train_cfg.model.groups),
        checkpoint=checkpoint,
    )
    write_report(storage.join(experiment, BEST_DIR), report)
    return test | {"checkpoint": checkpoint, "train_s": trained["train_s"]}


def open_experiment(cfg: TuneConfig) -> tuple[TuneConfig, dict, str]:
    """``(config, meta, experiment folder)`` of a new search, or of the one ``resume`` names.

    A new search writes its ``knd_tune.json`` now, so a killed run can be resumed.
    """
    from knd.dataset import read_manifest

    if cfg.resume:
        cfg, meta, experiment = _resumed_config(cfg)
    elif not cfg.data:
        raise ConfigError("missing required key 'data' (knd tune data=... or resume=PATH)")
    else:
        experiment, meta = _experiment_uri(cfg), None
        if storage.exists(storage.join(experiment, META_FILE)):
            raise ValueError(f"{experiment} exists: resume={experiment} finishes it, or rename")
    manifest = read_manifest(cfg.data)
    if manifest is None:
        raise ValueError(f"no prepared features at {cfg.data} (no manifest.json; run knd prepare)")
    if meta is None:
        meta = experiment_meta(cfg, manifest)
        storage.write_text(storage.join(experiment, META_FILE), json.dumps(meta, indent=2) + "\n")
    elif manifest["feature_hash"] != meta["feature_hash"]:
        raise ValueError(f"{cfg.data}: features differ from the ones this search started on")
    return cfg, meta, experiment


def write_best(cfg: TuneConfig, meta: dict, best: dict, experiment: str, extra: dict) -> dict:
    """``best_config.yaml`` and ``best_result.json`` of the search; returns the summary."""
    best_cfg = best_train_config(best["params"], meta)
    text = f"# knd train data={cfg.data} config={BEST_CONFIG_FILE}\n" + yaml.safe_dump(
        best_cfg, sort_keys=False
    )
    storage.write_text(storage.join(experiment, BEST_CONFIG_FILE), text)
    test = extra.get("test")
    summary = {
        "experiment": experiment,
        "trial_id": best["trial_id"],
        "metric": cfg.metric,
        "cv": {k: best[k] for k in best if k.startswith(("uar", "accuracy", "macro_f1"))},
        "epochs": best["epochs"],
        "params": best["params"],
        "test": None if test is None else {k: v for k, v in test.items() if k != "confusion"},
        "test_actors": meta["test_actors"],
        "folds": meta["folds"],
        "num_trials": extra["num_trials"],
        "search_s": extra["search_s"],
        "train_config": best_cfg,
    }
    storage.write_text(
        storage.join(experiment, BEST_RESULT_FILE), json.dumps(summary, indent=2) + "\n"
    )
    return summary


def run(cfg: TuneConfig) -> TuneResult:
    """Search, pick the best configuration by mean fold score, retrain it and test it once.

    Raises:
        ConfigError: neither ``data`` nor ``resume``, or a bad search space.
        ValueError: no prepared features, an experiment folder that already exists, or too few
            actors for the folds.
    """
    import ray

    from knd.runtime import init_ray

    cfg, meta, experiment = open_experiment(cfg)
    log.info(
        "searching %s: test actors %s set aside; %d folds %s; %d samples x %d epochs -> %s",
        meta["space_file"], meta["test_actors"], len(meta["folds"]), meta["folds"],
        cfg.num_samples, cfg.max_epochs, experiment,
    )  # fmt: skip
    init_ray(cfg.ray)
    # Only the non-test actors are ever loaded while the search runs.
    data = load_columns(cfg.data, meta["train_actors"], experiment_groups(meta))
    started = time.time()
    _search(cfg, meta, data, experiment)
    search_s = time.time() - started

    rows = trial_rows(load_experiment(experiment), meta)
    best = best_row(rows, cfg.metric)
    if best is None:
        log.error("no trial reported a score; see the trial errors under %s", experiment)
        return TuneResult(experiment, len(rows), None, None, exit_code=1)
    test = retrain_best(cfg, meta, best, ray.put(data), experiment) if cfg.retrain_best else None
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
