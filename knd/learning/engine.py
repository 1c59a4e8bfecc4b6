"""The one training engine: plain PyTorch, no Ray.

``knd train``'s Ray Train worker, each fold model of a ``knd tune`` trial and the plain-loop
baseline of ``bench/train.py`` all train through :class:`Learner`, so a hyperparameter means the
same thing wherever it is set. The engine takes batches as plain iterables of
``(raw feature groups {"logmel": [B, n_mels, frames], ...}, label ids [B])``; where they come from
(a Ray Dataset shard, in-memory arrays, a GPU-resident copy) is the caller's business.

Augmentation runs on raw log-mel in dB, in this order: band shift and gain (another voice, another
recording level), normalisation per mel band, SpecAugment masks (masked cells become the mean),
then mixup, which mixes every group of an example with the same partner and weight. The other
groups are standardised with their own training statistics and not otherwise augmented.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from knd.audio.features import normalise, stat_axes
from knd.config.loading import to_dict
from knd.config.schema import TrainConfig
from knd.learning.inference import Inputs, Norm, logits_of, norm_tensors, normalised_side
from knd.learning.metrics import metric_collection, summarise
from knd.learning.models import build_from_spec, unwrap

Batch = tuple[Inputs, torch.Tensor]
"""Raw feature groups ``{"logmel": [B, n_mels, frames], ...}`` and label ids ``[B]``."""


# ----------------------------------------------------------------------------------------------
# Schedule and augmentation


ONECYCLE_START = 25.0
"""One-cycle starts at ``peak / 25`` (torch's ``OneCycleLR`` div_factor) ..."""
ONECYCLE_END = 1e4
"""... and ends at ``peak / 25 / 1e4`` (its final_div_factor)."""


def lr_at(
    step: int, total_steps: int, warmup_steps: int, peak: float, schedule: str = "cosine"
) -> float:
    """The learning rate of optimiser step ``step`` (0-based) of ``total_steps``.

    ``cosine``: linear warm-up to ``peak`` over ``warmup_steps``, then cosine decay to zero.
    ``onecycle``: torch's ``OneCycleLR`` (cos annealing, no momentum cycling): cosine from
    ``peak / 25`` up to ``peak`` over ``warmup_steps``, then cosine down to ``peak / 2.5e5``.
    """
    if schedule == "onecycle":
        low, end = peak / ONECYCLE_START, peak / ONECYCLE_START / ONECYCLE_END
        top = max(warmup_steps - 1, 0)  # the step at the peak, as in OneCycleLR
        if step < top:
            return low + (peak - low) * 0.5 * (1.0 - math.cos(math.pi * step / top))
        progress = min(1.0, (step - top) / max(1, total_steps - 1 - top))
        return end + (peak - end) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule != "cosine":
        raise ValueError(f"optim.schedule must be cosine or onecycle, got {schedule!r}")
    if warmup_steps > 0 and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def spec_augment(x: torch.Tensor, freq_mask: int, time_mask: int, num_masks: int) -> torch.Tensor:
    """SpecAugment masking of normalised ``[B, n_mels, frames]``: masked cells become 0 (the mean).

    Each example gets ``num_masks`` frequency bands of up to ``freq_mask`` mel bins and as many
    time spans of up to ``time_mask`` frames, at random places.
    """
    if num_masks <= 0 or (freq_mask <= 0 and time_mask <= 0):
        return x
    b, m, t = x.shape
    keep = torch.ones(b, m, t, dtype=torch.bool, device=x.device)
    for size, width, axis in ((m, freq_mask, 1), (t, time_mask, 2)):
        if width <= 0:
            continue
        index = torch.arange(size, device=x.device)[None, :]
        for _ in range(num_masks):
            w = torch.randint(0, min(width, size) + 1, (b, 1), device=x.device)
            start = (torch.rand(b, 1, device=x.device) * (size - w + 1)).long()
            hit = (index >= start) & (index < start + w)
            keep &= ~(hit[:, :, None] if axis == 1 else hit[:, None, :])
    return x * keep


def shift_and_gain(x: torch.Tensor, max_shift: int, gain_db: float) -> torch.Tensor:
    """Per-example mel-band shift and level change of raw log-mel ``[B, n_mels, frames]`` (dB).

    A shift of ``k`` bands moves the whole spectrum up or down (edge bands repeat), roughly what
    a higher or lower voice and a longer or shorter vocal tract do: the model must then rely on
    the shape of the spectrum over time rather than on one speaker's pitch and formant bands. A
    level change stands for another microphone distance or recording gain.
    """
    b, m, _ = x.shape
    if max_shift > 0:
        shift = torch.randint(-max_shift, max_shift + 1, (b, 1), device=x.device)
        index = (torch.arange(m, device=x.device)[None, :] - shift).clamp(0, m - 1)
        x = x.gather(1, index[:, :, None].expand_as(x))
    if gain_db > 0:
        x = x + (torch.rand(b, 1, 1, device=x.device) * 2.0 - 1.0) * gain_db
    return x


def mixup(
    x: torch.Tensor,
    y: torch.Tensor,
    alpha: float,
    rng: np.random.Generator,
    side: Inputs | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float, Inputs]:
    """Mix each example with a random partner: ``(x_mixed, y, y_partner, weight_of_y, side)``.

    Every tensor of ``side`` (the other groups) is mixed with the same partner and weight; the
    weight is drawn from ``rng`` (the learner's own generator).
    """
    side = side or {}
    if alpha <= 0:
        return x, y, y, 1.0, side
    lam = float(rng.beta(alpha, alpha))
    lam = max(lam, 1.0 - lam)  # keep the first example dominant so its label stays meaningful
    perm = torch.randperm(x.shape[0], device=x.device)
    mixed = {k: lam * v + (1.0 - lam) * v[perm] for k, v in side.items()}
    return lam * x + (1.0 - lam) * x[perm], y, y[perm], lam, mixed


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters; biases and normalisation weights get no weight decay,
    and a pretrained encoder's layers learn at ``model.encoder_lr_scale`` times the head's rate."""
    from knd.learning.heads import encoder_param_names

    slow = encoder_param_names(model)
    groups = []
    for scale, in_encoder in ((1.0, False), (cfg.model.encoder_lr_scale, True)):
        decay, no_decay = [], []
        for name, param in model.named_parameters():
            if param.requires_grad and (name in slow) == in_encoder:
                (no_decay if param.ndim <= 1 else decay).append(param)
        groups += [
            {"params": decay, "weight_decay": cfg.optim.weight_decay, "lr_scale": scale},
            {"params": no_decay, "weight_decay": 0.0, "lr_scale": scale},
        ]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.optim.lr)


# ----------------------------------------------------------------------------------------------
# Data in memory


def band_stats(
    features: Iterable[np.ndarray], group: str = "logmel"
) -> tuple[list[float], list[float]]:
    """Mean and standard deviation of one group over every clip (and frame): per channel for
    frame-level groups, per value for the others (:func:`knd.audio.features.stat_axes`).

    Args:
        features: batches of one raw group: log-mel ``[B, n_mels, frames]``, prosody
            ``[B, channels, frames]``, functionals ``[B, dims]``, encoder statistics
            ``[B, layers, dims]`` (any float dtype).
        group: the group's name.

    Raises:
        ValueError: no clip at all.
    """
    total = squares = None
    count = 0
    for batch in features:
        f = np.asarray(batch, dtype=np.float64)
        axes = stat_axes(group, f.ndim)
        total = f.sum(axis=axes) + (0.0 if total is None else total)
        squares = np.square(f).sum(axis=axes) + (0.0 if squares is None else squares)
        count += f.size // total.size
    if not count:
        raise ValueError("no training clips to compute normalisation statistics on")
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return mean.tolist(), std.tolist()


def group_stats(batches: Callable[[], Iterable[dict]], groups: Iterable[str]) -> dict[str, dict]:
    """``{group: {"mean", "std"}}`` of the training clips, one pass over ``batches()`` per group.

    Args:
        batches: gives batches ``{column: array}`` (each group under its name), e.g. a Ray
            Dataset's ``iter_batches``.
        groups: the groups to describe.
    """
    out = {}
    for group in groups:
        mean, std = band_stats((b[group] for b in batches()), group)
        out[group] = {"mean": mean, "std": std}
    return out


def row_stats(inputs: Inputs, rows: torch.Tensor, chunk: int = 256) -> dict[str, dict]:
    """``{group: {"mean", "std"}}`` of in-memory groups over some rows (a fold's training clips),
    in bounded chunks."""
    out = {}
    for group, values in inputs.items():
        chunks = (values[rows[i : i + chunk]].cpu().numpy() for i in range(0, len(rows), chunk))
        mean, std = band_stats(chunks, group)
        out[group] = {"mean": mean, "std": std}
    return out


class ArrayBatches:
    """Shuffled mini-batches of in-memory tensors, reshuffled by ``(seed, epoch)``.

    A batch is ``(inputs, labels)``, plus the rows of ``extra`` (e.g. actor ids) when given.
    ``rows`` restricts the batches to some row indices (a fold's training actors) without copying.

    The tensors may live on the GPU: then a batch is an index on the device, with no host copy.
    """

    def __init__(
        self,
        inputs: Inputs,
        labels: torch.Tensor,
        batch_size: int,
        seed: int,
        extra: torch.Tensor | None = None,
        rows: torch.Tensor | None = None,
    ) -> None:
        for group, values in inputs.items():
            if len(values) != len(labels):
                raise ValueError(f"{len(values)} {group} rows but {len(labels)} labels")
        self.inputs, self.labels, self.seed = inputs, labels, seed
        device = labels.device
        self.extra = None if extra is None else extra.to(device)
        all_rows = torch.arange(len(labels), device=device)
        self.rows = all_rows if rows is None else rows.to(device)
        self.batch_size = max(1, min(batch_size, len(self.rows)))
        self.steps = max(1, len(self.rows) // self.batch_size)  # drop the ragged last batch

    def epoch(self, epoch: int) -> Iterator[Batch]:
        shuffled = np.random.default_rng([self.seed, epoch]).permutation(len(self.rows))
        order = self.rows[torch.from_numpy(shuffled).to(self.rows.device)]
        for i in range(self.steps):
            rows = order[i * self.batch_size : (i + 1) * self.batch_size]
            inputs = {group: values[rows] for group, values in self.inputs.items()}
            if self.extra is None:
                yield inputs, self.labels[rows]
            else:
                yield inputs, self.labels[rows], self.extra[rows]

    def __len__(self) -> int:
        return len(self.rows)


def ordered_batches(inputs: Inputs, labels: torch.Tensor, batch_size: int = 256) -> Iterator[Batch]:
    """``(inputs, labels)`` in order, in batches of ``batch_size`` (for evaluation)."""
    for start in range(0, len(labels), batch_size):
        end = start + batch_size
        yield {g: v[start:end] for g, v in inputs.items()}, labels[start:end]


# ----------------------------------------------------------------------------------------------
# The learner


@dataclass(frozen=True)
class EpochPlan:
    """How many optimiser steps an epoch and the whole schedule take."""

    steps_per_epoch: int
    epochs: int
    warmup_epochs: float

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def warmup_steps(self) -> int:
        return round(self.warmup_epochs * self.steps_per_epoch)


class Learner:
    """A model, its optimiser and learning-rate schedule, trained one epoch at a time.

    Args:
        cfg: the train config (model, optimiser, schedule, augmentation).
        num_classes: size of the label set.
        norm: ``{group: {"mean", "std"}}`` of the training clips, for every group the model
            reads (``cfg.model.groups``).
        steps_per_epoch: optimiser steps in one epoch (fixes the LR schedule).
        device: where the model runs.
        wrap: applied to the model before the optimiser is built (Ray Train's ``prepare_model``
            for DDP); the identity by default.
        seed: seeds the learner's own ``np.random.Generator`` (mixup's weights); by default
            ``cfg.train.seed``. Give each rank and each fold its own: nothing draws from numpy's
            global generator.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        num_classes: int,
        norm: dict[str, dict[str, list[float]]],
        steps_per_epoch: int,
        device: torch.device,
        wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
        seed: int | None = None,
    ) -> None:
        self.cfg, self.device = cfg, device
        self.rng = np.random.default_rng(cfg.train.seed if seed is None else seed)
        self.num_classes = num_classes
        missing = set(cfg.model.inputs) - set(norm)
        if missing:
            raise ValueError(f"no normalisation statistics for the groups {sorted(missing)}")
        self.norm_stats = {g: norm[g] for g in cfg.model.inputs}
        self.norm = norm_tensors(self.norm_stats, device)
        model = build_from_spec(to_dict(cfg.model), num_classes, self.norm_stats)
        model = model.to(device)  # channels-last weights, as build_model made them
        self.model = wrap(model) if wrap is not None else model
        self.optimizer = make_optimizer(self.model, cfg)
        self.plan = EpochPlan(max(1, steps_per_epoch), cfg.optim.epochs, cfg.optim.warmup_epochs)
        self.step = 0

    def lr(self, step: int | None = None) -> float:
        """The learning rate at ``step`` (default: the next step)."""
        step = self.step if step is None else step
        plan = self.plan
        optim = self.cfg.optim
        return lr_at(step, plan.total_steps, plan.warmup_steps, optim.lr, optim.schedule)

    def train_step(self, inputs: Inputs, labels: torch.Tensor) -> torch.Tensor:
        """One optimiser step on raw feature groups; the (detached) loss."""
        cfg, aug = self.cfg, self.cfg.augment
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr() * group.get("lr_scale", 1.0)
        inputs = {g: inputs[g].to(self.device) for g in self.norm}
        x = shift_and_gain(inputs["logmel"].float(), aug.freq_shift, aug.gain_db)
        x = normalise(x, *self.norm["logmel"])
        x = spec_augment(x, aug.freq_mask, aug.time_mask, aug.num_masks)
        side = normalised_side(inputs, self.norm)
        x, y_a, y_b, lam, side = mixup(
            x[:, None], labels.to(self.device), aug.mixup_alpha, self.rng, side
        )
        logits = logits_of(self.model, x, side)
        smooth = cfg.optim.label_smoothing
        loss = lam * F.cross_entropy(logits, y_a, label_smoothing=smooth)
        if lam < 1.0:
            loss = loss + (1.0 - lam) * F.cross_entropy(logits, y_b, label_smoothing=smooth)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
        self.optimizer.step()
        self.step += 1
        return loss.detach()

    def train_epoch(
        self,
        batches: Iterable[Batch],
        on_batch: Callable[[int, Batch], None] | None = None,
    ) -> tuple[float, int]:
        """Train on every batch once: ``(loss summed over examples, examples)``.

        Args:
            batches: the epoch's ``(inputs, labels)`` batches.
            on_batch: called with ``(index, batch)`` before each optimiser step.
        """
        self.model.train()
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        count = 0
        for index, batch in enumerate(batches):
            if on_batch is not None:
                on_batch(index, batch)
            loss = self.train_step(batch[0], batch[1])
            total += loss.double() * len(batch[1])
            count += len(batch[1])
        return float(total), count

    def evaluate(self, batches: Iterable[Batch]) -> dict:
        """Metrics of the plain model (see :func:`evaluate`)."""
        return evaluate(self.model, batches, self.norm, self.num_classes, self.device)

    def state_dict(self) -> dict:
        return {
            "model": unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
        }

    def load_state_dict(self, state: dict) -> None:
        if "model" in state:
            unwrap(self.model).load_state_dict(state["model"])
        if "optimizer" in state:  # a checkpoint without train state resumes weights only
            self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state.get("step", 0))


def evaluate(
    model: torch.nn.Module,
    batches: Iterable[Batch],
    norm: Norm,
    num_classes: int,
    device: torch.device,
) -> dict:
    """Accuracy, UAR, macro-F1, confusion, ``n`` and mean cross-entropy ``loss`` over ``batches``.

    Under ``torch.distributed`` every rank must call this: metric states and the loss are summed
    over ranks, so each rank passes only its own share of the rows. The plain module is used (not
    a DDP wrapper), so ranks with different row counts never wait on each other mid-way; the model
    is left in the mode it was in.
    """
    plain = unwrap(model)
    was_training = plain.training
    plain.eval()
    collection = metric_collection(num_classes, sync=True).to(device)
    loss_sum = torch.zeros(2, dtype=torch.float64, device=device)
    with torch.no_grad():
        for inputs, labels in batches:
            inputs = {g: inputs[g].to(device) for g in norm}
            x = normalise(inputs["logmel"].float(), *norm["logmel"])[:, None]
            y = labels.to(device)
            logits = logits_of(plain, x, normalised_side(inputs, norm))
            collection.update(logits.argmax(dim=1), y)
            loss_sum[0] += F.cross_entropy(logits, y, reduction="sum").double()
            loss_sum[1] += len(y)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(loss_sum)
    out = summarise(collection.compute())
    out["loss"] = float(loss_sum[0] / loss_sum[1].clamp(min=1))
    plain.train(was_training)
    return out
