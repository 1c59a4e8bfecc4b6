"""The one forward pass: training's validation, ``knd evaluate`` and ``knd score`` all run it.

On a GPU the model runs channels-last under bf16 autocast (as it trained); on the CPU in float32.
Keeping this in one place is what guarantees that evaluate and score give the same probabilities
for the same clip on the same device.
"""

from __future__ import annotations

import numpy as np
import torch

from knd.features import normalise


def logits_of(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """float32 logits of normalised ``[B, 1, n_mels, frames]`` on the model's device."""
    gpu = x.device.type == "cuda"
    if gpu:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=gpu):
        return model(x).float()


def probabilities(
    model: torch.nn.Module, features: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
) -> torch.Tensor:
    """Class probabilities ``[B, classes]`` of raw log-mel ``[B, n_mels, frames]`` (no grad)."""
    with torch.inference_mode():
        x = normalise(features.float(), mean, std)[:, None]
        return torch.softmax(logits_of(model, x), dim=1)


def predict(
    model: torch.nn.Module,
    meta: dict,
    features: np.ndarray,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Class predictions and probabilities for raw (un-normalised) log-mel features.

    The model is put in eval mode: batch norm then uses its running statistics, so a clip's
    prediction does not depend on the other clips in its batch.

    Args:
        model: the classifier (on ``device``).
        meta: the checkpoint's meta (normalisation mean/std, label names).
        features: ``[N, n_mels, n_frames]``.
        batch_size: clips per forward pass.
        device: where to run the model.

    Returns:
        ``(predicted label ids [N] int64, probabilities [N, classes] float32)``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    mean = torch.as_tensor(meta["norm"]["mean"], dtype=torch.float32, device=device)
    std = torch.as_tensor(meta["norm"]["std"], dtype=torch.float32, device=device)
    model.eval()
    probs = []
    for start in range(0, len(features), batch_size):
        x = torch.as_tensor(np.asarray(features[start : start + batch_size]), device=device)
        probs.append(probabilities(model, x, mean, std).cpu())
    if not probs:
        return np.zeros(0, dtype=np.int64), np.zeros((0, len(meta["labels"])), np.float32)
    p = torch.cat(probs).numpy()
    return p.argmax(axis=1).astype(np.int64), p.astype(np.float32)
