"""Classification metrics (torchmetrics) and the ``metrics.json`` document, as pure functions.

UAR (unweighted average recall, i.e. macro recall) is the headline: RAVDESS has half as many
neutral clips as other emotions, so plain accuracy rewards a bias towards the big classes.

Inside a DDP worker group the torchmetrics collection syncs its states over ``torch.distributed``
when ``compute()`` is called, so every rank gets the metrics of all ranks' rows together. The pure
functions (``split_metrics``, ``per_class_metrics``, ``metrics_report``) never sync. Nothing
here writes a file: :mod:`knd.learning.report` turns these numbers into files and reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from torchmetrics import MetricCollection


def metric_collection(num_classes: int, sync: bool = True) -> MetricCollection:
    """Accuracy (micro), UAR (macro recall), macro-F1 and the confusion matrix.

    Args:
        num_classes: size of the label set.
        sync: gather states from every rank on ``compute()`` when ``torch.distributed`` is
            initialised (every rank must then call ``compute()``).
    """
    # Imported here, not at module level: `import torchmetrics` loads every metric family
    # (text, image, audio: transformers, torchvision, scipy.signal), ~5 s on 2 cores, which
    # every Ray worker importing knd.stages.train and every `knd` command paid before doing
    # anything.
    from torchmetrics import MetricCollection
    from torchmetrics.classification import (
        MulticlassAccuracy,
        MulticlassConfusionMatrix,
        MulticlassF1Score,
        MulticlassRecall,
    )

    common = {"num_classes": num_classes, "sync_on_compute": sync}
    return MetricCollection(
        {
            "accuracy": MulticlassAccuracy(average="micro", **common),
            "uar": MulticlassRecall(average="macro", **common),
            "macro_f1": MulticlassF1Score(average="macro", **common),
            "confusion": MulticlassConfusionMatrix(**common),
        },
        compute_groups=False,
    )


def summarise(computed: dict[str, torch.Tensor]) -> dict:
    """``MetricCollection.compute()`` output as JSON-ready numbers (``n`` from the confusion)."""
    confusion = computed["confusion"].detach().cpu().long()
    return {
        "accuracy": float(computed["accuracy"]),
        "uar": float(computed["uar"]),
        "macro_f1": float(computed["macro_f1"]),
        "n": int(confusion.sum()),
        "confusion": confusion.tolist(),
    }


def split_metrics(
    preds: Sequence[int] | np.ndarray | torch.Tensor,
    targets: Sequence[int] | np.ndarray | torch.Tensor,
    num_classes: int,
    actors: Sequence[int] | np.ndarray | torch.Tensor | None = None,
) -> dict:
    """Metrics of one split from predicted and true label ids (a pure function).

    Returns:
        ``{"accuracy", "uar", "macro_f1", "n", "confusion"}`` plus ``"per_actor"``
        (``{actor: accuracy}``) when ``actors`` is given.
    """
    preds_t = torch.as_tensor(np.asarray(preds), dtype=torch.long)
    targets_t = torch.as_tensor(np.asarray(targets), dtype=torch.long)
    if preds_t.shape != targets_t.shape:
        raise ValueError(f"{len(preds_t)} predictions for {len(targets_t)} targets")
    if len(targets_t) == 0:
        raise ValueError("no rows to compute metrics on")
    collection = metric_collection(num_classes, sync=False)
    collection.update(preds_t, targets_t)
    out = summarise(collection.compute())
    if actors is not None:
        out["per_actor"] = per_actor_accuracy(preds_t.numpy(), targets_t.numpy(), actors)
    return out


def per_actor_accuracy(
    preds: np.ndarray, targets: np.ndarray, actors: Sequence[int] | np.ndarray | torch.Tensor
) -> dict[str, float]:
    """Accuracy of each actor's clips, keyed by the actor id as a string (JSON keys)."""
    actors_a = np.asarray(actors)
    correct = np.asarray(preds) == np.asarray(targets)
    return {str(int(a)): float(correct[actors_a == a].mean()) for a in np.unique(actors_a)}


def metrics_report(
    labels: Sequence[str],
    test: dict | None,
    val: dict | None,
    test_actors: Sequence[int],
    **extra,
) -> dict:
    """The ``metrics.json`` document: ``{"labels", "test", "val", "test_actors", ...extra}``."""
    return {
        "labels": list(labels),
        "test": test,
        "val": val,
        "test_actors": [int(a) for a in test_actors],
        **extra,
    }


def per_class_metrics(confusion: Sequence[Sequence[int]]) -> list[dict]:
    """Per-class ``n`` (true clips), ``recall``, ``precision`` and ``f1`` from a confusion matrix.

    Rows are true classes, columns predicted ones. A class with no true clips has recall 0, one
    never predicted has precision 0 (torchmetrics' convention for the macro averages).
    """
    counts = np.asarray(confusion, dtype=np.float64)
    hits = np.diag(counts)
    true, predicted = counts.sum(axis=1), counts.sum(axis=0)
    recall = np.divide(hits, true, out=np.zeros_like(hits), where=true > 0)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    total = recall + precision
    f1 = np.divide(2 * recall * precision, total, out=np.zeros_like(hits), where=total > 0)
    return [
        {"n": int(n), "recall": float(r), "precision": float(p), "f1": float(f)}
        for n, r, p, f in zip(true, recall, precision, f1, strict=True)
    ]


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
