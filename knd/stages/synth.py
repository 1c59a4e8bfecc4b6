"""``knd synth``: a deterministic synthetic corpus in RAVDESS's format, or another corpus's.

Real RAVDESS cannot be downloaded everywhere, so the pipeline's embedded default is a corpus with
the same layout, names and audio format: ``Actor_NN/03-01-EE-II-SS-RR-AA.wav``, 48 kHz mono
16-bit PCM. Each file is rendered from its RAVDESS clip by :func:`knd.audio.voice.synthesize`
(the voice, its emotions and its speakers are described there). ``layout`` names the same kind of
clips as another public corpus names its files (CREMA-D, EmoDB, TESS, SAVEE, or opaque names
with a ``labels.csv``: :mod:`knd.data.synth_layouts`), so a reader of each can be tested end to
end without a download. This stage lists the files of the chosen speakers and writes them in
parallel processes.
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
from knd.data.ravdess import Clip
from knd.data.synth_layouts import index_files, plan
from knd.runtime.console import file_progress

log = logging.getLogger(__name__)


def _write_clip(task: tuple[str, Clip, int, str]) -> str:
    path, clip, seed, style = task
    storage.write_bytes(path, encode_wav(synthesize(clip, seed, style)))
    return path


def write_corpus(
    out: str,
    actors: Sequence[int] | int | None,
    seed: int = 0,
    workers: int = 0,
    progress: bool = True,
    style: str = "classic",
    layout: str = "ravdess",
) -> list[str]:
    """Write the corpus of ``actors`` under ``out`` and return the file paths, sorted.

    Args:
        out: output folder (local or ``s3://``).
        actors: speaker numbers in the layout (for ``ravdess`` actor numbers), N for the
            first N speakers, or None for all of them.
        seed: the same seed writes byte-identical files.
        workers: parallel processes; 0 means one per CPU. The files do not depend on it.
        progress: show progress on stderr (a bar on a terminal, a few lines in a log).
        style: ``classic`` or ``speech`` (see the module docstring).
        layout: the corpus whose names the files get (:data:`knd.data.synth_layouts.LAYOUTS`);
            the paths returned include a layout's index files (``table``'s ``labels.csv``).

    Raises:
        ValueError: a speaker the layout lacks (for ravdess: outside 1..24), no speaker, or an
            unknown style or layout.
    """
    if style not in STYLES:
        raise ValueError(f"synth style must be one of {list(STYLES)}, got {style!r}")
    files = plan(layout, actors, int(seed))
    tasks = [(storage.join(str(out), f.path), f.clip, int(seed), style) for f in files]
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
    # After the audio: a reader that finds the index finds every file it lists.
    for name, text in index_files(layout, files).items():
        paths.append(storage.join(str(out), name))
        storage.write_text(paths[-1], text)
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
    paths = write_corpus(
        cfg.out,
        cfg.actors,
        seed=cfg.seed,
        workers=cfg.workers,
        style=cfg.style,
        layout=cfg.layout,
    )
    seconds = time.perf_counter() - started
    log.info("wrote %d files under %s in %.1f s", len(paths), cfg.out, seconds)
    return SynthResult(out=str(cfg.out), files=len(paths), seconds=seconds)


__all__ = ["SynthResult", "run", "write_corpus"]
