"""``knd tune``: hyperparameter search with Ray Tune, every configuration scored by actor folds.

How the pieces fit (see the README section "Tuning" for the reasoning):

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
    merge,
    replace,
    to_dict,
)
from knd.ravdess import actor_folds, emotion_to_label_table, label_names

log = logging.getLogger(__name__)

META_FILE = "knd_tune.json"
BEST_RESULT_FILE = "best_result.json"
BEST_CONFIG_FILE = "best_config.yaml"
BEST_DIR = "best"
FOLDS_FILE = "folds.pt"
SPACE_SECTIONS = ("model.", "optim.", "augment.")
SPACE_KEYS = ("recipe", "train.seed")
BEST_CONFIG_SECTIONS = ("recipe", "labels", "split", "model", "optim", "augment")


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
    base = bases[recipe]
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


def space_recipes(space: dict, recipe: str) -> list[str]:
    """Every recipe a trial of ``space`` may build on."""
    spec = space.get("recipe", recipe)
    if isinstance(spec, dict):
        values = next(iter(spec.values()))
        return sorted({str(v) for v in values}) if isinstance(values, list) else [recipe]
    return [str(spec)]


def stored_base(tree: dict, recipe: str) -> TrainConfig:
    """A recipe's base train config as the experiment stored it.

    Keys that ``knd train`` gained after the experiment was written take today's defaults, so an
    older experiment still resumes; every stored value wins.
    """
    today = load_config("train", [f"data={tree['data']}", f"recipe={recipe}"])
    return build(TrainConfig, merge(to_dict(today), tree))


def trial_train_config(params: dict, meta: dict) -> TrainConfig:
    """The train config of one trial: its recipe's base, then the sampled keys.

    Every trial trains ``max_epochs`` epochs per fold (the schedule's length) unless the space
    sets ``optim.epochs``, which is capped at ``max_epochs``.
    """
    recipe = params.get("recipe", meta["recipe"])
    cfg = stored_base(meta["bases"][recipe], recipe)
    overrides = {k: v for k, v in params.items() if k != "recipe"}
    epochs = int(overrides.get("optim.epochs", meta["max_epochs"]))
    overrides["optim.epochs"] = max(1, min(epochs, int(meta["max_epochs"])))
    return replace(cfg, **overrides)


def best_train_config(params: dict, meta: dict) -> dict:
    """The ``best_config.yaml`` tree that ``knd train config=best_config.yaml data=...`` takes.

    Its split keeps the search's test actors and validates on one group of about four actors
    (``knd train`` chooses its checkpoint on validation actors); model, schedule and augmentation
    are the trial's.
    """
    tree = to_dict(trial_train_config(params, meta))
    return {key: tree[key] for key in BEST_CONFIG_SECTIONS}


# ----------------------------------------------------------------------------------------------
# One configuration, K fold models trained side by side


class ArrayColumns:
    """Rows of in-memory columns behind ``iter_batches``, the one ``ray.data.Dataset`` method
    that :func:`knd.train.band_stats` and :func:`knd.train.validate` read."""

    def __init__(self, columns: dict[str, np.ndarray], rows: np.ndarray, names: tuple[str, ...]):
        self._columns, self._rows, self._names = columns, rows, names

    def iter_batches(self, batch_size: int, batch_format: str = "numpy"):
        for start in range(0, len(self._rows), batch_size):
            rows = self._rows[start : start + batch_size]
            yield {name: self._columns[name][rows] for name in self._names}


class FoldModel:
    """One model trained on some rows of ``data`` with knd.train's optimisation step.

    Normalisation statistics come from the training rows only.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        data: dict[str, np.ndarray],
        train_rows: np.ndarray,
        device: torch.device,
        seed: int,
    ):
        from knd.models import build_model
        from knd.train import band_stats, make_optimizer

        if len(train_rows) == 0:
            raise ValueError("a fold has no training clips")
        self.cfg, self.data, self.rows, self.seed = cfg, data, train_rows, seed
        self.device, self.gpu = device, device.type == "cuda"
        mean, std = band_stats(ArrayColumns(data, train_rows, ("features",)))
        self.norm_stats = {"mean": mean, "std": std}
        self.norm = (torch.tensor(mean, device=device), torch.tensor(std, device=device))
        self.label_table = torch.tensor(emotion_to_label_table(cfg.labels), device=device)
        self.num_classes = len(label_names(cfg.labels))
        torch.manual_seed(seed)
        model = build_model(cfg.model.name, self.num_classes, cfg.model.width, cfg.model.dropout)
        model = model.to(device)
        self.model = model.to(memory_format=torch.channels_last) if self.gpu else model
        self.optimizer = make_optimizer(self.model, cfg)
        self.batch = max(1, min(cfg.optim.batch_size, len(train_rows)))
        self.steps_per_epoch = max(1, len(train_rows) // self.batch)
        self.total_steps = cfg.optim.epochs * self.steps_per_epoch
        self.warmup_steps = round(cfg.optim.warmup_epochs * self.steps_per_epoch)
        self.step = 0

    def train_epoch(self, epoch: int) -> float:
        """One pass over the training rows (shuffled by seed and epoch); the mean loss."""
        from knd.train import lr_at, train_step

        self.model.train()
        order = np.random.default_rng([self.seed, epoch]).permutation(self.rows)
        total = torch.zeros((), device=self.device)
        for i in range(self.steps_per_epoch):
            rows = order[i * self.batch : (i + 1) * self.batch]
            x = torch.from_numpy(self.data["features"][rows]).to(self.device)
            y = self.label_table[torch.from_numpy(self.data["emotion"][rows]).to(self.device)]
            optim = self.cfg.optim
            lr = lr_at(self.step, self.total_steps, self.warmup_steps, optim.lr, optim.schedule)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            total += train_step(self.model, self.optimizer, x, y, self.cfg, self.norm, self.gpu)
            self.step += 1
        return float(total) / self.steps_per_epoch

    def validate(self, rows: np.ndarray) -> dict:
        """Accuracy, UAR, macro-F1, loss and confusion on ``rows`` (model left in train mode)."""
        from knd.train import validate

        batches = ArrayColumns(self.data, rows, ("features", "emotion", "path"))
        return validate(
            self.model, batches, self.label_table, self.norm, self.num_classes, self.device
        )

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])


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
        self.val_rows = [np.flatnonzero(np.isin(actor, fold)) for fold in folds]
        for fold, rows in zip(folds, self.val_rows, strict=True):
            if len(rows) == 0:
                raise ValueError(f"fold of actors {list(fold)} has no clips")
        self.models = [
            FoldModel(cfg, data, np.flatnonzero(~np.isin(actor, fold)), device, cfg.train.seed + i)
            for i, fold in enumerate(folds)
        ]
        self.epochs, self.epoch = cfg.optim.epochs, 0

    def run_epoch(self) -> dict:
        """Train every fold's model one epoch, then score each on its held-out actors."""
        started = time.perf_counter()
        scores = []
        for model, rows in zip(self.models, self.val_rows, strict=True):
            loss = model.train_epoch(self.epoch + 1)
            scores.append(model.validate(rows) | {"train_loss": loss})
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
    model = FoldModel(cfg, data, np.arange(len(data["actor"])), device, cfg.train.seed)
    for epoch in range(1, cfg.optim.epochs + 1):
        model.train_epoch(epoch)
    state = {k: v.detach().cpu() for k, v in model.model.state_dict().items()}
    return {
        "model": state,
        "norm": model.norm_stats,
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
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def read_meta(experiment: str) -> dict | None:
    """The ``knd_tune.json`` of an experiment folder, or None (not made by ``knd tune``)."""
    uri = storage.join(experiment, META_FILE)
    if not storage.exists(uri):
        return None
    return json.loads(storage.read_text(uri))


def _experiment_uri(cfg: TuneConfig) -> str:
    name = cfg.name or f"tune-{cfg.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    if storage.is_remote(cfg.storage_path):
        return storage.join(cfg.storage_path, name)
    return str(Path(cfg.storage_path).expanduser().resolve() / name)


def load_columns(data: str, actors: list[int], feature_hash: str) -> dict[str, np.ndarray]:
    """The columns a trial trains on (``features, emotion, actor, path``) of ``actors`` only."""
    from knd.prepare import load_features

    table = load_features(data, actors=actors, expected_hash=feature_hash)
    if len(table) == 0:
        raise ValueError(f"{data}: no clips of actors {actors}")
    return {
        "features": table.features,
        "emotion": table.emotion,
        "actor": table.actor,
        "path": table.path,
    }


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
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=parent,
            storage_filesystem=remote_fs,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=_callbacks(cfg, experiment),
            verbose=1,
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

    from knd.checkpoint import load_model, save_checkpoint
    from knd.evaluate import predict, targets_of
    from knd.metrics import metrics_report, split_metrics, write_report
    from knd.models import build_model

    params = best["params"]
    train_cfg = trial_train_config(params, meta)
    # The search is over, so the one retrain may use every free CPU of a node, not a trial's share.
    alive = [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")]
    free = ray.available_resources().get("CPU", 0.0)
    cpus = max(cfg.cpus_per_trial, float(int(min(max(alive, default=0.0), free))))
    task = ray.remote(num_cpus=cpus, num_gpus=cfg.gpus_per_trial)(retrain)
    trained = ray.get(task.remote(params, data_ref, meta, cpus))
    labels = list(label_names(cfg.labels))
    model = build_model(
        train_cfg.model.name, len(labels), train_cfg.model.width, train_cfg.model.dropout
    )
    model.load_state_dict(trained["model"])
    ckpt_meta = {
        "label_set": cfg.labels,
        "labels": labels,
        "feature_params": meta["feature_params"],
        "feature_hash": meta["feature_hash"],
        "feature_shape": meta["feature_shape"],
        "model": {k: getattr(train_cfg.model, k) for k in ("name", "width", "dropout")},
        "norm": trained["norm"],
        "split": {"train": meta["train_actors"], "val": [], "test": meta["test_actors"]},
        "recipe": train_cfg.recipe,
        "run": f"{experiment.rstrip('/').rsplit('/', 1)[-1]}/best",
        "epoch": trained["epochs"],
        "metrics": {},
    }
    checkpoint = storage.join(experiment, BEST_DIR, "checkpoint")
    save_checkpoint(checkpoint, model, ckpt_meta)
    # The test actors are read only now, after the search, and scored exactly once.
    test_data = load_columns(cfg.data, meta["test_actors"], meta["feature_hash"])
    model, ckpt_meta = load_model(checkpoint)
    preds, _ = predict(model, ckpt_meta, test_data["features"])
    targets = targets_of(test_data["emotion"], cfg.labels)
    test = split_metrics(preds, targets, len(labels), actors=test_data["actor"])
    report = metrics_report(
        labels,
        test=test,
        val=None,
        test_actors=meta["test_actors"],
        train_actors=meta["train_actors"],
        epochs=trained["epochs"],
        checkpoint=checkpoint,
    )
    write_report(storage.join(experiment, BEST_DIR), report)
    return test | {"checkpoint": checkpoint, "train_s": trained["train_s"]}


def run(cfg: TuneConfig) -> TuneResult:
    """Search, pick the best configuration by mean fold score, retrain it and test it once.

    Raises:
        ConfigError: neither ``data`` nor ``resume``, or a bad search space.
        ValueError: no prepared features, an experiment folder that already exists, or too few
            actors for the folds.
    """
    import ray

    from knd.analyse import best_row, load_experiment, trial_rows
    from knd.prepare import read_manifest
    from knd.runtime import init_ray

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
    log.info(
        "searching %s: test actors %s set aside; %d folds %s; %d samples x %d epochs -> %s",
        meta["space_file"], meta["test_actors"], len(meta["folds"]), meta["folds"],
        cfg.num_samples, cfg.max_epochs, experiment,
    )  # fmt: skip
    init_ray(cfg.ray)
    data = load_columns(cfg.data, meta["train_actors"], meta["feature_hash"])
    started = time.time()
    _search(cfg, meta, data, experiment)
    search_s = time.time() - started

    rows = trial_rows(load_experiment(experiment), meta)
    best = best_row(rows, cfg.metric)
    if best is None:
        log.error("no trial reported a score; see the trial errors under %s", experiment)
        return TuneResult(experiment, len(rows), None, None, exit_code=1)
    best_cfg = best_train_config(best["params"], meta)
    text = f"# knd train data={cfg.data} config={BEST_CONFIG_FILE}\n" + yaml.safe_dump(
        best_cfg, sort_keys=False
    )
    storage.write_text(storage.join(experiment, BEST_CONFIG_FILE), text)
    test = None
    if cfg.retrain_best:
        test = retrain_best(cfg, meta, best, ray.put(data), experiment)
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
        "num_trials": len(rows),
        "search_s": search_s,
        "train_config": best_cfg,
    }
    storage.write_text(
        storage.join(experiment, BEST_RESULT_FILE), json.dumps(summary, indent=2) + "\n"
    )
    log.info(
        "best of %d trials %s: fold %s %.3f +- %.3f%s; results in %s",
        len(rows), best["trial_id"], cfg.metric, best[cfg.metric], best[f"{cfg.metric}_std"],
        "" if test is None else f"; test UAR {test['uar']:.3f}, accuracy {test['accuracy']:.3f}",
        experiment,
    )  # fmt: skip
    return TuneResult(experiment, len(rows), best, test)
