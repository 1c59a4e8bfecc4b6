"""Spectrogram classifiers: torchvision VGG/ResNet adapted to 1-channel log-mel, and a small CNN.

Every model takes ``[batch, 1, n_mels, frames]`` and returns ``[batch, num_classes]`` logits. All of
them end in global pooling, so the clip length (frames) is free; weights are always random
(``weights=None``): nothing is downloaded.
"""

from __future__ import annotations

import torch
from torch import nn

from knd.config import MODEL_NAMES


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


def _resnet(name: str, num_classes: int, dropout: float) -> nn.Module:
    import torchvision

    model = getattr(torchvision.models, name)(weights=None)
    model.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    model.fc = nn.Sequential(nn.Dropout(dropout), nn.Linear(model.fc.in_features, num_classes))
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


def build_model(name: str, num_classes: int, width: int = 32, dropout: float = 0.2) -> nn.Module:
    """A freshly initialised classifier for 1-channel spectrograms.

    Args:
        name: one of ``MODEL_NAMES``.
        num_classes: size of the label set.
        width: base channel width (``cpu_small`` and ``plain_cnn``; torchvision models keep
            their widths).
        dropout: dropout before the final linear layer.

    Raises:
        ValueError: an unknown model name.
    """
    if name == "cpu_small":
        return SmallCNN(num_classes, width=width, dropout=dropout)
    if name == "plain_cnn":
        return PlainCNN(num_classes, width=width, dropout=dropout)
    if name in ("resnet18", "resnet34"):
        return _resnet(name, num_classes, dropout)
    if name in ("vgg11_bn", "vgg16_bn"):
        return SpectrogramVGG(_VGG_LAYOUTS[name], num_classes, dropout)
    raise ValueError(f"unknown model {name!r}; expected one of {list(MODEL_NAMES)}")


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
