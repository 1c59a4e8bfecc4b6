"""``knd synth``: a deterministic synthetic corpus in exactly RAVDESS's format.

Real RAVDESS cannot be downloaded everywhere, so the pipeline's embedded default is a corpus with
the same layout, names and audio format: ``Actor_NN/03-01-EE-II-SS-RR-NN.wav``, 48 kHz mono
16-bit PCM. Each file is rendered from its name by :func:`knd.audio.voice.synthesize` (the
voice, its emotions and its speakers are described there); this stage lists the clips of the
chosen actors and writes them in parallel processes.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from knd.audio.voice import STYLES, encode_wav, synthesize
from knd.data import storage
from knd.data.ravdess import ACTORS, Clip, actor_clips
from knd.runtime.console import file_progress

log = logging.getLogger(__name__)


def clip_path(out: str, clip: Clip) -> str:
    return storage.join(out, f"Actor_{clip.actor:02d}", clip.file_name())


def _write_clip(task: tuple[str, Clip, int, str]) -> str:
    out, clip, seed, style = task
    path = clip_path(out, clip)
    storage.write_bytes(path, encode_wav(synthesize(clip, seed, style)))
    return path


def write_corpus(
    out: str,
    actors: Sequence[int] | int,
    seed: int = 0,
    workers: int = 0,
    progress: bool = True,
    style: str = "classic",
) -> list[str]:
    """Write the corpus of ``actors`` under ``out`` and return the file paths, sorted.

    Args:
        out: output folder (local or ``s3://``).
        actors: actor numbers, or N for actors 1..N.
        seed: the same seed writes byte-identical files.
        workers: parallel processes; 0 means one per CPU. The files do not depend on it.
        progress: show progress on stderr (a bar on a terminal, a few lines in a log).
        style: ``classic`` or ``speech`` (see the module docstring).

    Raises:
        ValueError: an actor outside 1..24, no actor, or an unknown style.
    """
    if style not in STYLES:
        raise ValueError(f"synth style must be one of {list(STYLES)}, got {style!r}")
    chosen = list(range(1, actors + 1)) if isinstance(actors, int) else sorted(set(actors))
    bad = [a for a in chosen if a not in ACTORS]
    if not chosen or bad:
        raise ValueError(f"actors must be 1..24 (an int N means actors 1..N), got {actors!r}")
    tasks = [(str(out), clip, int(seed), style) for actor in chosen for clip in actor_clips(actor)]
    workers = min(workers or os.cpu_count() or 1, len(tasks))
    bar = file_progress(len(tasks), "synth", show=progress)
    paths: list[str] = []
    try:
        if workers == 1:
            for task in tasks:
                paths.append(_write_clip(task))
                bar.update()
        else:
            # spawn, not fork: the caller may hold threads (Ray, torch) that fork would copy.
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                for path in pool.imap_unordered(_write_clip, tasks, chunksize=4):
                    paths.append(path)
                    bar.update()
    finally:
        bar.close()
    return sorted(paths)


@dataclass(frozen=True)
class SynthResult:
    """What ``knd synth`` wrote."""

    out: str
    files: int
    seconds: float
    exit_code: int = 0


def run(cfg) -> SynthResult:
    """Write the synthetic corpus described by a :class:`knd.config.schema.SynthConfig`."""
    started = time.perf_counter()
    paths = write_corpus(cfg.out, cfg.actors, seed=cfg.seed, workers=cfg.workers, style=cfg.style)
    seconds = time.perf_counter() - started
    log.info("wrote %d files under %s in %.1f s", len(paths), cfg.out, seconds)
    return SynthResult(out=str(cfg.out), files=len(paths), seconds=seconds)


__all__ = ["SynthResult", "run", "write_corpus"]
