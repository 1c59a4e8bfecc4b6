"""The ``knd tune`` experiment folder: the one module that writes and reads it.

``knd tune`` opens and fills the folder through this module and ``knd analyse`` reads it (and
writes the same ``best_config.yaml``) through it. An experiment folder (local or ``s3://``) holds
Ray Tune's own state and trial folders, plus:

- ``knd_tune.json``: what the search was (test actors, folds, base train configs, space...);
- ``best_config.yaml``: the best configuration, as ``knd train config=...`` takes it;
- ``best_result.json`` and ``best/``: the best configuration retrained and tested once.

Reading Tune's state unpickles Ray's files: trust an experiment folder as you trust its writer.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from typing import Any

import yaml

from knd.config.loading import build, load_config, load_yaml, merge, renamed, replace, to_dict
from knd.config.schema import ConfigError, TrainConfig, TuneConfig
from knd.data import storage
from knd.data.datasets import data_text, read_manifest
from knd.data.label_sets import LabelSet, label_set, spec_name
from knd.data.ravdess import EMOTIONS, actor_folds
from knd.data.shards import (
    check_groups,
    manifest_actors,
    manifest_emotions,
    manifest_groups,
)
from knd.data.speakers import default_split, speaker_names
from knd.learning.search_space import (
    check_search,
    param_space,
    space_groups,
    space_path,
    space_recipes,
)

log = logging.getLogger(__name__)

META_FILE = "knd_tune.json"
BEST_RESULT_FILE = "best_result.json"
BEST_CONFIG_FILE = "best_config.yaml"
BEST_DIR = "best"
BEST_CONFIG_SECTIONS = ("recipe", "labels", "split", "model", "optim", "augment")
SCORES = ("uar", "uar_std", "accuracy", "accuracy_std", "macro_f1", "macro_f1_std")


def read_meta(experiment: str) -> dict | None:
    """The ``knd_tune.json`` of an experiment folder, or None (not made by ``knd tune``)."""
    uri = storage.join(experiment, META_FILE)
    if not storage.exists(uri):
        return None
    return json.loads(storage.read_text(uri))


def stored_base(tree: dict, recipe: str) -> TrainConfig:
    """A recipe's base train config as the experiment stored it.

    Keys that ``knd train`` gained after the experiment was written take today's defaults, so an
    older experiment still resumes; every stored value wins.
    """
    today = load_config("train", [f"recipe={recipe}"], data=tree["data"])
    return build(TrainConfig, merge(to_dict(today), renamed(TrainConfig, tree)))


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


def load_experiment(experiment: str) -> Any:
    """Ray Tune's ``ExperimentAnalysis`` of a local or ``s3://`` experiment folder.

    Raises:
        FileNotFoundError: no such folder.
        ValueError: the folder holds no Tune experiment state.
    """
    from ray.tune import ExperimentAnalysis

    if not storage.exists(experiment):
        raise FileNotFoundError(f"experiment not found: {experiment}")
    fs, path = storage.resolve(experiment)
    try:
        return ExperimentAnalysis(path, storage_filesystem=fs)
    except ValueError:
        raise ValueError(
            f"{experiment}: not a Ray Tune experiment (no experiment_state-*.json)"
        ) from None


def trial_rows(analysis: Any, meta: dict | None) -> list[dict]:
    """One dict per trial: scores of its last report, epochs, status, params, history.

    ``stopped_early`` is true for a trial that ended without error before its planned epochs,
    which in a ``knd tune`` experiment means ASHA stopped it.
    """
    rows = []
    for trial in analysis.trials:
        last = trial.last_result or {}
        params = dict(trial.config or {})
        planned = last.get("epochs_planned")
        if planned is None and meta is not None:
            planned = trial_train_config(params, meta).optim.epochs
        epochs = int(last.get("epoch") or 0)
        history = analysis.trial_dataframes.get(trial.trial_id)
        row = {
            "trial_id": trial.trial_id,
            "status": str(trial.status),
            "epochs": epochs,
            "epochs_planned": None if planned is None else int(planned),
            "stopped_early": bool(
                trial.status == "TERMINATED" and planned is not None and epochs < int(planned)
            ),
            "time_s": last.get("time_total_s"),
        }
        row |= {key: last.get(key) for key in SCORES}
        folds = sorted((k for k in last if k.startswith("uar_fold_")), key=lambda k: int(k[9:]))
        row |= {key: last[key] for key in folds}
        row["params"] = params
        row["history"] = _history(history)
        rows.append(row)
    return rows


def _history(frame: Any) -> list[dict]:
    if frame is None or len(frame) == 0 or "epoch" not in frame:
        return []
    keep = [c for c in ("epoch", "uar", "uar_std", "timestamp", "time_this_iter_s") if c in frame]
    frame = frame[keep].dropna(subset=["epoch"]).drop_duplicates("epoch", keep="last")
    return frame.sort_values("epoch").to_dict("records")


def best_row(rows: list[dict], metric: str) -> dict | None:
    """The best trial by mean fold ``metric`` (ties: smaller spread over folds).

    Trials that ran their whole schedule are preferred: the retrained model trains that long, and
    an early-stopped trial's score is from an earlier epoch.
    """
    scored = [r for r in rows if number(r.get(metric)) is not None]
    complete = [r for r in scored if r["status"] == "TERMINATED" and not r["stopped_early"]]
    pool = complete or scored
    if not pool:
        return None
    return max(pool, key=lambda r: (r[metric], -(number(r.get(f"{metric}_std")) or 0.0)))


def number(value: Any) -> float | None:
    """``value`` as a float, or None when it is missing, not a number or NaN."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


# ----------------------------------------------------------------------------------------------
# Writing: a new or resumed search, and its best configuration


def experiment_meta(cfg: TuneConfig, manifest: dict) -> dict:
    """Everything a trial, a resume and ``knd analyse`` need to know about the experiment.

    Raises:
        ValueError: no test actor in the corpus, or too few actors for the folds.
        ConfigError: a bad search space.
    """
    present = manifest_actors(manifest)
    test = list(default_split(manifest, cfg.test_speakers, ())[0])
    folds = [list(f) for f in actor_folds(present, cfg.folds, exclude=test)]
    path = space_path(cfg.space)
    space = load_yaml(path)
    bases = _space_bases(cfg, space, present, test, manifest)
    check_search(cfg.search, param_space(space, bases, cfg.recipe, path), path)  # fail now
    check_groups(cfg.data, manifest, dict.fromkeys(space_groups(space, bases.values())))
    labels = label_set(cfg.labels, manifest_emotions(manifest))
    return {
        "tune": to_dict(cfg),
        "space_file": path,
        "space": space,
        "recipe": cfg.recipe,
        "bases": {name: to_dict(base) for name, base in bases.items()},
        "actors": present,
        "test_actors": test,
        "test_speakers": speaker_names(test, manifest),
        "train_actors": [a for a in present if a not in test],
        "folds": folds,
        "max_epochs": cfg.max_epochs,
        "metric": cfg.metric,
        "cpus_per_trial": cfg.cpus_per_trial,
        "features": {"params": manifest["feature_params"], "groups": manifest_groups(manifest)},
        "labels": list(labels.names),
        "label_merges": dict(labels.merges),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def experiment_label_set(meta: dict) -> LabelSet:
    """The classes every trial learns (an experiment written before they were recorded used a
    RAVDESS preset, named by its ``tune.labels``)."""
    spec = spec_name(meta["tune"]["labels"])
    if "labels" not in meta:
        return label_set(spec, EMOTIONS)
    merges = tuple(sorted(meta.get("label_merges", {}).items()))
    return LabelSet(spec, tuple(meta["labels"]), merges)


def experiment_groups(meta: dict) -> dict[str, str]:
    """``{group: hash}`` of every feature group the experiment's corpus offers its trials.

    The experiment records them under ``features.groups`` (``{group: {"hash", "shape",
    "dtype"}}``, the manifest's groups when the search started) beside the feature parameters
    (``features.params``); an experiment written before that copied the manifest's top-level
    ``feature_*`` keys instead, and still resumes.
    """
    if "features" in meta:
        specs = meta["features"]["groups"]
    else:
        specs = meta.get("feature_groups") or {"logmel": {"hash": meta["feature_hash"]}}
    return {group: spec["hash"] for group, spec in specs.items()}


def speaker_norm_prior_clips(meta: dict) -> float | None:
    """The shrinkage of the speaker-normalised columns the experiment's trials may read (None:
    no trial normalises per speaker, so none are made). One value for the whole search: the
    space may search ``normalise`` but not ``speaker_prior_clips``."""
    bases = [stored_base(tree, recipe) for recipe, tree in meta["bases"].items()]
    if "normalise" not in meta["space"] and all(b.normalise == "global" for b in bases):
        return None
    return bases[0].speaker_prior_clips


def _space_bases(
    cfg: TuneConfig, space: dict, present: list[int], test: list[int], manifest: dict
) -> dict:
    """The base train config of every recipe the space may pick, with the search's split."""
    # knd train picks its checkpoint on validation actors: best_config.yaml sets aside one group
    # of about four (an EmoBox group where they fit), so it trains on most non-test actors.
    rest = [a for a in present if a not in test]
    val = list(actor_folds(present, max(2, len(rest) // 4), exclude=test)[0])
    bases = {}
    for recipe in space_recipes(space, cfg.recipe):
        base = load_config(
            "train", [f"recipe={recipe}", f"labels=[{spec_name(cfg.labels)}]"], data=cfg.data
        )
        split = {
            "split.test_speakers": speaker_names(test, manifest),
            "split.val_speakers": speaker_names(val, manifest),
        }
        bases[recipe] = replace(base, **split, **{"optim.epochs": cfg.max_epochs})
    return bases


def experiment_uri(cfg: TuneConfig) -> str:
    """The folder of a new search: ``storage_path/name`` (local paths made absolute)."""
    name = cfg.name or f"tune-{cfg.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    return storage.join(storage.absolute(cfg.storage_path), name)


def resumed_config(cfg: TuneConfig) -> tuple[TuneConfig, dict, str]:
    """``(config, meta, experiment folder)`` of the search that ``cfg.resume`` names.

    Raises:
        ValueError: the folder was not made by ``knd tune``.
    """
    experiment = storage.absolute(cfg.resume.rstrip("/"))
    meta = read_meta(experiment)
    if meta is None:
        raise ValueError(f"{experiment}: not a knd tune experiment (no {META_FILE})")
    # The search continues exactly as it started; only where Ray and the data are may change.
    tree = meta["tune"] | {"resume": experiment, "ray": to_dict(cfg.ray)}
    if cfg.data:
        tree["data"] = cfg.data
    return build(TuneConfig, tree), meta, experiment


RERUN_FREE_KEYS = ("ray", "data", "resume", "wandb")
"""Keys a rerun of the same search may change: where Ray and the features are, and tracking."""


def _same_command_again(cfg: TuneConfig, experiment: str) -> tuple[TuneConfig, dict, str]:
    """A search named like an existing one: the same command again (a job retry, a rerun after
    the head was lost) continues it, as ``resume=`` would; another command is refused.

    Raises:
        ValueError: the existing search was started with other settings.
    """
    meta = read_meta(experiment)

    def settings(tree: dict) -> dict:
        return {k: v for k, v in tree.items() if k not in RERUN_FREE_KEYS}

    if meta is None or settings(meta["tune"]) != settings(to_dict(cfg)):
        raise ValueError(
            f"{experiment} exists with other settings: resume={experiment} finishes it, or rename"
        )
    log.info("%s holds this very search: continuing it (as resume= would)", experiment)
    return resumed_config(dataclasses.replace(cfg, resume=experiment))


def open_experiment(cfg: TuneConfig) -> tuple[TuneConfig, dict, str]:
    """``(config, meta, experiment folder)`` of a new search, or of the one ``resume`` names.

    A new search writes its ``knd_tune.json`` now, so a killed run can be resumed.

    Raises:
        ConfigError: neither ``data`` nor ``resume``, or a bad search space.
        ValueError: no prepared features, a folder that already exists, or features that differ
            from the ones a resumed search started on.
    """
    if cfg.resume:
        cfg, meta, experiment = resumed_config(cfg)
    elif not cfg.data:
        raise ConfigError("missing required key 'data' (knd tune data=... or resume=PATH)")
    else:
        experiment, meta = experiment_uri(cfg), None
        if storage.exists(storage.join(experiment, META_FILE)):
            cfg, meta, experiment = _same_command_again(cfg, experiment)
    manifest = read_manifest(cfg.data)
    if manifest is None:
        raise ValueError(f"no prepared features at {cfg.data} (no manifest.json; run knd prepare)")
    if meta is None:
        meta = experiment_meta(cfg, manifest)
        storage.write_text(storage.join(experiment, META_FILE), json.dumps(meta, indent=2) + "\n")
    elif manifest_groups(manifest)["logmel"]["hash"] != experiment_groups(meta)["logmel"]:
        raise ValueError(f"{cfg.data}: features differ from the ones this search started on")
    return cfg, meta, experiment


def best_config_text(params: dict, meta: dict, data: str) -> str:
    """``best_config.yaml``: the command that uses it, then the best trial's train config.

    Args:
        params: the best trial's sampled keys.
        meta: the experiment's ``knd_tune.json``.
        data: the features the command in the first line trains on.
    """
    tree = best_train_config(params, meta)
    header = f"# knd train data={data_text(data)} config={BEST_CONFIG_FILE}\n"
    return header + yaml.safe_dump(tree, sort_keys=False)


def write_best(cfg: TuneConfig, meta: dict, best: dict, experiment: str, extra: dict) -> dict:
    """``best_config.yaml`` and ``best_result.json`` of the search; returns the summary.

    Args:
        cfg: the search's config.
        meta: the experiment's ``knd_tune.json``.
        best: the best trial's row (:func:`best_row`).
        experiment: the experiment folder.
        extra: ``test`` (the retrained model's test metrics or None), ``num_trials``,
            ``search_s``.
    """
    text = best_config_text(best["params"], meta, cfg.data)
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
        "train_config": best_train_config(best["params"], meta),
    }
    storage.write_text(
        storage.join(experiment, BEST_RESULT_FILE), json.dumps(summary, indent=2) + "\n"
    )
    return summary
