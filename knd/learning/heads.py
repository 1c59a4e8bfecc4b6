"""Classifiers on a pretrained speech encoder: a head on cached embeddings, and fine-tuning.

- :class:`EmbeddingHead` reads the ``embedding`` group (per-layer mean and std of the encoder's
  states, computed once by ``knd prepare``): a learned softmax-weighted sum over layers (SUPERB's
  recipe), then EmoBox's head (Linear -> ReLU -> Linear). Training it takes seconds an epoch.
- :class:`EncoderClassifier` reads the ``waveform`` group and trains the encoder's upper layers
  with the same kind of head over its frames (masked mean pooling is plain mean pooling here:
  every clip is fitted to ``clip_seconds``), with the convolutional feature extractor frozen.

Both follow knd's model contract: the log-mel comes first (and is ignored), their group as a
keyword, logits out.
"""

from __future__ import annotations

import torch
from torch import nn

MAX_ENCODER_SIZES = {
    "hidden_size": 4096,
    "num_hidden_layers": 96,
    "intermediate_size": 16384,
    "num_attention_heads": 128,
}
"""Bounds on a checkpoint's stored encoder config: a hostile meta cannot ask for a huge model."""


class LayerWeights(nn.Module):
    """A softmax-weighted sum over stacked layers (``[B, layers, ...]`` -> ``[B, ...]``), or one
    fixed layer when ``layer >= 0``."""

    def __init__(self, num_layers: int, layer: int = -1):
        super().__init__()
        if layer >= num_layers:
            raise ValueError(f"layer {layer} does not exist: the encoder has 0..{num_layers - 1}")
        self.num_layers, self.layer = num_layers, layer
        self.logits = nn.Parameter(torch.zeros(num_layers)) if layer < 0 else None

    def weights(self) -> torch.Tensor:
        """The weight of every layer (one-hot for a fixed layer)."""
        if self.logits is None:
            return nn.functional.one_hot(torch.tensor(self.layer), self.num_layers).float()
        return torch.softmax(self.logits.detach(), dim=0)

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        if self.logits is None:
            return stacked[:, self.layer]
        w = torch.softmax(self.logits, dim=0).to(stacked.dtype)
        return (stacked * w.view(1, -1, *([1] * (stacked.ndim - 2)))).sum(dim=1)


class EmbeddingHead(nn.Module):
    """Layer weighting then Linear -> ReLU -> Dropout -> Linear on pooled encoder statistics."""

    def __init__(
        self, num_classes: int, shape: tuple[int, int], layer: int, width: int, dropout: float
    ):
        super().__init__()
        num_layers, dims = shape
        self.layers = LayerWeights(num_layers, layer)
        self.head = nn.Sequential(
            nn.Linear(dims, width), nn.ReLU(), nn.Dropout(dropout), nn.Linear(width, num_classes)
        )

    def forward(self, x: torch.Tensor | None, embedding: torch.Tensor | None = None):
        if embedding is None:
            raise ValueError("embedding_head reads the embedding group, but none was given")
        return self.head(self.layers(embedding.float()))


class EncoderClassifier(nn.Module):
    """A speech encoder fine-tuned end to end under a frame-level head.

    Args:
        num_classes: size of the label set.
        encoder: the encoder module (pretrained weights, or random ones a state dict replaces).
        finetune_layers: transformer layers trained, from the top; the rest stay frozen, and
            the convolutional feature extractor always does.
        width: the head's hidden width.
        dropout: before the last linear layer.
        normalize: standardise each waveform first, as the encoder's feature extractor does.
        gradient_checkpointing: recompute the encoder's activations in the backward pass.
    """

    def __init__(
        self,
        num_classes: int,
        encoder: nn.Module,
        finetune_layers: int,
        width: int,
        dropout: float,
        normalize: bool = True,
        gradient_checkpointing: bool = False,
    ):
        super().__init__()
        # A layer LayerDrop skips leaves no hidden state (the layer weighting needs all of them)
        # and parameters DDP would wait on for ever.
        encoder.config.layerdrop = 0.0
        self.encoder = encoder
        self.normalize = normalize
        num_states = encoder.config.num_hidden_layers + 1
        self.layers = LayerWeights(num_states)
        hidden = encoder.config.hidden_size
        self.frame = nn.Sequential(nn.Linear(hidden, width), nn.ReLU())
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, num_classes))
        self._freeze(finetune_layers)
        if gradient_checkpointing:
            encoder.gradient_checkpointing_enable()

    def _freeze(self, finetune_layers: int) -> None:
        for param in self.encoder.parameters():
            param.requires_grad_(False)
        blocks = self.encoder.encoder.layers
        trained = list(blocks[len(blocks) - finetune_layers :]) if finetune_layers else []
        if finetune_layers >= len(blocks):  # the whole transformer: its input side too
            trained = [m for n, m in self.encoder.named_children() if n != "feature_extractor"]
        for module in trained:
            for param in module.parameters():
                param.requires_grad_(True)
        # The vector that replaces masked time steps (the encoder's own SpecAugment, active in
        # training) stays as pretraining learned it.
        if getattr(self.encoder, "masked_spec_embed", None) is not None:
            self.encoder.masked_spec_embed.requires_grad_(False)

    def forward(self, x: torch.Tensor | None, waveform: torch.Tensor | None = None):
        if waveform is None:
            raise ValueError("encoder_finetune reads the waveform group, but none was given")
        wave = waveform.float()[:, 0]
        if self.normalize:
            wave = (wave - wave.mean(dim=1, keepdim=True)) / (
                wave.var(dim=1, keepdim=True) + 1e-7
            ).sqrt()
        states = self.encoder(wave, output_hidden_states=True).hidden_states
        frames = self.layers(torch.stack(states, dim=1))  # [B, frames, hidden]
        return self.classifier(self.frame(frames).mean(dim=1))


def encoder_param_names(model: nn.Module) -> set[str]:
    """Names of the encoder's trainable parameters (they take the smaller learning rate)."""
    return {
        name
        for name, p in model.named_parameters()
        if ".encoder." in f".{name}" and p.requires_grad
    }


def encoder_spec(folder: str) -> dict:
    """What a fine-tuned checkpoint records of its encoder: config, files' hash, normalisation.

    The config rebuilds the architecture when scoring; the weights are in the checkpoint.
    """
    from knd.audio import encoder

    info = encoder.describe(folder)
    return {
        "encoder_config": info.config,
        "encoder_hash": encoder.folder_hash(info.folder),
        "encoder_normalize": info.normalize,
    }


def encoder_config_problem(config) -> tuple[str, str] | None:
    """What is wrong with a stored encoder config: ``(key under model, problem)``, or None."""
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        return "encoder_config", "expected a config with a model_type"
    for key, limit in MAX_ENCODER_SIZES.items():
        value = config.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit:
            return f"encoder_config.{key}", f"expected an integer in 1..{limit}"
    return None


def embedding_head(num_classes: int, spec: dict, shapes: dict) -> nn.Module:
    """``embedding_head`` from a model spec (a ModelConfig as a dict, or a checkpoint's
    ``meta["model"]``) and the shapes of the groups it reads (the model table's builder)."""
    if "embedding" not in shapes or len(shapes["embedding"]) != 2:
        raise ValueError("embedding_head reads the embedding group [layers, dims]")
    width, dropout = int(spec.get("fusion_width", 32)), float(spec.get("dropout", 0.0))
    return EmbeddingHead(
        num_classes, shapes["embedding"], int(spec.get("layer", -1)), width, dropout
    )


def encoder_classifier(num_classes: int, spec: dict, shapes: dict) -> nn.Module:
    """``encoder_finetune`` from a model spec: a checkpoint's rebuilds the architecture its
    ``encoder_config`` records (the weights come from ``model.pt``), a config's loads the
    pretrained encoder ``spec["encoder"]`` (the model table's builder)."""
    from knd.audio import encoder

    if "encoder_config" in spec:
        module = encoder.build_encoder(spec["encoder_config"])
        normalize = bool(spec.get("encoder_normalize", True))
    else:
        module = encoder.load_pretrained(spec["encoder"])
        normalize = encoder.describe(spec["encoder"]).normalize
    return EncoderClassifier(
        num_classes,
        module,
        int(spec.get("finetune_layers", 2)),
        int(spec.get("fusion_width", 32)),
        float(spec.get("dropout", 0.0)),
        normalize,
        bool(spec.get("gradient_checkpointing", False)),
    )
