"""Pretrained speech encoders (wav2vec 2.0, HuBERT, WavLM, ...) in the Hugging Face format.

An encoder is named by a local folder as ``save_pretrained`` writes it and ``hf
download`` fetches it (``config.json`` + ``model.safetensors``, optionally
``preprocessor_config.json``), or by a hub id where the network allows. Its identity is the hash
of those files' bytes (:func:`folder_hash`), not its name: features and checkpoints record the
hash, so a folder whose weights changed is refused rather than silently mixed.

Two uses:

- frozen: :func:`layer_stats` turns a stretch of speech into per-layer pooled statistics (mean
  and standard deviation over frames of every hidden state), the ``embedding`` feature group;
- fine-tuned: :func:`build_encoder` gives the bare module, trained end to end by
  :class:`knd.learning.models.EncoderClassifier` on the ``waveform`` group.

``transformers`` is imported on first use only, so importing knd stays fast.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass, field

import numpy as np

IDENTITY_FILES = ("config.json", "preprocessor_config.json")
"""Files besides the weights that decide what an encoder computes."""

DEFAULT_RATE = 16_000
"""The rate every public speech encoder was trained at (when the folder does not say)."""

MIN_SAMPLES = 400
"""25 ms at 16 kHz: the receptive field of one frame of the convolutional feature extractor."""


class EncoderError(ValueError):
    """An encoder folder that cannot be used; the message is one line naming the folder."""


@dataclass(frozen=True)
class EncoderInfo:
    """What a folder's config says about an encoder, without loading its weights."""

    folder: str
    model_type: str
    hidden_size: int
    num_layers: int
    sample_rate: int
    normalize: bool
    """Standardise each input (zero mean, unit variance), as its feature extractor does."""
    config: dict = field(default_factory=dict, compare=False, hash=False, repr=False)
    """The whole ``config.json`` (a fine-tuned checkpoint stores it)."""

    @property
    def num_states(self) -> int:
        """Hidden states returned: the convolutional projection, then one per layer."""
        return self.num_layers + 1


def resolve(name: str) -> str:
    """A local folder holding ``name``'s files: ``name`` itself, or a hub snapshot.

    Raises:
        EncoderError: not a folder and the hub cannot provide it (offline, unknown id).
    """
    if not name:
        raise EncoderError("no encoder named (set features.encoder or model.encoder)")
    if os.path.isdir(name):
        return os.path.abspath(name)
    parts = name.split("/")
    if len(parts) != 2 or not all(parts) or name.startswith((".", "~")) or ":" in name:
        raise EncoderError(f"encoder {name}: no such folder (nor a hub id like org/model)")
    return _hub_snapshot(name)


@functools.lru_cache(maxsize=8)
def _hub_snapshot(name: str) -> str:
    """The local snapshot of a hub id, asked of the hub once per process (not once per clip)."""
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(name, allow_patterns=["*.json", "*.safetensors"])
    except Exception as e:  # noqa: BLE001 - the hub's errors vary; one line says why
        raise EncoderError(
            f"encoder {name}: not a local folder and the hub cannot provide it "
            f"({type(e).__name__}); download it where there is internet "
            f"(hf download {name} --local-dir DIR) and pass the folder"
        ) from None


def _weight_files(folder: str) -> list[str]:
    names = sorted(n for n in os.listdir(folder) if n.endswith(".safetensors"))
    if not names:
        raise EncoderError(
            f"encoder {folder}: no *.safetensors weights (save_pretrained writes them)"
        )
    return names


@functools.lru_cache(maxsize=16)
def _hash_files(folder: str, stamp: tuple) -> str:
    digest = hashlib.sha256()
    for name in (*IDENTITY_FILES, *_weight_files(folder)):
        path = os.path.join(folder, name)
        if not os.path.exists(path):
            continue
        digest.update(name.encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def folder_hash(name: str) -> str:
    """16 hex digits over the bytes of the config, preprocessor config and weights.

    Cached per process by the files' sizes and modification times: a multi-GB folder is read once.
    """
    folder = resolve(name)
    files = (*IDENTITY_FILES, *_weight_files(folder))
    stamp = tuple(
        (n, s.st_size, s.st_mtime_ns)
        for n in files
        if os.path.exists(p := os.path.join(folder, n)) and (s := os.stat(p))
    )
    return _hash_files(folder, stamp)


def _read_json(path: str, folder: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise EncoderError(f"encoder {folder}: unreadable {os.path.basename(path)} ({e})") from None


def describe(name: str) -> EncoderInfo:
    """The :class:`EncoderInfo` of an encoder folder (reads its JSON files only).

    Raises:
        EncoderError: no folder, no ``config.json``, or a config without a speech encoder's sizes.
    """
    folder = resolve(name)
    config_path = os.path.join(folder, "config.json")
    if not os.path.exists(config_path):
        raise EncoderError(f"encoder {folder}: no config.json (not a Hugging Face model folder)")
    config = _read_json(config_path, folder)
    pre_path = os.path.join(folder, "preprocessor_config.json")
    pre = _read_json(pre_path, folder) if os.path.exists(pre_path) else {}
    try:
        return EncoderInfo(
            folder=folder,
            model_type=str(config["model_type"]),
            hidden_size=int(config["hidden_size"]),
            num_layers=int(config["num_hidden_layers"]),
            sample_rate=int(pre.get("sampling_rate", DEFAULT_RATE)),
            normalize=bool(pre.get("do_normalize", True)),
            config=config,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise EncoderError(f"encoder {folder}: config.json lacks {e} of a speech encoder") from None


def _quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def build_encoder(config: dict):
    """A randomly initialised encoder of a stored ``config.json`` (weights come from a state dict).

    A fine-tuned checkpoint carries its encoder's config, so scoring it needs no folder.
    """
    _quiet_transformers()
    from transformers import AutoConfig, AutoModel

    config = dict(config)
    kind = config.pop("model_type")
    return AutoModel.from_config(AutoConfig.for_model(kind, **config))


def load_pretrained(name: str):
    """The encoder module of a folder with its pretrained weights, in train mode.

    Raises:
        EncoderError: the folder is not a loadable speech encoder.
    """
    folder = resolve(name)
    describe(folder)  # one-line errors for a folder that is not an encoder at all
    _quiet_transformers()
    from transformers import AutoModel

    try:
        return AutoModel.from_pretrained(folder)
    except (OSError, ValueError, KeyError) as e:
        raise EncoderError(f"encoder {folder}: cannot load ({str(e).splitlines()[0]})") from None


@functools.lru_cache(maxsize=2)
def _frozen(folder: str, device: str) -> tuple[object, EncoderInfo]:
    """An encoder and its description, loaded once per process and device (a Ray worker or
    actor keeps them for every clip it embeds)."""
    import torch

    model = load_pretrained(folder).to(torch.device(device)).eval()
    for param in model.parameters():
        param.requires_grad_(False)
    return model, describe(folder)


def standardise(wave, info: EncoderInfo):
    """The input the encoder was trained on: zero mean, unit variance when its extractor says so."""
    if not info.normalize:
        return wave
    return (wave - wave.mean(dim=-1, keepdim=True)) / (wave.var(dim=-1, keepdim=True) + 1e-7).sqrt()


def layer_stats(wave: np.ndarray, sample_rate: int, name: str, device: str = "cpu") -> np.ndarray:
    """Per-layer pooled statistics of one stretch of mono speech: the ``embedding`` group.

    Args:
        wave: float32 mono samples (speech only: no padding).
        sample_rate: rate of ``wave``; resampled to the encoder's rate when they differ.
        name: encoder folder (or hub id).
        device: ``cpu`` or ``cuda``. float32 on both: a head learns on these values, and bf16
            states would differ from the float32 ones a CPU prepare stored.

    Returns:
        float32 ``[num_states, 2 * hidden_size]``: for every hidden state (the convolutional
        projection, then each transformer layer), its mean then its standard deviation over frames.
    """
    import torch

    from knd.audio import waveform

    model, info = _frozen(resolve(name), device)
    wave = waveform.resample(np.asarray(wave, dtype=np.float32), sample_rate, info.sample_rate)
    if len(wave) < MIN_SAMPLES:  # shorter input gives no frame at all
        wave = np.pad(wave, (0, MIN_SAMPLES - len(wave)))
    x = standardise(torch.from_numpy(np.ascontiguousarray(wave))[None].to(device), info)
    with torch.inference_mode():
        states = model(x, output_hidden_states=True).hidden_states
    stacked = torch.stack([s[0].float() for s in states])  # [num_states, frames, hidden]
    pooled = torch.cat([stacked.mean(dim=1), stacked.std(dim=1, unbiased=False)], dim=1)
    out = pooled.cpu().numpy()
    if not np.isfinite(out).all():
        raise waveform.AudioError(f"non-finite encoder states from {info.folder}")
    return out
