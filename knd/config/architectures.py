"""The model table: every architecture ``model.name`` may pick, and what each one needs.

One entry per architecture: the function that builds it, the feature groups it reads (exactly,
or at least), whether it starts from a pretrained encoder folder (``model.encoder``), and the
``model.*`` keys a checkpoint's meta records for it beyond the common ones. Config checks a
:class:`~knd.config.schema.ModelConfig` against it, :func:`knd.learning.models.build_model`
dispatches through it, and a checkpoint's meta records what it names: adding a model is adding
an entry here (and its builder).

The table sits at the config floor, which never imports torch, so builders are named by dotted
path (``module:function``) and imported by ``build_model`` only when a model is built.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Architecture:
    """One row of the model table.

    Attributes:
        builder: ``module:function`` of ``builder(num_classes, spec, shapes) -> nn.Module``,
            where ``spec`` is the model spec (``name``, ``width``, ``dropout``, ``fusion_width``
            and the architecture's ``meta_keys``) and ``shapes`` is ``{group: one clip's
            shape}`` of the groups it reads besides the log-mel.
        reads: the feature groups it reads.
        exactly: reads exactly ``reads`` (else at least ``reads``, plus any other groups).
        encoder: needs ``model.encoder``, a pretrained encoder whose weights start training.
        meta_keys: ``model.*`` keys the checkpoint meta records for it (besides name, width,
            dropout, groups and fusion_width).
    """

    builder: str
    reads: tuple[str, ...] = ("logmel",)
    exactly: bool = True
    encoder: bool = False
    meta_keys: tuple[str, ...] = ()


_MODELS = "knd.learning.models"
_HEADS = "knd.learning.heads"

ARCHITECTURES: dict[str, Architecture] = {
    "cpu_small": Architecture(f"{_MODELS}:small_cnn"),
    "plain_cnn": Architecture(f"{_MODELS}:plain_cnn"),
    "fused_cnn": Architecture(f"{_MODELS}:fused_cnn", exactly=False),
    "egemaps_mlp": Architecture(f"{_MODELS}:functionals_mlp", reads=("egemaps",)),
    "egemaps_linear": Architecture(f"{_MODELS}:functionals_linear", reads=("egemaps",)),
    "late_fusion": Architecture(
        f"{_MODELS}:late_fusion", reads=("logmel", "egemaps"), meta_keys=("fusion_weight",)
    ),
    "embedding_head": Architecture(
        f"{_HEADS}:embedding_head", reads=("embedding",), meta_keys=("layer",)
    ),
    "encoder_finetune": Architecture(
        f"{_HEADS}:encoder_classifier",
        reads=("waveform",),
        encoder=True,
        meta_keys=("finetune_layers", "encoder"),
    ),
    "resnet18": Architecture(f"{_MODELS}:resnet"),
    "resnet34": Architecture(f"{_MODELS}:resnet"),
    "vgg11_bn": Architecture(f"{_MODELS}:spectrogram_vgg"),
    "vgg16_bn": Architecture(f"{_MODELS}:spectrogram_vgg"),
}


def group_problem(name: str, groups: list[str]) -> str | None:
    """Why ``groups`` do not fit the architecture ``name`` (None when they do)."""
    arch = ARCHITECTURES[name]
    wanted = ", ".join(arch.reads)
    if arch.exactly and groups != list(arch.reads):
        return f"{name} reads [{wanted}] only, got {groups}"
    if not arch.exactly and not set(arch.reads) <= set(groups):
        return f"{name} needs {wanted} among its groups, got {groups}"
    return None
