"""Classifiers: torchvision VGG/ResNet adapted to 1-channel log-mel, small CNNs, fused models.

Every model takes the normalised log-mel ``[batch, 1, n_mels, frames]`` as its first argument and
the other feature groups it reads as keyword tensors (``prosody=[batch, 4, frames]``,
``egemaps=[batch, 88]``), and returns ``[batch, num_classes]`` logits (the pretrained-encoder
models are in :mod:`knd.learning.heads`). All of them end in global
pooling, so the clip length (frames) is free; weights are always random (``weights=None``):
nothing is downloaded.
"""

from __future__ import annotations

import torch
from torch import nn

from knd.config.architectures import ARCHITECTURES
from knd.config.schema import MODEL_NAMES


class SmallCNN(nn.Module):
    """Four conv blocks and a mean+max pooling head: trains in minutes on two CPU cores.

    Frequency is pooled harder than time after the first block because emotion cues (pitch
    contour, tempo, energy) live in how the spectrum moves over time more than in fine detail
    along the mel axis.
    """

    def __init__(self, num_classes: int, width: int = 32, dropout: float = 0.2):
        super().__init__()
        w = width

        def block(c_in: int, c_out: int, pool: tuple[int, int] | None) -> list[nn.Module]:
            layers: list[nn.Module] = [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            if pool:
                layers.append(nn.MaxPool2d(pool, ceil_mode=True))
            return layers

        self.features = nn.Sequential(
            *block(1, w, (2, 2)),
            *block(w, 2 * w, (2, 2)),
            *block(2 * w, 4 * w, (2, 2)),
            *block(4 * w, 4 * w, None),
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(8 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x).mean(dim=2)  # average over mel bands -> [B, C, T]
        pooled = torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1)  # global over time
        return self.classifier(self.dropout(pooled))


class PlainCNN(nn.Module):
    """Four conv blocks (3x3 conv, BatchNorm, ReLU, 2x2 max-pool) and global average pooling.

    Widths ``w, 2w, 4w, 4w`` (32-64-128-128 at ``width=32``): the plain spectrogram CNN that
    carried over best to real speech (issue 16). Unlike :class:`SmallCNN` it pools frequency and
    time alike and averages over both at the end, so no cue has to sit in a particular band.
    """

    def __init__(self, num_classes: int, width: int = 32, dropout: float = 0.0):
        super().__init__()
        widths = (1, width, 2 * width, 4 * width, 4 * width)
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.features(x).mean(dim=(2, 3))))


class ProsodyBranch(nn.Module):
    """Two 1-D conv blocks over the frame-level prosody channels, mean+max pooled over time.

    Kernels of 5 frames (50 ms) twice, the second after a 2x pooling: ~0.15 s of context, the
    span of a pitch accent or a syllable's rise or fall.
    """

    def __init__(self, channels: int, width: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(channels, width, 5, padding=2, bias=False),
            nn.BatchNorm1d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool1d(2, ceil_mode=True),
            nn.Conv1d(width, width, 5, padding=2, bias=False),
            nn.BatchNorm1d(width),
            nn.ReLU(inplace=True),
        )
        self.out_features = 2 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net(x)
        return torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1)


class FunctionalsBranch(nn.Module):
    """An MLP layer over utterance-level functionals (already standardised)."""

    def __init__(self, dims: int, width: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(dims, width), nn.BatchNorm1d(width), nn.ReLU()
        )
        self.out_features = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class FusedCNN(nn.Module):
    """:class:`PlainCNN`'s log-mel stack, fused with prosody and eGeMAPS branches before the head.

    Mid fusion: each group is embedded by its own branch (the CNN's global average pool, a 1-D
    conv over the prosody contour, an MLP over the functionals), the embeddings are concatenated
    and one linear layer classifies them. The log-mel keeps the CNN's 4w features; the other
    groups add what a spectrogram smears: pitch level and contour, voicing, loudness, voice
    quality.
    """

    def __init__(
        self,
        num_classes: int,
        width: int = 32,
        dropout: float = 0.0,
        prosody_channels: int = 0,
        functionals: int = 0,
        fusion_width: int = 32,
    ):
        super().__init__()
        self.cnn = PlainCNN(num_classes, width=width).features
        size = 4 * width
        self.prosody = ProsodyBranch(prosody_channels, fusion_width) if prosody_channels else None
        self.egemaps = (
            FunctionalsBranch(functionals, fusion_width, dropout) if functionals else None
        )
        for branch in (self.prosody, self.egemaps):
            size += branch.out_features if branch is not None else 0
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(size, num_classes)

    def forward(
        self,
        x: torch.Tensor,
        prosody: torch.Tensor | None = None,
        egemaps: torch.Tensor | None = None,
    ) -> torch.Tensor:
        parts = [self.cnn(x).mean(dim=(2, 3))]
        for branch, values, name in (
            (self.prosody, prosody, "prosody"),
            (self.egemaps, egemaps, "egemaps"),
        ):
            if branch is not None:
                if values is None:
                    raise ValueError(f"this model reads the {name} group, but none was given")
                parts.append(branch(values.to(parts[0].dtype)))
        return self.classifier(self.dropout(torch.cat(parts, dim=1)))


class FunctionalsMLP(nn.Module):
    """The classical baseline: an MLP on the eGeMAPS functionals alone (the log-mel is ignored)."""

    def __init__(self, num_classes: int, functionals: int, width: int = 64, dropout: float = 0.2):
        super().__init__()
        self.body = FunctionalsBranch(functionals, width, dropout)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(width, num_classes))

    def forward(self, x: torch.Tensor, egemaps: torch.Tensor | None = None) -> torch.Tensor:
        if egemaps is None:
            raise ValueError("egemaps_mlp reads the egemaps group, but none was given")
        return self.classifier(self.body(egemaps))


class FunctionalsLinear(nn.Module):
    """A linear model (multinomial logistic regression, with the optimiser's weight decay as its
    L2 penalty) on the eGeMAPS functionals alone: the baseline per-speaker standardisation lifts
    furthest (issue 30)."""

    def __init__(self, num_classes: int, functionals: int, dropout: float = 0.0):
        super().__init__()
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(functionals, num_classes))

    def forward(self, x: torch.Tensor, egemaps: torch.Tensor | None = None) -> torch.Tensor:
        if egemaps is None:
            raise ValueError("this model reads the egemaps group, but none was given")
        return self.classifier(egemaps)


class LateFusion(nn.Module):
    """Late fusion: :class:`PlainCNN`'s logits on the log-mel and :class:`FunctionalsLinear`'s on
    eGeMAPS, averaged with weight ``cnn_weight`` on the CNN's. Both learn from the fused logits'
    loss; the weight is a config key (``model.fusion_weight``), chosen by ``knd tune``'s folds,
    never by test speakers."""

    def __init__(self, num_classes: int, functionals: int, width: int, dropout: float, weight):
        super().__init__()
        self.cnn = PlainCNN(num_classes, width=width, dropout=dropout)
        self.linear = FunctionalsLinear(num_classes, functionals)
        self.cnn_weight = float(weight)

    def forward(self, x: torch.Tensor, egemaps: torch.Tensor | None = None) -> torch.Tensor:
        linear = self.linear(x, egemaps=egemaps.to(x.dtype) if egemaps is not None else None)
        return self.cnn_weight * self.cnn(x) + (1.0 - self.cnn_weight) * linear


def resnet(num_classes: int, spec: dict, shapes: dict) -> nn.Module:
    """torchvision's ResNet (``spec["name"]``: resnet18, resnet34) on 1-channel input."""
    import torchvision

    model = getattr(torchvision.models, spec["name"])(weights=None)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    model.fc = nn.Sequential(
        nn.Dropout(spec["dropout"]), nn.Linear(model.fc.in_features, num_classes)
    )
    return model  # torchvision's ResNet already ends in AdaptiveAvgPool2d(1)


class SpectrogramVGG(nn.Module):
    """torchvision's VGG-BN convolutional stack on 1-channel input, with a global-pooling head.

    VGG's 7x7 pooling and 4096-wide head assume 224x224 images; global pooling frees the clip
    length and drops ~100M parameters that a few thousand clips cannot fit. The head is built
    directly (not by replacing torchvision's) so the unused 100M-weight layers are never allocated.
    """

    def __init__(self, layout: str, num_classes: int, dropout: float):
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        self.features = make_layers(cfgs[layout], batch_norm=True)
        first = self.features[0]
        self.features[0] = nn.Conv2d(1, first.out_channels, 3, padding=1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(cfgs[layout][-2], num_classes)
        )
        for m in self.modules():  # torchvision's VGG initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.avgpool(self.features(x)))


_VGG_LAYOUTS = {"vgg11_bn": "A", "vgg16_bn": "D"}


# ----------------------------------------------------------------------------------------------
# Builders named by the model table (knd.config.architectures): (num_classes, spec, shapes)


def spectrogram_vgg(num_classes: int, spec: dict, shapes: dict) -> nn.Module:
    return SpectrogramVGG(_VGG_LAYOUTS[spec["name"]], num_classes, spec["dropout"])


def small_cnn(num_classes: int, spec: dict, shapes: dict) -> nn.Module:
    return SmallCNN(num_classes, width=spec["width"], dropout=spec["dropout"])


def plain_cnn(num_classes: int, spec: dict, shapes: dict) -> nn.Module:
    return PlainCNN(num_classes, width=spec["width"], dropout=spec["dropout"])


def fused_cnn(num_classes: int, spec: dict, shapes: dict) -> nn.Module:
    return FusedCNN(
        num_classes,
        width=spec["width"],
        dropout=spec["dropout"],
        prosody_channels=shapes["prosody"][0] if "prosody" in shapes else 0,
        functionals=shapes["egemaps"][0] if "egemaps" in shapes else 0,
        fusion_width=spec["fusion_width"],
    )


def functionals_mlp(num_classes: int, spec: dict, shapes: dict) -> nn.Module:
    if "egemaps" not in shapes:
        raise ValueError("egemaps_mlp reads the egemaps group; model.groups must be [egemaps]")
    width = 2 * spec["fusion_width"]
    return FunctionalsMLP(num_classes, shapes["egemaps"][0], width, spec["dropout"])


def functionals_linear(num_classes: int, spec: dict, shapes: dict) -> nn.Module:
    if "egemaps" not in shapes:
        raise ValueError("egemaps_linear reads the egemaps group; model.groups must be [egemaps]")
    return FunctionalsLinear(num_classes, shapes["egemaps"][0], spec["dropout"])


def late_fusion(num_classes: int, spec: dict, shapes: dict) -> nn.Module:
    if "egemaps" not in shapes:
        raise ValueError("late_fusion reads logmel and egemaps; model.groups must be both")
    weight = spec.get("fusion_weight", 0.5)
    return LateFusion(num_classes, shapes["egemaps"][0], spec["width"], spec["dropout"], weight)


def build_model(
    name: str,
    num_classes: int,
    width: int = 32,
    dropout: float = 0.2,
    groups: dict[str, tuple[int, ...]] | None = None,
    fusion_width: int = 32,
    spec: dict | None = None,
) -> nn.Module:
    """A freshly initialised classifier (an encoder's pretrained weights for encoder_finetune),
    built by the model table's builder for ``name``.

    Args:
        name: one of ``MODEL_NAMES``.
        num_classes: size of the label set.
        width: base channel width (``cpu_small``, ``plain_cnn`` and ``fused_cnn``; torchvision
            models keep their widths).
        dropout: dropout before the final linear layer.
        groups: ``{group: one clip's shape}`` of the feature groups the model reads
            (``fused_cnn`` and ``egemaps_mlp``; the others read the log-mel alone).
        fusion_width: width of each non-log-mel branch (``fused_cnn``; ``egemaps_mlp``'s hidden
            layer is twice it).
        spec: the whole model spec, for the encoder models' own keys (``layer``, ``encoder``...).

    Raises:
        ValueError: an unknown model name, or a group the model needs is missing.
    """
    import importlib

    if name not in ARCHITECTURES:
        raise ValueError(f"unknown model {name!r}; expected one of {list(MODEL_NAMES)}")
    module, function = ARCHITECTURES[name].builder.split(":")
    builder = getattr(importlib.import_module(module), function)
    settings = {"width": width, "dropout": dropout, "fusion_width": fusion_width}
    model = builder(num_classes, (spec or {}) | {"name": name} | settings, groups or {})
    # NHWC conv weights: oneDNN's CPU kernels train these small-channel models 1.2-1.6x faster
    # and infer 1.3-2.9x faster (bench/channels_last.py), and cuDNN's tensor cores want them too;
    # .to() leaves 1-D, 2-D and 3-D weights as they are.
    return model.to(memory_format=torch.channels_last)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        for attr in ("module", "_orig_mod"):
            inner = getattr(model, attr, None)
            if isinstance(inner, nn.Module):
                model = inner
                break
        else:
            return model


def build_from_spec(spec: dict, num_classes: int, norm: dict[str, dict]) -> nn.Module:
    """The model a checkpoint's ``meta["model"]`` (or a ModelConfig as a dict) describes.

    Args:
        spec: ``name`` and optionally ``width``, ``dropout``, ``fusion_width`` (older
            checkpoints lack the last).
        num_classes: size of the label set.
        norm: ``{group: {"mean", "std"}}`` of the groups the model reads besides the log-mel;
            each group's shape is its statistics' (frame-level groups: their channels).
    """
    import numpy as np

    return build_model(
        spec["name"],
        num_classes,
        width=int(spec.get("width", 32)),
        dropout=float(spec.get("dropout", 0.0)),
        groups={g: np.shape(s["mean"]) for g, s in norm.items() if g != "logmel"},
        fusion_width=int(spec.get("fusion_width", 32)),
        spec=spec,
    )
