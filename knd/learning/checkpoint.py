"""Checkpoint folders: plain tensors and JSON only, so loading never runs code from the file.

A checkpoint folder (local or ``s3://``) holds

- ``model.pt``: the model's ``state_dict`` (tensors only; loaded with ``weights_only=True``),
- ``meta.json`` (``"version": 2``): everything needed to rebuild and use the model (label set
  and names, feature parameters, the hash of every feature group the model reads under
  ``groups`` and its training statistics under ``group_norm``: mean/std per channel of a
  frame-level group, per value of the others; model name/width/dropout/groups, epoch, actor
  split, metrics),
- ``train_state.pt`` (optional): optimiser state, epoch and step, for resuming training.

A version-1 ``meta.json`` (no ``"version"``) kept the log-mel apart: its hash and shape in
``feature_hash``/``feature_shape``, its statistics in ``norm``; :func:`meta_from_v1` reads it as
version 2.
"""

from __future__ import annotations

import io
import json
import math
import pickle
from typing import TYPE_CHECKING, Any

import numpy as np

from knd.audio.features import GROUPS
from knd.config.architectures import ARCHITECTURES
from knd.config.schema import TrainConfig
from knd.data import storage

if TYPE_CHECKING:
    import torch
    from torch import nn
# torch is imported where tensors are read or written: a driver that only reads meta.json (knd
# score's, before its actors start) does not pay torch's import (about 3 s on 2 cores).

MODEL_FILE = "model.pt"
META_FILE = "meta.json"
TRAIN_STATE_FILE = "train_state.pt"
META_VERSION = 2


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
        "recipe": cfg.recipe,
        "run": run,
        **extra,
    }


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
        ValueError: ``meta.json`` is not valid JSON.
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
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{uri}: not valid JSON ({str(e).splitlines()[0]})") from None
    problem = _v1_problem(meta) or meta_problem(meta_from_v1(meta))
    if problem:
        raise ValueError(f"{uri}: not a valid checkpoint meta ({problem})")
    return meta_from_v1(meta)


MAX_META_BYTES = 16 << 20
MAX_CLASSES = 64
MAX_WIDTH = 1024
MAX_BANDS = 1024


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _v1_problem(meta: Any) -> str | None:
    """What is wrong with the keys only a version-1 meta has (None for a version-2 meta)."""
    if not isinstance(meta, dict):
        return f"expected an object, got {type(meta).__name__}"
    if meta.get("version", 1) != 1:
        return None
    for key, kind in {"norm": dict, "feature_hash": str, "feature_shape": list}.items():
        if key not in meta:
            return f"missing key {key!r}"
        if not isinstance(meta[key], kind):
            return f"{key}: expected {kind.__name__}, got {type(meta[key]).__name__}"
    shape = meta["feature_shape"]
    if len(shape) != 2 or not all(_is_int(x) and 1 <= x <= 1_000_000 for x in shape):
        return f"feature_shape: expected [n_mels, n_frames], got {shape!r}"
    if not isinstance(meta.get("groups", {}), dict):
        return "groups: expected {group: hash}"
    if not isinstance(meta.get("group_norm", {}), dict):
        return "group_norm: expected an object"
    return None


def meta_problem(meta: Any) -> str | None:
    """What is wrong with a parsed version-2 ``meta.json`` (None when it fits the schema).

    Checks what loading and using the model reads: types, and sizes bounded so a hostile file
    cannot ask for a huge model (``width``), label set or normalisation vector.
    """
    if not isinstance(meta, dict):
        return f"expected an object, got {type(meta).__name__}"
    required = {
        "version": int, "labels": list, "model": dict, "groups": dict, "group_norm": dict,
        "feature_params": dict, "label_set": str, "split": dict,
    }  # fmt: skip
    for key, kind in required.items():
        if key not in meta:
            return f"missing key {key!r}"
        if not isinstance(meta[key], kind):
            return f"{key}: expected {kind.__name__}, got {type(meta[key]).__name__}"
    if meta["version"] != META_VERSION:
        return f"version: expected 1 or {META_VERSION}, got {meta['version']!r} (a newer knd?)"
    labels = meta["labels"]
    if not 2 <= len(labels) <= MAX_CLASSES or not all(
        isinstance(x, str) and 0 < len(x) <= 64 for x in labels
    ):
        return f"labels: expected 2..{MAX_CLASSES} names"
    model = meta["model"]
    if not isinstance(model.get("name"), str) or len(model["name"]) > 64:
        return "model.name: expected a model name"
    if "width" in model and not (_is_int(model["width"]) and 1 <= model["width"] <= MAX_WIDTH):
        return f"model.width: expected an integer in 1..{MAX_WIDTH}, got {model['width']!r}"
    if "dropout" in model and not (_is_number(model["dropout"]) and 0 <= model["dropout"] < 1):
        return f"model.dropout: expected a number in [0, 1), got {model['dropout']!r}"
    problem = _groups_problem(meta)
    if problem:
        return problem
    for key in ("train", "val", "test"):
        actors = meta["split"].get(key)
        if not isinstance(actors, list) or not all(_is_int(a) for a in actors):
            return f"split.{key}: expected a list of actor numbers"
    return None


MAX_GROUP_VALUES = 1 << 17
"""Values in one group's statistics (an encoder's: layers x 2 x hidden, e.g. 25 x 2048)."""


def _numbers_problem(values: Any, depth: int) -> str | None:
    """None when ``values`` is a list (of lists, ``depth`` deep) of finite numbers."""
    if not isinstance(values, list) or not values:
        return "expected a non-empty list"
    if depth == 1:
        return None if all(_is_number(v) for v in values) else "expected finite numbers"
    for row in values:
        problem = _numbers_problem(row, depth - 1)
        if problem:
            return problem
    return None


def _stats_problem(key: str, stats: Any, frame_level: bool) -> str | None:
    """What is wrong with one group's ``{"mean", "std"}``: a frame-level group's are one value
    per channel (at most ``MAX_BANDS``), the others' a list or a table of values."""
    if not isinstance(stats, dict):
        return f"{key}: expected an object"
    if frame_level:
        return _channel_stats_problem(key, stats)
    shapes = []
    for part in ("mean", "std"):
        values = stats.get(part)
        depth = 2 if isinstance(values, list) and values and isinstance(values[0], list) else 1
        problem = _numbers_problem(values, depth)
        if problem:
            return f"{key}.{part}: {problem}"
        shape = np.shape(values)
        if len(shape) != depth or not 1 <= int(np.prod(shape)) <= MAX_GROUP_VALUES:
            return f"{key}.{part}: expected a list (or a table) of 1..{MAX_GROUP_VALUES} numbers"
        shapes.append(shape)
    if shapes[0] != shapes[1]:
        return f"{key}: mean and std differ in shape"
    return None


def _channel_stats_problem(key: str, stats: dict) -> str | None:
    for part in ("mean", "std"):
        values = stats.get(part)
        if not isinstance(values, list) or not 1 <= len(values) <= MAX_BANDS:
            return f"{key}.{part}: expected a list of 1..{MAX_BANDS} numbers"
        if not all(_is_number(v) for v in values):
            return f"{key}.{part}: expected finite numbers"
    if len(stats["mean"]) != len(stats["std"]):
        return f"{key}: mean and std differ in length"
    return None


def _groups_problem(meta: dict) -> str | None:
    """What is wrong with the feature-group keys (``model.groups`` and ``model.fusion_width``
    are optional: v1 metas written before groups existed lack them)."""
    model_groups = meta["model"].get("groups", ["logmel"])
    if not isinstance(model_groups, list) or not all(g in GROUPS for g in model_groups):
        return f"model.groups: expected a list of {list(GROUPS)}"
    width = meta["model"].get("fusion_width", 32)
    if not (_is_int(width) and 1 <= width <= MAX_WIDTH):
        return f"model.fusion_width: expected an integer in 1..{MAX_WIDTH}, got {width!r}"
    problem = _encoder_problem(meta["model"])
    if problem:
        return problem
    hashes, group_norm = meta["groups"], meta["group_norm"]
    if not all(isinstance(h, str) and len(h) <= 128 for h in hashes.values()):
        return "groups: expected {group: hash}"
    for group in model_inputs(meta):
        if group not in hashes:
            return f"groups: no hash for the model's group {group!r}"
        if group not in group_norm:
            return f"group_norm: no statistics for the model's group {group!r}"
    for group, stats in group_norm.items():
        if group not in GROUPS:
            return f"group_norm: unknown group {group!r}"
        frame_level = GROUPS[group].level == "frame"
        problem = _stats_problem(f"group_norm.{group}", stats, frame_level)
        if problem:
            return problem
    return None


def _encoder_problem(model: dict) -> str | None:
    layer = model.get("layer", -1)
    if not (_is_int(layer) and -1 <= layer <= 1000):
        return f"model.layer: expected an integer in -1..1000, got {layer!r}"
    arch = ARCHITECTURES.get(model["name"])
    if arch is not None and arch.encoder:
        from knd.learning.heads import (
            encoder_config_problem,  # torch: only for a fine-tuned encoder
        )

        return encoder_config_problem(model.get("encoder_config"))
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
    except (KeyError, ValueError) as e:  # e.g. an unknown model name
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


def load_train_state(folder: str, device: str | torch.device = "cpu") -> dict | None:
    """The ``train_state.pt`` of a checkpoint folder, or None if it has none."""
    uri = storage.join(folder, TRAIN_STATE_FILE)
    if not storage.exists(uri):
        return None
    return load_tensors(uri, device)
