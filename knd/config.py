"""Typed, frozen configuration: schemas here, values in ``configs/*.yaml``, overrides as key=value.

Every command has one schema (a frozen dataclass) and one YAML file of defaults,
``configs/<command>.yaml``. The YAML is the single source of default values; the dataclasses
carry the types and the help text. Values are layered, later wins:

1. ``configs/<command>.yaml``
2. ``configs/recipes/<recipe>.yaml`` for ``train`` (the recipe sets model and schedule)
3. ``config=FILE.yaml`` (e.g. the ``best_config.yaml`` written by ``knd analyse``)
4. ``key=value`` overrides from the command line (nested keys with dots, lists as ``[a,b]``)

An unknown key at any layer is an error that names the key.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

MODEL_NAMES = (
    "cpu_small",
    "plain_cnn",
    "fused_cnn",
    "egemaps_mlp",
    "embedding_head",
    "encoder_finetune",
    "resnet18",
    "resnet34",
    "vgg11_bn",
    "vgg16_bn",
)
"""Every architecture :func:`knd.learning.models.build_model` builds (the one list of them)."""

FEATURE_GROUPS = ("logmel", "prosody", "egemaps", "embedding", "waveform")
"""Every feature group ``knd prepare`` can compute (:mod:`knd.audio.features` describes each)."""


class ConfigError(ValueError):
    """A configuration problem, described in one line that names the key."""


def _help(text: str, **check: Any) -> Any:
    """A schema field with its help text and optional checks on its value.

    ``ge``/``gt``/``le``/``lt`` bound a number (each element of a tuple); ``plain_name`` asks for
    a single folder or file name (no ``/``, no ``..``, not empty). Every float must be finite.
    """
    return field(metadata={"help": text, **check})


# ----------------------------------------------------------------------------------------------
# Shared sections


@dataclass(frozen=True)
class RayConfig:
    address: str | None = _help("Ray cluster to join ('auto' or ray://...); none starts local Ray")
    num_cpus: int | None = _help("CPUs for a local Ray (none: all of this machine's)", ge=1)
    verbose: bool = _help("show Ray's own logs on the console (also KND_VERBOSE=1)")


@dataclass(frozen=True)
class FeatureConfig:
    """Everything that decides the log-mel features; its hash is checked by train and score."""

    sample_rate: int = _help(
        "feature sample rate in Hz; audio is resampled to it", ge=1000, le=384_000
    )
    clip_seconds: float = _help(
        "fixed clip length after trimming: shorter is padded, longer cut", gt=0, le=600
    )
    trim_db: float = _help(
        "leading/trailing audio quieter than peak minus this (dB) is trimmed", gt=0, le=200
    )
    n_fft: int = _help("FFT size in samples", ge=8, le=65536)
    win_length: int = _help("analysis window in samples", ge=1, le=65536)
    hop_length: int = _help("hop between frames in samples", ge=1, le=65536)
    n_mels: int = _help("mel bands", ge=1, le=1024)
    f_min: float = _help("lowest mel frequency in Hz", ge=0)
    f_max: float = _help("highest mel frequency in Hz", gt=0)
    dtype: Literal["float16", "float32"] = _help("stored feature dtype")
    groups: tuple[Literal[FEATURE_GROUPS], ...] = _help(
        "feature groups to compute: logmel (always), prosody (frame-level F0, voicing, energy), "
        "egemaps (88 openSMILE eGeMAPSv02 functionals per clip), embedding (per-layer mean and "
        "std of a pretrained speech encoder's states; needs features.encoder), waveform (the "
        "trimmed clip, for fine-tuning an encoder)"
    )
    encoder: str = _help(
        "pretrained speech encoder of the embedding group: a Hugging Face model folder "
        "(config.json + model.safetensors) or a hub id ('': none)"
    )

    @staticmethod
    def cross_checks(cfg: FeatureConfig) -> list[tuple[str, str]]:
        """Relations between the fields that torchaudio's transforms rely on."""
        problems = []
        if "logmel" not in cfg.groups:
            problems.append(("groups", f"must include logmel, got {list(cfg.groups)}"))
        if "embedding" in cfg.groups and not cfg.encoder:
            problems.append(("encoder", "must name an encoder folder: groups has embedding"))
        if len(set(cfg.groups)) != len(cfg.groups):
            problems.append(("groups", f"names a group twice: {list(cfg.groups)}"))
        if cfg.win_length > cfg.n_fft:
            problems.append(("win_length", f"must be <= n_fft ({cfg.n_fft}), got {cfg.win_length}"))
        if cfg.f_min >= cfg.f_max:
            problems.append(("f_min", f"must be < f_max ({cfg.f_max:g}), got {cfg.f_min:g}"))
        if cfg.f_max > cfg.sample_rate / 2:
            problems.append(
                (
                    "f_max",
                    f"must be <= sample_rate / 2 ({cfg.sample_rate / 2:g}), got {cfg.f_max:g}",
                )
            )
        return problems


@dataclass(frozen=True)
class SplitConfig:
    test_actors: tuple[int, ...] = _help("held-out test actors (speaker-independent)", ge=1, le=24)
    val_actors: tuple[int, ...] = _help(
        "validation actors, disjoint from the test actors "
        "([]: none; train on every other actor and keep the last epoch)",
        ge=1,
        le=24,
    )


@dataclass(frozen=True)
class ModelConfig:
    name: Literal[MODEL_NAMES] = _help("architecture")
    width: int = _help(
        "base channel width (cpu_small, plain_cnn and fused_cnn only)", ge=1, le=1024
    )
    dropout: float = _help("dropout before the classifier", ge=0, lt=1)
    groups: tuple[Literal[FEATURE_GROUPS], ...] = _help(
        "feature groups the model reads (fused_cnn: logmel plus any of prosody, egemaps; "
        "egemaps_mlp: egemaps; the others: logmel)"
    )
    fusion_width: int = _help(
        "width of each prosody/eGeMAPS branch before the fused classifier; the hidden width "
        "of the embedding_head and encoder_finetune heads",
        ge=1,
        le=4096,
    )
    layer: int = _help(
        "encoder layer the head reads (embedding_head; 0 is the convolutional projection); "
        "-1: a learned weighted sum of every layer",
        ge=-1,
        le=1000,
    )
    encoder: str = _help(
        "encoder_finetune: the pretrained encoder folder (or hub id) whose weights start training"
    )
    finetune_layers: int = _help(
        "encoder_finetune: transformer layers trained, counted from the top (the convolutional "
        "feature extractor always stays frozen)",
        ge=0,
        le=1000,
    )
    encoder_lr_scale: float = _help(
        "encoder_finetune: the encoder's learning rate as a fraction of optim.lr (the head's)",
        gt=0,
        le=1,
    )
    gradient_checkpointing: bool = _help(
        "encoder_finetune: recompute activations in the backward pass (less memory, ~30% slower)"
    )

    @property
    def inputs(self) -> tuple[str, ...]:
        """The groups a batch carries: the log-mel (every model's first argument, its statistics
        in every checkpoint) and the groups the model reads."""
        return ("logmel", *(g for g in self.groups if g != "logmel"))

    @staticmethod
    def cross_checks(cfg: ModelConfig) -> list[tuple[str, str]]:
        """Which groups each architecture reads."""
        groups = list(cfg.groups)
        if len(set(groups)) != len(groups):
            return [("groups", f"names a group twice: {groups}")]
        only = {"egemaps_mlp": "egemaps", "embedding_head": "embedding"}
        only["encoder_finetune"] = "waveform"
        if cfg.name == "encoder_finetune" and not cfg.encoder:
            return [("encoder", "encoder_finetune needs model.encoder (a model folder)")]
        if cfg.name in only:
            if groups != [only[cfg.name]]:
                return [("groups", f"{cfg.name} reads [{only[cfg.name]}] only, got {groups}")]
        elif cfg.name == "fused_cnn":
            if "logmel" not in groups:
                return [("groups", f"fused_cnn needs logmel among its groups, got {groups}")]
        elif groups != ["logmel"]:
            return [("groups", f"{cfg.name} reads [logmel] only, got {groups}")]
        return []


@dataclass(frozen=True)
class OptimConfig:
    lr: float = _help("peak learning rate (AdamW)", gt=0, le=10)
    weight_decay: float = _help("AdamW weight decay", ge=0, le=10)
    batch_size: int = _help("global batch size, split across workers", ge=1, le=1_000_000)
    epochs: int = _help("training epochs", ge=1, le=100_000)
    warmup_epochs: float = _help(
        "warm-up before the decay, in epochs (onecycle: its rising part)", ge=0, le=100_000
    )
    schedule: Literal["cosine", "onecycle"] = _help(
        "cosine: linear warm-up, cosine to 0; onecycle: cosine up from lr/25, cosine down to ~0"
    )
    label_smoothing: float = _help("cross-entropy label smoothing", ge=0, lt=1)
    grad_clip: float = _help("max gradient norm (0: off)", ge=0)


@dataclass(frozen=True)
class AugmentConfig:
    freq_mask: int = _help("SpecAugment: widest frequency mask in mel bands (0: off)", ge=0)
    time_mask: int = _help("SpecAugment: widest time mask in frames (0: off)", ge=0)
    num_masks: int = _help("SpecAugment: masks of each kind per example", ge=0, le=100)
    mixup_alpha: float = _help("mixup Beta(alpha, alpha) (0: off)", ge=0, le=1000)
    freq_shift: int = _help(
        "shift each clip up or down by up to this many mel bands (0: off)", ge=0
    )
    gain_db: float = _help(
        "add a random level of up to +/- this many dB to each clip (0: off)", ge=0, le=100
    )


@dataclass(frozen=True)
class TrainLoopConfig:
    num_workers: int = _help("Ray Train workers (DDP ranks)", ge=1, le=10_000)
    use_gpu: bool = _help("one GPU per worker; bf16 autocast and channels-last")
    cpus_per_worker: float = _help("CPUs reserved per worker", gt=0)
    max_failures: int = _help(
        "worker failures to recover from by resuming the last checkpoint", ge=-1
    )
    num_to_keep: int = _help("checkpoints kept (the best by checkpoint_metric)", ge=1)
    checkpoint_metric: Literal["val_uar", "val_loss"] = _help(
        "val_uar (highest) or val_loss (lowest) picks the best epoch"
    )
    seed: int = _help("random seed", ge=0)


@dataclass(frozen=True)
class WandbConfig:
    enabled: bool = _help("log to Weights & Biases (offline unless WANDB_API_KEY/WANDB_MODE)")
    project: str = _help("wandb project")


# ----------------------------------------------------------------------------------------------
# Command schemas


@dataclass(frozen=True)
class SynthConfig:
    required: typing.ClassVar[tuple[str, ...]] = ("out",)
    out: str | None = _help("output folder")
    actors: int = _help("number of actors (1..24)", ge=1, le=24)
    seed: int = _help("random seed; the same seed gives byte-identical files", ge=0)
    workers: int = _help("parallel processes (0: one per CPU)", ge=0, le=10_000)
    style: Literal["classic", "speech"] = _help(
        "classic: the original voice; speech: coarticulated phones, idiolects, subtler emotions"
    )


@dataclass(frozen=True)
class DownloadConfig:
    required: typing.ClassVar[tuple[str, ...]] = ("out",)
    out: str | None = _help("folder to extract RAVDESS into")
    url: str = _help("address of the speech zip")
    md5: str = _help("expected MD5 of the zip")
    archive_name: str = _help(
        "file name of the zip kept beside the extracted tree", plain_name=True
    )
    chunk_bytes: int = _help("download chunk size", ge=1, le=1 << 30)
    timeout_s: float = _help("network timeout per request", gt=0, le=86_400)


@dataclass(frozen=True)
class PrepareConfig:
    required: typing.ClassVar[tuple[str, ...]] = ("input", "output")
    input: str | None = _help("audio folder or s3:// prefix")
    output: str | None = _help("features folder or s3:// prefix")
    require_labels: bool = _help("reject files whose names are not RAVDESS names")
    features: FeatureConfig = _help("feature parameters")
    rows_per_shard: int = _help("rows per Parquet shard", ge=1, le=10_000_000)
    batch_size: int = _help(
        "fewest files per Ray task (each task writes one shard of them)", ge=1, le=1_000_000
    )
    ray: RayConfig = _help("Ray connection")


@dataclass(frozen=True)
class TrainConfig:
    required: typing.ClassVar[tuple[str, ...]] = ("data",)
    applies_recipe: typing.ClassVar[bool] = True
    data: str | None = _help("features written by knd prepare (folder or s3://)")
    run_dir: str = _help("where checkpoints, metrics.json and confusion.png go")
    name: str | None = _help("run name (none: derived from recipe and time)", plain_name=True)
    recipe: str = _help("recipe in configs/recipes/ (model and schedule)", plain_name=True)
    labels: Literal["ravdess8", "ravdess7"] = _help("label set")
    resume: str | None = _help("checkpoint folder to continue from")
    split: SplitConfig = _help("speaker-independent split")
    model: ModelConfig = _help("model")
    optim: OptimConfig = _help("optimiser and schedule")
    augment: AugmentConfig = _help("augmentation")
    train: TrainLoopConfig = _help("Ray Train scaling and recovery")
    wandb: WandbConfig = _help("experiment tracking")
    ray: RayConfig = _help("Ray connection")


@dataclass(frozen=True)
class EvaluateConfig:
    required: typing.ClassVar[tuple[str, ...]] = ("checkpoint", "data")
    checkpoint: str | None = _help("checkpoint folder written by knd train")
    data: str | None = _help("features written by knd prepare")
    out: str | None = _help("report folder (none: beside the checkpoint)")
    actors: tuple[int, ...] | None = _help(
        "actors to evaluate (none: the checkpoint's test actors)", ge=1, le=24
    )
    batch_size: int = _help(
        "inference batch size (does not change predictions)", ge=1, le=1_000_000
    )


@dataclass(frozen=True)
class TuneConfig:
    # ``data`` is required unless ``resume`` names an experiment (checked by knd.stages.tune.run).
    required: typing.ClassVar[tuple[str, ...]] = ()
    data: str | None = _help("features written by knd prepare")
    space: str = _help("search space YAML (configs/tune/*.yaml)")
    recipe: str = _help("base recipe the space overrides", plain_name=True)
    labels: Literal["ravdess8", "ravdess7"] = _help("label set")
    test_actors: tuple[int, ...] = _help("actor group no trial ever sees", ge=1, le=24)
    folds: int = _help("actor-disjoint validation folds per configuration", ge=2, le=24)
    num_samples: int = _help("configurations to try (times each grid point)", ge=1)
    max_epochs: int = _help("epochs per fold (ASHA's max_t)", ge=1, le=100_000)
    grace_epochs: int = _help("epochs before ASHA may stop a trial", ge=1)
    reduction_factor: float = _help("ASHA: keep the best 1/reduction_factor at each rung", gt=1)
    search: Literal["random", "optuna"] = _help("search algorithm (random also runs grid keys)")
    metric: Literal["uar", "accuracy", "macro_f1"] = _help("mean fold score to maximise")
    storage_path: str = _help("folder of experiments (local or s3://)")
    name: str | None = _help(
        "experiment name (none: derived from recipe and time)", plain_name=True
    )
    resume: str | None = _help("experiment folder of an interrupted search to finish")
    cpus_per_trial: float = _help("CPUs per trial", gt=0)
    gpus_per_trial: float = _help("GPUs per trial (fractions share a GPU)", ge=0)
    max_concurrent: int = _help("trials at once (0: as resources allow)", ge=0)
    retrain_best: bool = _help("retrain the best configuration and evaluate it on the test actors")
    seed: int = _help("random seed", ge=0)
    wandb: WandbConfig = _help("experiment tracking")
    ray: RayConfig = _help("Ray connection")


@dataclass(frozen=True)
class AnalyseConfig:
    required: typing.ClassVar[tuple[str, ...]] = ("experiment",)
    experiment: str | None = _help("Tune experiment folder (local or s3://)")
    out: str | None = _help("report folder (none: <experiment>/analysis)")
    top: int = _help("configurations in the summary table and learning curves", ge=1)


@dataclass(frozen=True)
class ScoreConfig:
    required: typing.ClassVar[tuple[str, ...]] = ("checkpoint", "input", "output")
    checkpoint: str | None = _help("checkpoint folder written by knd train")
    input: str | None = _help("audio folder or s3:// prefix (searched recursively)")
    output: str | None = _help("result file: .parquet or .csv (local or s3://)")
    batch_size: int = _help("windows per inference batch", ge=1, le=1_000_000)
    num_actors: int = _help("inference actors", ge=1, le=10_000)
    use_gpu: bool = _help("run inference on GPU")
    window_hop_seconds: float = _help("hop between windows of long files", gt=0, le=86_400)
    per_window: bool = _help("one row per window instead of per file")
    strict: bool = _help("exit non-zero if any file fails")
    encoder: str = _help(
        "encoder folder of an embedding checkpoint, where it sits on this machine ('': the path "
        "the checkpoint records); it must hold the same files (same hash)"
    )
    ray: RayConfig = _help("Ray connection")


SCHEMAS: dict[str, type] = {
    "synth": SynthConfig,
    "download": DownloadConfig,
    "prepare": PrepareConfig,
    "train": TrainConfig,
    "evaluate": EvaluateConfig,
    "tune": TuneConfig,
    "analyse": AnalyseConfig,
    "score": ScoreConfig,
}


# ----------------------------------------------------------------------------------------------
# Loading


def config_dir() -> Path:
    """The folder of shipped YAML configs (``KND_CONFIG_DIR`` overrides it).

    The configs ship inside the package (``knd/configs``, in the clone a link to the top-level
    ``configs/``), so an installed knd finds them anywhere; a copy of the clone that lost the
    link (e.g. an archive that drops symlinks) still finds ``configs/`` beside ``knd/``.
    """
    if os.environ.get("KND_CONFIG_DIR"):
        return Path(os.environ["KND_CONFIG_DIR"])
    package = Path(__file__).resolve().parent
    inside = package / "configs"
    return inside if inside.is_dir() else package.parent / "configs"


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; an empty file is an empty mapping."""
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys, got {type(data).__name__}")
    return data


class _Typed(str):
    """A ``key=value`` value as typed, with its YAML reading in ``parsed``.

    A field declared as a string takes the text as typed (``name=no`` is "no", not False;
    ``md5=0123...`` keeps its leading zero); any other field takes the YAML reading.
    """

    parsed: Any


def _typed(raw: str, parsed: Any) -> _Typed:
    out = _Typed(raw)
    out.parsed = parsed
    return out


def parse_overrides(overrides: list[str], keep_text: bool = False) -> dict[str, Any]:
    """``["a.b=1", "c=[1,2]"]`` -> ``{"a": {"b": 1}, "c": [1, 2]}`` (values parsed as YAML).

    With ``keep_text`` each value also keeps the text as typed, for fields declared as strings.
    """
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        if keep_text and not isinstance(value, dict):
            value = _typed(raw, value)
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {part} is both a value and a section")
        node[parts[-1]] = value
    return tree


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``update`` wins."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(command: str, overrides: list[str] | None = None, **values: Any):
    """Build the frozen config of ``command`` from its YAML, recipe, config file and overrides.

    Args:
        command: one of ``SCHEMAS``.
        overrides: ``key=value`` strings as typed on the command line.
        **values: overrides given as Python values (nested sections as dicts), applied last.

    Raises:
        ConfigError: an unknown key, a value of the wrong type or a missing required key.
    """
    if command not in SCHEMAS:
        raise ConfigError(f"unknown command {command!r}; expected one of {sorted(SCHEMAS)}")
    schema = SCHEMAS[command]
    tree = load_yaml(config_dir() / f"{command}.yaml")
    cli = merge(parse_overrides(list(overrides or []), keep_text=True), values)
    config_file = cli.pop("config", None)
    from_file = load_yaml(config_file) if config_file else {}
    if getattr(schema, "applies_recipe", False):
        recipe = cli.get("recipe", from_file.get("recipe", tree.get("recipe")))
        tree = merge(tree, {"recipe": recipe})
        tree = merge(tree, load_recipe(recipe))
    tree = merge(merge(tree, from_file), cli)
    cfg = build(schema, tree)
    missing = [k for k in schema.required if getattr(cfg, k) in (None, "")]
    if missing:
        example = " ".join(f"{k}=..." for k in missing)
        raise ConfigError(f"missing required key {missing[0]!r} (knd {command} {example})")
    return cfg


def load_recipe(name: str) -> dict[str, Any]:
    """The YAML of ``configs/recipes/<name>.yaml``."""
    path = config_dir() / "recipes" / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"unknown recipe {name!r}; expected one of {known}")
    return load_yaml(path)


def build(schema: type, tree: dict[str, Any], prefix: str = ""):
    """Instantiate ``schema`` from a nested dict, checking every key and coercing every value."""
    if not isinstance(tree, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a section of keys")
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for key in tree:
        if key not in fields:
            close = [n for n in fields if n.startswith(key[:3])]
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown key {prefix + key!r}{hint}")
    kwargs = {}
    for name, f in fields.items():
        if name not in tree:
            raise ConfigError(f"key {prefix + name!r} has no value (add it to the YAML)")
        kwargs[name] = coerce(tree[name], hints[name], prefix + name)
        check_value(kwargs[name], f.metadata, prefix + name)
    cfg = schema(**kwargs)
    for name, problem in getattr(schema, "cross_checks", lambda c: [])(cfg):
        raise ConfigError(f"{prefix + name}: {problem}")
    return cfg


_BOUNDS = {
    "ge": (lambda v, b: v >= b, ">="),
    "gt": (lambda v, b: v > b, ">"),
    "le": (lambda v, b: v <= b, "<="),
    "lt": (lambda v, b: v < b, "<"),
}


def check_value(value: Any, rules: Any, key: str) -> None:
    """Check a coerced value against its field's rules; raise a ConfigError naming ``key``.

    Floats must be finite; ``ge``/``gt``/``le``/``lt`` bound numbers (each element of a tuple);
    ``plain_name`` asks for one file or folder name.
    """
    if value is None:
        return
    if isinstance(value, tuple):
        for v in value:
            check_value(v, rules, key)
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: must be a finite number, got {value!r}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        for rule, (ok, sign) in _BOUNDS.items():
            if rule in rules and not ok(value, rules[rule]):
                raise ConfigError(f"{key}: must be {sign} {rules[rule]:g}, got {value!r}")
    if rules.get("plain_name") and not _is_plain_name(str(value)):
        raise ConfigError(
            f"{key}: must be a plain name (no '/', '\\', '..', not empty), got {value!r}"
        )


def _is_plain_name(value: str) -> bool:
    return value not in ("", ".", "..") and not any(c in value for c in "/\\\0")


def coerce(value: Any, kind: Any, key: str) -> Any:
    """Convert a YAML value to the annotated type, or raise a ConfigError naming ``key``."""
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if isinstance(value, _Typed):
        if kind is str:
            return str(value)  # the text as typed: ``name=no`` stays "no"
        if origin in (typing.Union, types.UnionType) and str in args and value.parsed is not None:
            return str(value)
        value = value.parsed
    if dataclasses.is_dataclass(kind):
        return build(kind, value, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if origin is tuple:
        if isinstance(value, int | str) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list like [1,2], got {value!r}")
        return tuple(coerce(v, args[0], key) for v in value)
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if kind in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            number = kind(value) if not isinstance(value, str) else kind(float(value))
            if kind is int and float(value) != number:
                raise ConfigError(f"{key}: expected an integer, got {value!r}")
        except (TypeError, ValueError, OverflowError) as e:
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f"{key}: expected {kind.__name__}, got {value!r}") from None
        return number
    if kind is str:
        if isinstance(value, dict | list):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        if isinstance(value, bool):  # YAML read yes/no/on/off as a boolean
            raise ConfigError(f"{key}: expected a string, got {value!r} (quote it)")
        return str(value)
    return value


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config as plain nested dicts and lists (for YAML, JSON and Ray's ``train_loop_config``)."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def replace(cfg: Any, **values: Any):
    """A copy of ``cfg`` with dotted keys replaced and re-validated: ``**{"optim.lr": 1e-3}``."""
    tree = to_dict(cfg)
    for dotted, value in values.items():
        tree = merge(tree, _nest(dotted, value))
    return build(type(cfg), tree)


def _nest(dotted: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


# ----------------------------------------------------------------------------------------------
# The keys of a command, as ``knd <command> --help`` and the docs' Command line page show them


@dataclass(frozen=True)
class Key:
    """One ``key=value`` a command takes, with the default a plain run uses."""

    name: str  # full dotted name as typed on the command line, e.g. ``optim.lr``
    type: str  # readable type: ``int``, ``list of int``, ``cosine | onecycle``, ``str or none``
    default: Any  # the effective default (for ``knd train``: the default recipe applied)
    required: bool  # no default: the command needs ``key=...``
    bounds: str  # allowed range in words (``1 <= x <= 24``), or ""
    help: str

    @property
    def default_text(self) -> str:
        """The default as it is typed on the command line (YAML flow), or ``required``."""
        if self.required:
            return "required"
        text = yaml.safe_dump(self.default, default_flow_style=True).strip()
        return text.removesuffix("...").strip()


def type_name(kind: Any) -> str:
    """A short, readable name of an annotated config type (``int | None`` -> ``int or none``)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        inner = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(inner) + (" or none" if type(None) in args else "")
    if origin is Literal:
        return " | ".join(str(a) for a in args)
    if origin is tuple:
        return f"list of {type_name(args[0])}"
    return getattr(kind, "__name__", str(kind))


def bounds_text(rules: Any) -> str:
    """A field's checks in words: ``1 <= x <= 24``, ``x > 0``, ``a plain name`` or ""."""

    def number(value: float) -> str:
        return str(value) if isinstance(value, int) else f"{value:g}"

    low = next(((rules[r], s) for r, s in (("ge", "<="), ("gt", "<")) if r in rules), None)
    high = next(((rules[r], s) for r, s in (("le", "<="), ("lt", "<")) if r in rules), None)
    if low and high:
        text = f"{number(low[0])} {low[1]} x {high[1]} {number(high[0])}"
    elif low:
        text = f"x {low[1].replace('<', '>')} {number(low[0])}"
    elif high:
        text = f"x {high[1]} {number(high[0])}"
    else:
        text = ""
    return "a plain name" if rules.get("plain_name") else text


def effective_defaults(command: str) -> dict[str, Any]:
    """The values a plain ``knd <command>`` starts from: its YAML, then for ``train`` the recipe."""
    schema = SCHEMAS[command]
    defaults = load_yaml(config_dir() / f"{command}.yaml")
    if getattr(schema, "applies_recipe", False):  # what a plain run uses: the recipe's values
        defaults = merge(defaults, load_recipe(defaults["recipe"]))
    return defaults


def command_keys(command: str) -> list[Key]:
    """Every key of ``command``, sections flattened to dotted names, in schema order.

    The one description of a command's keys: ``knd <command> --help`` (:func:`describe`) and the
    docs' Command line page (:func:`knd.docs.cli_reference`) both render it.
    """
    keys: list[Key] = []

    def walk(kind: type, tree: dict[str, Any], prefix: str) -> None:
        hints = typing.get_type_hints(kind)
        for f in dataclasses.fields(kind):
            hint = hints[f.name]
            if dataclasses.is_dataclass(hint):
                walk(hint, tree.get(f.name) or {}, prefix + f.name + ".")
                continue
            value = tree.get(f.name)
            required = f.name in getattr(kind, "required", ()) and value is None
            keys.append(Key(prefix + f.name, type_name(hint), value, required,
                            bounds_text(f.metadata), f.metadata.get("help", "")))  # fmt: skip

    walk(SCHEMAS[command], effective_defaults(command), "")
    return keys


def describe(command: str) -> str:
    """``key  default  help [type; bounds]`` lines for ``knd <command> --help``.

    Columns are separated by at least two spaces (no default or help text holds two in a row),
    so a script can split a line on them.
    """
    keys = command_keys(command)
    name_width = max(len(k.name) for k in keys)
    default_width = min(22, max(len(k.default_text) for k in keys))
    lines = []
    for key in keys:
        shown = "(required)" if key.required else key.default_text
        kind = "; ".join(part for part in (key.type, key.bounds) if part)
        lines.append(f"  {key.name:<{name_width}}  {shown:<{default_width}}  {key.help} [{kind}]")
    return "\n".join(lines)
