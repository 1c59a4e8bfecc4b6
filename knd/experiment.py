"""The ``knd tune`` experiment folder, shared by ``knd tune`` (which writes it) and ``knd analyse``.

An experiment folder (local or ``s3://``) holds Ray Tune's own state and trial folders, plus:

- ``knd_tune.json``: what the search was (test actors, folds, base train configs, space...);
- ``best_config.yaml``: the best configuration, as ``knd train config=...`` takes it;
- ``best_result.json`` and ``best/``: the best configuration retrained and tested once.

Reading Tune's state unpickles Ray's files: trust an experiment folder as you trust its writer.
"""

from __future__ import annotations

import json
import math
from typing import Any

from knd import storage
from knd.config import TrainConfig, build, load_config, merge, replace, to_dict

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
