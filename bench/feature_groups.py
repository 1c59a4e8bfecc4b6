"""What each feature group costs ``knd prepare`` per clip, against the log-mel in the same run.

    .venv/bin/python bench/feature_groups.py                      # 120 synthetic speech clips
    .venv/bin/python bench/feature_groups.py --corpus DIR --clips 300

One process, one torch thread (as a prepare task runs), after a warm-up clip: per clip, the time
of the shared front end (decode, downmix, resample, trim), of the log-mel, of the prosody group
(Praat's pitch tracker + energy) and of the eGeMAPS functionals (openSMILE), each measured alone
on the same decoded clips. CPU time (``time.process_time``) is reported beside wall time because
it holds on a shared machine. Figures are also printed as ratios to the log-mel's cost, and go to
``bench/results/feature_groups.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import Machine, write_results  # noqa: E402

from knd.audio import egemaps, features, prosody, waveform
from knd.config.loading import load_config  # noqa: E402
from knd.data import storage  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "feature_groups.json"


def corpus_files(corpus: str | None, clips: int) -> list[str]:
    """``clips`` files spread over the corpus (a 2-actor speech-style corpus when none given)."""
    if corpus is None:
        from knd.stages.synth import write_corpus

        corpus = tempfile.mkdtemp(prefix="knd-groups-bench-")
        write_corpus(corpus, actors=2, seed=0, progress=False, style="speech")
    paths = storage.list_files(corpus, storage.AUDIO_SUFFIXES)
    step = max(1, len(paths) // clips)
    return paths[::step][:clips]


def timed(fn, *args) -> tuple[float, float]:
    """``(wall seconds, CPU seconds)`` of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(paths: list[str], params) -> dict[str, dict[str, list[float]]]:
    """Per-clip wall and CPU seconds of each step (a warm-up clip first, not counted)."""
    steps = ("front_end", "logmel", "prosody", "egemaps")
    out = {s: {"wall": [], "cpu": []} for s in steps}
    clip = features.clip_samples(params)
    for i, path in enumerate([paths[0], *paths]):
        samples, rate = waveform.decode_audio(storage.read_bytes(path))
        times = {}
        start = time.perf_counter(), time.process_time()
        wave = features.mono_at_feature_rate(samples, rate, params)
        trimmed = waveform.trim_silence(wave, params.trim_db)
        fitted = waveform.fit_length(trimmed, clip)
        times["front_end"] = (time.perf_counter() - start[0], time.process_time() - start[1])
        times["logmel"] = timed(features.log_mel, fitted, params)
        times["prosody"] = timed(
            prosody.frame_prosody, fitted, params.sample_rate, params.win_length, params.hop_length
        )
        times["egemaps"] = timed(egemaps.functionals, trimmed[:clip], params.sample_rate)
        if i == 0:
            continue  # warm-up: imports, the mel filterbank, openSMILE's config
        for step, (wall, cpu) in times.items():
            out[step]["wall"].append(wall)
            out[step]["cpu"].append(cpu)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", help="audio folder (default: a 2-actor synthetic corpus)")
    parser.add_argument("--clips", type=int, default=120, help="clips to measure")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    machine = Machine()

    import torch

    torch.set_num_threads(1)  # a prepare task's setting
    params = load_config("prepare", ["input=x", "output=y"]).features
    params = dataclasses.replace(params, groups=("logmel", "prosody", "egemaps"))
    paths = corpus_files(args.corpus, args.clips)
    times = measure(paths, params)
    median = {s: {k: statistics.median(v) for k, v in t.items()} for s, t in times.items()}
    base = median["logmel"]["cpu"]
    print(f"{len(paths)} clips, 1 torch thread; median ms per clip (CPU / wall), x log-mel CPU:")
    for step, m in median.items():
        print(
            f"  {step:10s} {1000 * m['cpu']:7.1f} / {1000 * m['wall']:7.1f} ms"
            f"   {m['cpu'] / base:6.1f}x"
        )
    result = {
        "command": "python bench/feature_groups.py " + " ".join(argv or sys.argv[1:]),
        "machine": machine.record(),
        "clips": len(paths),
        "median_ms_per_clip": {s: {k: 1000 * v for k, v in m.items()} for s, m in median.items()},
        "cpu_ratio_to_logmel": {s: m["cpu"] / base for s, m in median.items()},
    }
    write_results(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
