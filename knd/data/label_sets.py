"""Label sets: which of a dataset's labels a model learns, and how clips map to them.

A prepared dataset names its labels in its manifest (``emotions``; a clip's ``emotion`` column is
the 1-based position of its label there: RAVDESS's own codes 01..08 for RAVDESS). A train config's
``labels`` picks the classes:

- ``all``: every label the dataset has, in its order (RAVDESS: the eight emotions);
- a preset: ``ravdess8`` (RAVDESS's eight emotions), ``ravdess7`` (calm merged into neutral);
- a list (``labels=[happy,sad,angry]``): those labels only, in the dataset's order.

Clips of a label the set does not keep are left out of training and evaluation (their target is
``-1``), never silently given another class. A checkpoint records its class names and merges, so
features of another corpus map to its classes by name (:meth:`LabelSet.targets`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from knd.data.ravdess import EMOTIONS

ALL = "all"
PRESETS: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "ravdess8": (EMOTIONS, {}),
    "ravdess7": (tuple(e for e in EMOTIONS if e != "calm"), {"calm": "neutral"}),
}
"""Named label sets: their class names and the labels they merge into another."""
DROPPED = -1
"""The target of a clip whose label the set does not keep."""


@dataclass(frozen=True)
class LabelSet:
    """The classes a model learns (``names``, in class-id order) and the labels merged into one
    of them (``merges``: ``{label: class name}``)."""

    spec: str
    names: tuple[str, ...]
    merges: tuple[tuple[str, str], ...] = ()

    def target(self, label: str) -> int:
        """The class id of a clip labelled ``label`` (:data:`DROPPED` when not kept)."""
        name = dict(self.merges).get(label, label)
        return self.names.index(name) if name in self.names else DROPPED

    def code_table(self, emotions: Sequence[str]) -> list[int]:
        """``table[code]``: the class id of a clip of emotion ``code`` (1-based in
        ``emotions``; index 0 unused), for vectorised mapping."""
        return [DROPPED] + [self.target(e) for e in emotions]

    def targets(self, codes: np.ndarray, emotions: Sequence[str]) -> np.ndarray:
        """Class ids of emotion ``codes`` of a dataset whose labels are ``emotions``."""
        table = np.asarray(self.code_table(emotions), dtype=np.int64)
        codes = np.asarray(codes, dtype=np.int64)
        known = (codes >= 1) & (codes <= len(emotions))
        return np.where(known, table[np.clip(codes, 0, len(emotions))], DROPPED)

    def kept_codes(self, emotions: Sequence[str]) -> list[int]:
        """The emotion codes of ``emotions`` whose clips this set keeps."""
        return [code for code, e in enumerate(emotions, start=1) if self.target(e) != DROPPED]


def spec_name(labels: str | Iterable[str]) -> str:
    """The one-string form of a config's ``labels`` (``ravdess8``, ``all``, ``happy,sad``)."""
    if isinstance(labels, str):
        return labels
    return ",".join(labels)


def label_set(labels: str | Iterable[str], emotions: Sequence[str]) -> LabelSet:
    """The label set ``labels`` (``all``, a preset or names) over a dataset with ``emotions``.

    Raises:
        ValueError: a named label the dataset does not have, a preset with a class the dataset
            has no clip label for, or fewer than two classes.
    """
    spec = spec_name(labels)
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if parts == [ALL]:
        chosen = LabelSet(spec, tuple(emotions))
    elif len(parts) == 1 and parts[0] in PRESETS:
        names, merges = PRESETS[parts[0]]
        chosen = LabelSet(spec, names, tuple(sorted(merges.items())))
        sources = {chosen.target(e) for e in emotions} - {DROPPED}
        missing = [n for i, n in enumerate(names) if i not in sources]
        if missing:
            raise ValueError(
                f"labels={spec}: the dataset has no {missing} (its labels: {list(emotions)}); "
                "use labels=all or a list of its labels"
            )
    else:
        unknown = [p for p in parts if p not in emotions]
        if unknown:
            raise ValueError(f"labels: {unknown} not among the dataset's labels {list(emotions)}")
        chosen = LabelSet(spec, tuple(e for e in emotions if e in parts))
    if len(chosen.names) < 2:
        raise ValueError(f"labels={spec}: a classifier needs at least two labels")
    return chosen


def checkpoint_label_set(meta: dict) -> LabelSet:
    """The label set a checkpoint was trained with (a checkpoint written before label sets
    recorded their merges: ``ravdess7`` merged calm into neutral)."""
    merges = meta.get("label_merges")
    if merges is None:
        merges = PRESETS.get(meta.get("label_set", ""), ((), {}))[1]
    return LabelSet(
        meta.get("label_set", ALL), tuple(meta["labels"]), tuple(sorted(merges.items()))
    )
