"""Classification metrics (torchmetrics), the ``metrics.json`` report and the confusion figure.

UAR (unweighted average recall, i.e. macro recall) is the headline: RAVDESS has half as many
neutral clips as other emotions, so plain accuracy rewards a bias towards the big classes.

Inside a DDP worker group the torchmetrics collection syncs its states over ``torch.distributed``
when ``compute()`` is called, so every rank gets the metrics of all ranks' rows together. The pure
functions (``split_metrics``, ``metrics_report``) never sync.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassRecall,
)

from knd import storage

METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion.png"


def metric_collection(num_classes: int, sync: bool = True) -> MetricCollection:
    """Accuracy (micro), UAR (macro recall), macro-F1 and the confusion matrix.

    Args:
        num_classes: size of the label set.
        sync: gather states from every rank on ``compute()`` when ``torch.distributed`` is
            initialised (every rank must then call ``compute()``).
    """
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


def confusion_figure(
    confusion: Sequence[Sequence[int]], labels: Sequence[str], title: str
) -> bytes:
    """A PNG of the confusion matrix with rows normalised to recall and counts in each cell."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(confusion, dtype=np.int64)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    k = len(labels)
    fig = Figure(figsize=(1.0 + 0.85 * k, 0.6 + 0.75 * k), dpi=120)
    FigureCanvasAgg(fig)  # the Agg canvas, without pyplot's global backend state
    ax = fig.add_subplot()
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(k):
        for j in range(k):
            colour = "white" if rates[i, j] > 0.55 else "black"
            ax.text(
                j,
                i,
                f"{rates[i, j]:.2f}\n({counts[i, j]})",
                ha="center",
                va="center",
                color=colour,
                fontsize=8,
            )
    ax.set_xticks(range(k), labels, rotation=45, ha="right")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (row-normalised)")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_report(folder: str, report: dict, split: str = "test") -> None:
    """Write ``metrics.json`` and the ``confusion.png`` of ``split`` into ``folder``."""
    part = report.get(split)
    if part:
        title = (
            f"{split}: n={part['n']}  accuracy={part['accuracy']:.3f}  "
            f"UAR={part['uar']:.3f}  macro-F1={part['macro_f1']:.3f}"
        )
        png = confusion_figure(part["confusion"], report["labels"], title)
        storage.write_bytes(storage.join(folder, CONFUSION_FILE), png)
    storage.write_text(storage.join(folder, METRICS_FILE), json.dumps(report, indent=2) + "\n")
