"""The command table: every ``knd`` command, its stage, its schema and what it reads and writes.

The one list of commands: the CLI dispatches from it, config loading finds the schema here,
the console's header and summary read what a command reads and writes, and the docs' Command
line page lists it. A stage is named by module path, not imported: this table sits on the
config floor, below the stages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from knd.config.schema import (
    AnalyseConfig,
    DownloadConfig,
    EvaluateConfig,
    PrepareConfig,
    ScoreConfig,
    SynthConfig,
    TrainConfig,
    TuneConfig,
)


@dataclass(frozen=True)
class Command:
    """One ``knd`` command."""

    stage: str  # the module whose ``run(cfg)`` the command calls
    schema: type  # its config dataclass; defaults in ``configs/<command>.yaml``
    help: str
    reads: tuple[str, ...] = ()  # config keys naming what it reads (the console's header)
    writes: tuple[str, ...] = ()  # config keys naming what it writes
    output: Callable[[Any], str] | None = None  # where it writes when no ``writes`` key is set
    report: bool = False  # writes ``report.md`` into its output folder


def _run_folder(cfg: Any) -> str:
    return f"{cfg.run_dir}/{cfg.name or '<recipe>-<time>'}"


COMMANDS: dict[str, Command] = {
    "synth": Command(
        "knd.stages.synth", SynthConfig,
        "make a deterministic synthetic corpus in RAVDESS's or another corpus's format",
        writes=("out",),
    ),
    "download": Command(
        "knd.stages.download", DownloadConfig,
        "download and extract the official RAVDESS speech set (other corpora: where to fetch them)",
        reads=("url",), writes=("out",),
    ),
    "prepare": Command(
        "knd.stages.prepare", PrepareConfig,
        "audio -> feature-group Parquet shards + manifest (Ray tasks)",
        reads=("input",), writes=("output",),
    ),
    "train": Command(
        "knd.stages.train", TrainConfig, "train a model with Ray Train (DDP)",
        reads=("data", "recipe"), output=_run_folder, report=True,
    ),
    "evaluate": Command(
        "knd.stages.evaluate", EvaluateConfig, "metrics of a checkpoint on prepared features",
        reads=("checkpoint", "data"), writes=("out",),
        output=lambda cfg: "an evaluation/ folder beside the checkpoint", report=True,
    ),
    "tune": Command(
        "knd.stages.tune", TuneConfig, "cross-actor-fold hyperparameter search (Ray Tune)",
        reads=("data", "space"), writes=("storage_path",),
    ),
    "analyse": Command(
        "knd.stages.analyse", AnalyseConfig, "tables, plots and best config of a Tune experiment",
        reads=("experiment",), writes=("out",), output=lambda cfg: f"{cfg.experiment}/analysis",
        report=True,
    ),
    "score": Command(
        "knd.stages.score", ScoreConfig,
        "emotion probabilities for every audio file in a folder (Ray Data)",
        reads=("checkpoint", "input"), writes=("output",),
    ),
}  # fmt: skip
