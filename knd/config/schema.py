"""The config schemas: one frozen dataclass per command, built of shared sections.

Each field carries its help text and the checks on its value (:func:`_help`); the values
themselves come from ``configs/*.yaml`` (:mod:`knd.config.loading`).
"""

from __future__ import annotations

import typing
from dataclasses import MISSING, dataclass, field
from typing import Any, Literal

from knd.config.architectures import ARCHITECTURES, group_problem

MODEL_NAMES = tuple(ARCHITECTURES)
"""Every architecture :func:`knd.learning.models.build_model` builds: the model table's names
(:data:`knd.config.architectures.ARCHITECTURES`)."""

FEATURE_GROUPS = ("logmel", "prosody", "egemaps", "embedding", "waveform")
"""Every feature group ``knd prepare`` can compute (:mod:`knd.audio.features` describes each)."""

SYNTH_LAYOUT_SPEAKERS = {
    "ravdess": 24,
    "crema_d": 24,
    "emodb": 10,
    "tess": 2,
    "savee": 4,
    "table": 24,
}
"""Every corpus layout ``knd synth`` can write, with its number of speakers: what the config checks
``actors`` against (:mod:`knd.data.synth_layouts` names the files, and checks that it agrees)."""


class ConfigError(ValueError):
    """A configuration problem, described in one line that names the key."""


def _help(text: str, default: Any = MISSING, default_factory: Any = MISSING, **check: Any) -> Any:
    """A schema field with its help text and optional checks on its value.

    ``ge``/``gt``/``le``/``lt`` bound a number (each element of a tuple); ``plain_name`` asks for
    a single folder or file name (no ``/``, no ``..``, not empty); ``items_*`` bound how many a
    list or section holds, ``chars_*`` each string's length. Every float must be finite.
    """
    return field(default=default, default_factory=default_factory, metadata={"help": text, **check})


LABEL_PRESETS = ("all", "ravdess8", "ravdess7")
"""Label sets by name (:mod:`knd.data.label_sets`); any other ``labels`` entry is a label."""


def _labels_problem(labels: tuple[str, ...]) -> str | None:
    """A ``labels`` value is one preset, or two or more distinct label names."""
    named = [name for name in labels if name in LABEL_PRESETS]
    if named and len(labels) > 1:
        return f"{named[0]} names a whole label set: give it alone, got {list(labels)}"
    if not labels or any(not name.strip() or "," in name for name in labels):
        return f"expected a label set name or a list of labels, got {list(labels)}"
    if not named and len(set(labels)) != len(labels):
        return f"names a label twice: {list(labels)}"
    return None


# ----------------------------------------------------------------------------------------------
# Shared sections


def _labels_field() -> Any:
    return _help(
        "classes: all (the dataset's labels), ravdess8, ravdess7 (calm merged into neutral), or "
        "a list of the dataset's labels (clips of other labels are left out)"
    )


def _labels_checks(cfg: Any) -> list[tuple[str, str]]:
    problem = _labels_problem(cfg.labels)
    return [("labels", problem)] if problem else []


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
    test_speakers: tuple[str, ...] | None = _help(
        "held-out test speakers, by the corpus's speaker ids (RAVDESS: actor numbers); none: the "
        "corpus's first fold (RAVDESS: EmoBox's group 1, actors 1, 11, 20, 21)"
    )
    val_speakers: tuple[str, ...] | None = _help(
        "validation speakers, disjoint from the test speakers ([]: none; train on every other "
        "speaker and keep the last epoch); none: the corpus's second fold"
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
        "egemaps_mlp, egemaps_linear: egemaps; late_fusion: logmel and egemaps; the others: "
        "logmel)"
    )
    fusion_width: int = _help(
        "width of each prosody/eGeMAPS branch before the fused classifier; the hidden width "
        "of the embedding_head and encoder_finetune heads",
        ge=1,
        le=4096,
    )
    fusion_weight: float = _help(
        "late_fusion: the weight of the CNN's logits in their average with the linear eGeMAPS "
        "model's (which get 1 - it)",
        ge=0,
        le=1,
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
        """Which groups each architecture reads, and whether it needs an encoder (the model
        table, :data:`knd.config.architectures.ARCHITECTURES`)."""
        groups = list(cfg.groups)
        if len(set(groups)) != len(groups):
            return [("groups", f"names a group twice: {groups}")]
        if ARCHITECTURES[cfg.name].encoder and not cfg.encoder:
            return [("encoder", f"{cfg.name} needs model.encoder (a model folder)")]
        problem = group_problem(cfg.name, groups)
        return [("groups", problem)] if problem else []


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
    actors: int | None = _help(
        "number of speakers, the layout's first N (none: all of them; emodb has 10, tess 2, "
        "savee 4, the others 24)",
        ge=1,
        le=24,
    )
    seed: int = _help("random seed; the same seed gives byte-identical files", ge=0)
    workers: int = _help("parallel processes (0: one per CPU)", ge=0, le=10_000)
    style: Literal["classic", "speech"] = _help(
        "classic: the original voice; speech: coarticulated phones, idiolects, subtler emotions"
    )
    layout: Literal[tuple(SYNTH_LAYOUT_SPEAKERS)] = _help(
        "the corpus whose file names and folders the clips get (the audio is the synthetic "
        "voice's in each): ravdess (Actor_NN/03-01-EE-II-SS-RR-AA.wav), crema_d "
        "(AudioWAV/AAAA_SSS_EEE_LL.wav), emodb (wav/SSTTTEV.wav; boredom is rendered as calm), "
        "tess (OAF_<emotion>/OAF_<word>_<emotion>.wav), savee (ALL/DC_a01.wav), table "
        "(clips/<hex>.wav and labels.csv: path,label,speaker,gender)"
    )

    @staticmethod
    def cross_checks(cfg: SynthConfig) -> list[tuple[str, str]]:
        """A layout has as many speakers as its corpus (or as the voice has actors)."""
        most = SYNTH_LAYOUT_SPEAKERS[cfg.layout]
        if cfg.actors is not None and cfg.actors > most:
            return [("actors", f"layout {cfg.layout} has {most} speakers, got {cfg.actors}")]
        return []


@dataclass(frozen=True)
class DownloadConfig:
    required: typing.ClassVar[tuple[str, ...]] = ("out",)
    corpus: Literal[tuple(name for name in SYNTH_LAYOUT_SPEAKERS if name != "table")] = _help(
        "the corpus: ravdess has a verified archive; the others name where to fetch it by hand"
    )
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
    corpus: str = _help(
        "where labels come from: ravdess, crema_d, emodb, tess, savee (the corpus's own names and "
        "folders), or a label table (.csv, .tsv, .jsonl or .parquet with path, label, speaker)"
    )
    label_map: dict[str, str] | None = _help(
        "rename or merge labels, e.g. {anger: angry, frustrated: angry} (none: as written)"
    )
    require_labels: bool = _help(
        "reject files whose names the corpus layout cannot read (false: keep them unlabelled)"
    )
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
    data: str | tuple[str, ...] | None = _help(
        "features written by knd prepare (folder or s3://), or a list of several prepared with "
        "the same feature parameters, read as one (speakers named <corpus>/<id>)"
    )
    run_dir: str = _help("where checkpoints, metrics.json and confusion.png go")
    name: str | None = _help("run name (none: derived from recipe and time)", plain_name=True)
    recipe: str = _help("recipe in configs/recipes/ (model and schedule)", plain_name=True)
    labels: tuple[str, ...] = _labels_field()
    normalise: Literal["global", "speaker"] = _help(
        "standardise the model's inputs by the training set's statistics (global), or each clip "
        "by its own speaker's, from that speaker's clips without their labels (speaker)"
    )
    speaker_prior_clips: float = _help(
        "normalise=speaker: a speaker of this many clips gets half its own statistics and half "
        "the training speakers' pooled ones (fewer clips: more of the pooled)",
        gt=0,
        le=1e6,
    )
    resume: str | None = _help("checkpoint folder to continue from")
    split: SplitConfig = _help("speaker-independent split")
    model: ModelConfig = _help("model")
    optim: OptimConfig = _help("optimiser and schedule")
    augment: AugmentConfig = _help("augmentation")
    train: TrainLoopConfig = _help("Ray Train scaling and recovery")
    wandb: WandbConfig = _help("experiment tracking")
    ray: RayConfig = _help("Ray connection")

    cross_checks: typing.ClassVar = staticmethod(_labels_checks)
    renamed_keys: typing.ClassVar[dict[str, str]] = {
        "split.test_actors": "split.test_speakers",
        "split.val_actors": "split.val_speakers",
    }


@dataclass(frozen=True)
class EvaluateConfig:
    required: typing.ClassVar[tuple[str, ...]] = ("checkpoint", "data")
    checkpoint: str | None = _help("checkpoint folder written by knd train")
    data: str | None = _help("features written by knd prepare")
    out: str | None = _help("report folder (none: beside the checkpoint)")
    speakers: tuple[str, ...] | None = _help(
        "speakers to evaluate (none: the checkpoint's test speakers on the corpus it trained on, "
        "every speaker of another corpus)"
    )
    batch_size: int = _help(
        "inference batch size (does not change predictions)", ge=1, le=1_000_000
    )

    renamed_keys: typing.ClassVar[dict[str, str]] = {"actors": "speakers"}


@dataclass(frozen=True)
class TuneConfig:
    # ``data`` is required unless ``resume`` names an experiment (checked when the experiment opens,
    # :func:`knd.learning.experiment.open_experiment`).
    required: typing.ClassVar[tuple[str, ...]] = ()
    data: str | tuple[str, ...] | None = _help(
        "features written by knd prepare, or a list of several prepared with the same feature "
        "parameters, read as one (speakers named <corpus>/<id>)"
    )
    space: str = _help("search space YAML (configs/tune/*.yaml)")
    recipe: str = _help("base recipe the space overrides", plain_name=True)
    labels: tuple[str, ...] = _labels_field()
    test_speakers: tuple[str, ...] | None = _help(
        "speaker group no trial ever sees (none: the corpus's first fold; RAVDESS: actors 1, 11, "
        "20, 21)"
    )
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

    cross_checks: typing.ClassVar = staticmethod(_labels_checks)
    renamed_keys: typing.ClassVar[dict[str, str]] = {"test_actors": "test_speakers"}


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
    compute: Literal["auto", "tasks", "actors"] = _help(
        "where the model runs: tasks (Ray's warm worker processes, the model loaded once per "
        "process and cached), actors (a pool of num_actors, one model each), auto: actors on "
        "GPU, tasks on CPU"
    )
    window_hop_seconds: float = _help("hop between windows of long files", gt=0, le=86_400)
    per_window: bool = _help("one row per window instead of per file")
    strict: bool = _help("exit non-zero if any file fails")
    encoder: str = _help(
        "encoder folder of an embedding checkpoint, where it sits on this machine ('': the path "
        "the checkpoint records); it must hold the same files (same hash)"
    )
    speaker_from: Literal["folder", "table", "file", "none"] | None = _help(
        "who speaks, for a checkpoint trained with normalise=speaker: folder (the files of one "
        "folder are one speaker's), table (speaker_table's speaker column), file (each file "
        "alone), none (the training speakers' pooled statistics); null: such a checkpoint is "
        "refused"
    )
    speaker_table: str | None = _help(
        "speaker_from=table: a label table (.csv, .tsv, .jsonl, .parquet with path, label, "
        "speaker) naming each file's speaker; files without a row get the pooled statistics"
    )
    ray: RayConfig = _help("Ray connection")
