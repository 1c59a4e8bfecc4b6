"""The one forward pass: training's validation, ``knd evaluate`` and ``knd score`` all run it,
and the one path from a checkpoint to metrics on a set of actors (:func:`score_actors`).

On a GPU the model runs channels-last under bf16 autocast (as it trained); on the CPU in float32.
Keeping this in one place is what guarantees that evaluate and score give the same probabilities
for the same clip on the same device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from knd.audio.features import normalise_group

Inputs = dict[str, torch.Tensor]
"""Raw feature groups of a batch: ``{"logmel": [B, n_mels, frames], "prosody": ..., ...}``."""
Norm = dict[str, tuple[torch.Tensor, torch.Tensor]]
"""Per-group ``(mean, std)`` of the training clips, as tensors on the model's device."""


def norm_stats(meta: dict) -> dict[str, dict[str, list[float]]]:
    """``{group: {"mean", "std"}}`` of a (version-2) checkpoint meta."""
    return dict(meta["group_norm"])


def norm_tensors(stats: dict[str, dict[str, list[float]]], device: str | torch.device) -> Norm:
    """:func:`norm_stats` as float32 tensors on ``device``."""
    return {
        group: (
            torch.as_tensor(s["mean"], dtype=torch.float32, device=device),
            torch.as_tensor(s["std"], dtype=torch.float32, device=device),
        )
        for group, s in stats.items()
    }


def normalised_side(inputs: Inputs, norm: Norm) -> Inputs:
    """Every group but the log-mel, standardised (the model's keyword inputs)."""
    return {
        group: normalise_group(group, values.float(), *norm[group])
        for group, values in inputs.items()
        if group != "logmel"
    }


def logits_of(model: torch.nn.Module, x: torch.Tensor, side: Inputs | None = None) -> torch.Tensor:
    """float32 logits of normalised ``[B, 1, n_mels, frames]`` (and other groups) on the model's
    device."""
    gpu = x.device.type == "cuda"
    x = x.contiguous(memory_format=torch.channels_last)  # the weights' layout (build_model)
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=gpu):
        return model(x, **(side or {})).float()


def probabilities(model: torch.nn.Module, inputs: Inputs, norm: Norm) -> torch.Tensor:
    """Class probabilities ``[B, classes]`` of raw feature groups (no grad)."""
    with torch.inference_mode():
        x = normalise_group("logmel", inputs["logmel"].float(), *norm["logmel"])[:, None]
        return torch.softmax(logits_of(model, x, normalised_side(inputs, norm)), dim=1)


def predict(
    model: torch.nn.Module,
    meta: dict,
    features: np.ndarray | dict[str, np.ndarray],
    batch_size: int = 128,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Class predictions and probabilities for raw (un-normalised) features.

    The model is put in eval mode: batch norm then uses its running statistics, so a clip's
    prediction does not depend on the other clips in its batch.

    Args:
        model: the classifier (on ``device``).
        meta: the checkpoint's meta (normalisation mean/std, label names).
        features: log-mel ``[N, n_mels, n_frames]``, or ``{group: [N, ...]}`` of every group
            the model reads.
        batch_size: clips per forward pass.
        device: where to run the model.

    Returns:
        ``(predicted label ids [N] int64, probabilities [N, classes] float32)``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    groups = features if isinstance(features, dict) else {"logmel": features}
    norm = norm_tensors(norm_stats(meta), device)
    model.eval()
    probs = []
    for start in range(0, len(groups["logmel"]), batch_size):
        batch = {
            g: torch.as_tensor(np.asarray(v[start : start + batch_size]), device=device)
            for g, v in groups.items()
        }
        probs.append(probabilities(model, batch, norm).cpu())
    if not probs:
        return np.zeros(0, dtype=np.int64), np.zeros((0, len(meta["labels"])), np.float32)
    p = torch.cat(probs).numpy()
    return p.argmax(axis=1).astype(np.int64), p.astype(np.float32)


@dataclass
class ActorScores:
    """A checkpoint's predictions on the clips of some actors of a prepared feature set."""

    table: Any
    """The :class:`knd.data.shards.FeatureTable` scored (paths, actors, emotions...)."""
    targets: np.ndarray
    preds: np.ndarray
    probs: np.ndarray
    metrics: dict
    """:func:`knd.learning.metrics.split_metrics` of ``preds`` against ``targets`` (over the
    ``shared`` labels, named in ``metrics["labels"]``, when the data lacks some of the model's)."""
    shared: tuple[str, ...] | None = None
    """The model's labels the data has, when it lacks some (a cross-corpus evaluation)."""


def per_corpus_metrics(preds, targets, num_classes: int, table: Any) -> dict:
    """``{"per_corpus": {corpus: {accuracy, uar, macro_f1, n}}}`` of clips from several corpora
    read as one (:mod:`knd.data.datasets`); empty for one corpus."""
    from knd.data.datasets import corpus_of_speakers
    from knd.learning.metrics import split_metrics

    if not table.manifest.get("corpora"):
        return {}
    corpus = corpus_of_speakers(table.manifest, table.actor)
    out = {}
    for name in dict.fromkeys(corpus):
        mine = corpus == name
        m = split_metrics(preds[mine], targets[mine], num_classes)
        out[str(name)] = {k: m[k] for k in ("accuracy", "uar", "macro_f1", "n")}
    return {"per_corpus": out}


def shared_labels(labels: Any, emotions: Sequence[str]) -> tuple[str, ...]:
    """The classes of the label set ``labels`` that clips labelled ``emotions`` can have."""
    present = {labels.target(e) for e in emotions}
    return tuple(n for i, n in enumerate(labels.names) if i in present)


def _model_inputs(meta: dict, data: str, actors, groups, codes: list[int]):
    """The clips of ``actors`` with a label of ``codes``, their groups as the model takes them:
    standardised per speaker when the checkpoint was trained so, from every clip of each
    speaker whatever its label (the statistics never depend on which labels are scored)."""
    from knd.data.datasets import load_features
    from knd.learning.speaker_norm import kept_rows, speaker_normalised

    by_speaker = meta.get("speaker_norm")
    if not by_speaker:
        return load_features(data, actors=actors, groups=groups, emotions=codes)
    table = load_features(data, actors=actors, groups=groups)
    table, _ = speaker_normalised(
        table, by_speaker["groups"], by_speaker["prior"], by_speaker["prior_clips"]
    )
    return kept_rows(table, np.isin(table.emotion, codes))


def score_actors(
    model: torch.nn.Module,
    meta: dict,
    data: str,
    actors,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
) -> ActorScores:
    """Score a checkpoint's model on the clips of ``actors`` in the feature set ``data``.

    The one path from a checkpoint to metrics on a set of actors: ``knd train`` (its kept
    checkpoint), ``knd tune`` (the refit's test score), ``knd evaluate`` and the benchmarks.
    Exactly the feature groups the model was trained on are read, and each is refused when it
    was made with other parameters.

    Raises:
        ValueError: no clip of these actors, features missing a group the model reads, or
            made with other parameters.
    """
    from knd.data.datasets import read_manifest
    from knd.data.label_sets import checkpoint_label_set
    from knd.data.shards import manifest_emotions
    from knd.learning.checkpoint import model_groups
    from knd.learning.metrics import split_metrics

    groups, labels = model_groups(meta), checkpoint_label_set(meta)
    # The clips whose label the model knows (matched by name, so any corpus's features score).
    emotions = manifest_emotions(read_manifest(data) or {})
    codes = labels.kept_codes(emotions)
    table = _model_inputs(meta, data, actors, groups, codes)
    if len(table) == 0:
        raise ValueError(
            f"{data}: no clips of actors {sorted(int(a) for a in actors)} with a label of "
            f"{list(labels.names)}"
        )
    inputs = {g: v for g, v in table.inputs().items() if g in groups}
    preds, probs = predict(model, meta, inputs, batch_size, device)
    targets = labels.targets(table.emotion, emotions)
    shared = shared_labels(labels, emotions)
    if len(shared) == len(labels.names):
        metrics = split_metrics(preds, targets, len(labels.names), actors=table.actor)
        metrics |= per_corpus_metrics(preds, targets, len(labels.names), table)
        return ActorScores(table, targets, preds, probs, metrics)
    # Another corpus without some of the model's labels: the model chooses among the labels
    # both have (probabilities restricted and renormalised), and is scored on those.
    columns = np.array([labels.names.index(n) for n in shared])
    kept = probs[:, columns] / np.maximum(probs[:, columns].sum(axis=1, keepdims=True), 1e-12)
    position = {int(c): i for i, c in enumerate(columns)}
    shared_targets = np.array([position[int(t)] for t in targets], dtype=np.int64)
    metrics = split_metrics(kept.argmax(axis=1), shared_targets, len(shared), actors=table.actor)
    metrics["labels"] = list(shared)
    preds = columns[kept.argmax(axis=1)].astype(np.int64)
    return ActorScores(table, targets, preds, probs, metrics, shared)
