"""Checkpoint folders: plain tensors and JSON only, so loading never runs code from the file.

A checkpoint folder (local or ``s3://``) holds

- ``model.pt``: the model's ``state_dict`` (tensors only; loaded with ``weights_only=True``),
- ``meta.json`` (``"version": 2``): everything needed to rebuild and use the model (label set
  and names, feature parameters, the hash of every feature group the model reads under
  ``groups`` and its training statistics under ``group_norm``: mean/std per channel of a
  frame-level group, per value of the others; model name/width/dropout/groups, epoch, actor
  split (and the same speakers under ``split_speakers`` as keys that hold across corpora and
  unions), metrics),
- ``train_state.pt`` (optional): optimiser state, epoch and step, for resuming training.

A version-1 ``meta.json`` (no ``"version"``) kept the log-mel apart: its hash and shape in
``feature_hash``/``feature_shape``, its statistics in ``norm``; :func:`meta_from_v1` reads it as
version 2.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from typing import TYPE_CHECKING, Any

import numpy as np

from knd.config.architectures import ARCHITECTURES
from knd.config.loading import build
from knd.config.schema import ConfigError, TrainConfig
from knd.data import storage
from knd.learning.meta_schema import META_VERSION, Meta, MetaV1

if TYPE_CHECKING:
    import torch
    from torch import nn
# torch is imported where tensors are read or written: a driver that only reads meta.json (knd
# score's, before its actors start) does not pay torch's import (about 3 s on 2 cores).

MODEL_FILE = "model.pt"
META_FILE = "meta.json"
TRAIN_STATE_FILE = "train_state.pt"


def make_meta(
    cfg: TrainConfig,
    features: dict,
    norm: dict,
    split: dict,
    run: str,
    **extra: Any,
) -> dict:
    """The ``meta.json`` of a checkpoint trained with ``cfg`` (``knd train`` and ``knd tune``).

    Args:
        cfg: the train config (label set, model and the groups it reads, recipe).
        features: a (version-2) feature manifest, or anything with its ``feature_params`` and
            ``feature_groups``.
        norm: ``{group: {"mean": [...], "std": [...]}}`` of the training clips for every group
            of ``cfg.model.inputs``.
        split: ``{"train": [...], "val": [...], "test": [...]}`` actor ids.
        run: the run's name.
        extra: more keys (``epoch``, ``metrics``...).
    """
    from knd.data.label_sets import label_set
    from knd.data.shards import manifest_emotions, manifest_groups

    specs = manifest_groups(features)
    groups, inputs = list(cfg.model.groups), cfg.model.inputs
    labels = label_set(cfg.labels, manifest_emotions(features))

    def plain(stats: dict) -> dict:
        return {key: np.asarray(stats[key], dtype=float).tolist() for key in ("mean", "std")}

    return {
        "version": META_VERSION,
        "label_set": labels.spec,
        "labels": list(labels.names),
        "label_merges": dict(labels.merges),
        "feature_params": features["feature_params"],
        "corpus_checksum": features.get("corpus_checksum"),
        "groups": {g: specs[g]["hash"] for g in inputs if g in specs},
        "model": {
            "name": cfg.model.name,
            "width": cfg.model.width,
            "dropout": cfg.model.dropout,
            "groups": groups,
            "fusion_width": cfg.model.fusion_width,
            **_own_model_keys(cfg.model),
        },
        "group_norm": {g: plain(norm[g]) for g in inputs},
        "split": {part: [int(a) for a in split.get(part, ())] for part in ("train", "val", "test")},
        **_split_speakers(features, split),
        "recipe": cfg.recipe,
        "run": run,
        **extra,
    }


def _split_speakers(features: dict, split: dict) -> dict:
    """``{"split_speakers": {part: [key, ...]}}``, the split as
    :func:`~knd.data.datasets.speaker_keys` (empty when the features' corpus has no checksum)."""
    from knd.data.datasets import speaker_keys

    keys = speaker_keys(features)
    if keys is None:
        return {}
    by_part = {}
    for part in ("train", "val", "test"):
        by_part[part] = [keys[int(a)] for a in split.get(part, ()) if int(a) in keys]
    return {"split_speakers": by_part}


def _own_model_keys(model) -> dict:
    """The ``model.*`` keys the model table records for this architecture (``meta_keys``), and
    the encoder a fine-tune started from (its config rebuilds the architecture when scoring,
    its hash says which it was)."""
    arch = ARCHITECTURES[model.name]
    keys = {key: getattr(model, key) for key in arch.meta_keys}
    if not arch.encoder:
        return keys
    from knd.learning.heads import encoder_spec

    return keys | encoder_spec(model.encoder)


def model_inputs(meta: dict) -> tuple[str, ...]:
    """The groups a checkpoint's model is fed: the log-mel (every model's first argument) and
    the groups it reads (``ModelConfig.inputs``); a v1 checkpoint without ``model.groups`` reads
    the log-mel alone."""
    names = meta["model"].get("groups", ["logmel"])
    return ("logmel", *(g for g in names if g != "logmel"))


def model_groups(meta: dict) -> dict[str, str | None]:
    """``{group: hash}`` of every feature group a checkpoint's model is fed."""
    return {g: meta["groups"].get(g) for g in model_inputs(meta)}


def meta_from_v1(meta: dict) -> dict:
    """A checkpoint meta in the version-2 shape (a v2 one as it is): the one reader of v1.

    Version 1 kept the log-mel's hash in ``feature_hash`` (and its shape in ``feature_shape``)
    and its statistics in ``norm``, beside ``groups``/``group_norm`` of the other groups (absent
    in metas written before groups existed); here the log-mel joins the other groups.
    """
    if meta.get("version", 1) != 1:
        return meta
    out = {k: v for k, v in meta.items() if k not in ("feature_hash", "feature_shape", "norm")}
    others = meta.get("groups", {})
    out["groups"] = {"logmel": meta["feature_hash"]} | {
        g: h for g, h in others.items() if g != "logmel"
    }
    out["group_norm"] = {"logmel": meta["norm"]} | meta.get("group_norm", {})
    return {"version": META_VERSION, **out}


def _tensor_bytes(obj: Any) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def save_checkpoint(
    folder: str, model: nn.Module, meta: dict, train_state: dict | None = None
) -> None:
    """Write ``model.pt``, ``meta.json`` and optionally ``train_state.pt`` into ``folder``.

    Each file is written atomically; ``meta.json`` goes last so a folder with a ``meta.json``
    is complete.

    Args:
        folder: local folder or ``s3://`` prefix (created if missing).
        model: the model, possibly wrapped in DDP; its weights are saved on the CPU.
        meta: JSON-serialisable description (see the module docstring).
        train_state: optimiser state, epoch, step... (tensors, numbers, strings, lists, dicts).
    """
    from knd.learning.models import unwrap

    state = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    storage.write_bytes(storage.join(folder, MODEL_FILE), _tensor_bytes(state))
    if train_state is not None:
        storage.write_bytes(storage.join(folder, TRAIN_STATE_FILE), _tensor_bytes(train_state))
    storage.write_text(storage.join(folder, META_FILE), json.dumps(meta, indent=2) + "\n")


def load_tensors(uri: str, device: str | torch.device = "cpu") -> Any:
    """``torch.load`` of one file with ``weights_only=True``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file holds anything but tensors and plain containers (e.g. a pickled
            object whose unpickling would run code), or is not a torch file at all.
    """
    import torch

    if not storage.exists(uri):
        raise FileNotFoundError(f"checkpoint file not found: {uri}")
    data = storage.read_bytes(uri)
    try:
        return torch.load(io.BytesIO(data), map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{uri}: refused to load, not a plain-tensor file ({reason})") from None
    except (RuntimeError, EOFError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{uri}: not a readable torch file ({reason})") from None


def load_meta(folder: str) -> dict:
    """The ``meta.json`` of a checkpoint folder.

    Raises:
        FileNotFoundError: no ``meta.json`` (not a checkpoint folder, or an incomplete one).
        ValueError: ``meta.json`` is not valid JSON, or not a valid meta (:func:`meta_problem`).
    """
    uri = storage.join(folder, META_FILE)
    if not storage.exists(uri):
        raise FileNotFoundError(f"not a checkpoint folder (no {META_FILE}): {folder}")
    data = storage.read_bytes(uri)
    if len(data) > MAX_META_BYTES:
        raise ValueError(
            f"{uri}: {len(data)} bytes, over the {MAX_META_BYTES} of a checkpoint meta"
        )
    try:
        meta = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # ValueError: also an over-long integer
        raise ValueError(f"{uri}: not valid JSON ({str(e).splitlines()[0]})") from None
    problem = meta_problem(meta)
    if problem:
        raise ValueError(f"{uri}: not a valid checkpoint meta ({problem})")
    return meta_from_v1(meta)


MAX_META_BYTES = 16 << 20


def meta_problem(meta: Any) -> str | None:
    """What is wrong with a parsed ``meta.json`` (None when it fits the schema of
    :mod:`~knd.learning.meta_schema`; a version 1 is read as version 2 once ``MetaV1`` fits)."""
    if not isinstance(meta, dict):
        return f"expected an object, got {type(meta).__name__}"
    try:
        if meta.get("version", 1) == 1:
            build(MetaV1, meta, exact=True)
        build(Meta, meta_from_v1(meta), exact=True)
    except ConfigError as e:
        return str(e)[:300]  # a hostile value can be megabytes long
    return None


def load_model(folder: str, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model of a checkpoint folder, in eval mode on ``device``.

    Returns:
        ``(model, meta)``.

    Raises:
        FileNotFoundError: the folder lacks ``meta.json`` or ``model.pt``.
        ValueError: ``model.pt`` is not a plain state dict or does not fit the described model.
    """
    from knd.learning.models import build_from_spec

    meta = load_meta(folder)
    spec = meta["model"]
    try:
        model = build_from_spec(spec, len(meta["labels"]), meta["group_norm"])
    except (KeyError, ValueError) as e:  # e.g. statistics the architecture cannot read
        uri = storage.join(folder, META_FILE)
        raise ValueError(f"{uri}: not a valid checkpoint meta ({e})") from None
    uri = storage.join(folder, MODEL_FILE)
    state = load_tensors(uri, device)
    if not isinstance(state, dict):
        raise ValueError(f"{uri}: expected a state dict, got {type(state).__name__}")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{uri}: weights do not fit model {spec['name']!r} ({e})") from None
    return model.to(device).eval(), meta


def checkpoint_hash(folder: str) -> str:
    """sha256 of a checkpoint's ``meta.json`` and ``model.pt``: what a cached model is keyed by,
    so a folder rewritten in place (a new training run) is never served from a stale cache."""
    digest = hashlib.sha256()
    for name in (META_FILE, MODEL_FILE):
        digest.update(storage.read_bytes(storage.join(folder, name)))
    return digest.hexdigest()


def load_train_state(folder: str, device: str | torch.device = "cpu") -> dict | None:
    """The ``train_state.pt`` of a checkpoint folder, or None if it has none."""
    uri = storage.join(folder, TRAIN_STATE_FILE)
    if not storage.exists(uri):
        return None
    return load_tensors(uri, device)
