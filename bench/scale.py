"""Data path at scale: ``knd prepare`` and ``knd score`` on a 1x and an Nx corpus, in one run.

    .venv/bin/python bench/scale.py                         # 1x = 24 actors (1440 clips), 10x
    .venv/bin/python bench/scale.py --actors 2 --copies 2   # a quick try: 120 and 240 clips

The 1x corpus is ``knd synth`` seed 0 (``--actors`` actors); the Nx corpus is ``--copies`` seeds
(0..N-1) side by side, ``seed-K/Actor_NN/...``: different audio, so nothing is a duplicate.
Corpora are written once to ``--work`` and kept. Each stage runs as the real command line
(``python -m knd.cli prepare|score``) in a fresh process with its own local Ray of
``--num-cpus`` CPUs, so nothing is shared between the sizes. The score checkpoint is the
``cpu_small`` model with random weights (throughput does not depend on the weights).

Stages: ``knd prepare`` with the default feature groups (``prepare``), again with the log-mel
alone (``prepare_logmel``), and ``knd score``. Per stage and size: wall time of the command, the
stage's own time and Ray's start-up (from the command's log), the peak summed RSS and PSS of the
command's whole process tree (driver, GCS, raylet, workers; sampled every 0.2 s; RSS counts
shared pages per process, PSS splits them) and the driver's own peak RSS. Ratios Nx/1x: time
(ideal N) and peak memory (ideal 1). From the Nx steady-state costs per clip it projects 1,000 h
of audio on 1, 4 and 16 nodes of 8 cores (linear scaling per core assumed). Figures go to
``bench/results/scale.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Machine, write_results  # noqa: E402
from prepare import TreeMemory  # noqa: E402 - bench/prepare.py, this folder's sibling
from score import feature_params, make_checkpoint  # noqa: E402

from knd.data import storage  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "scale.json"
TARGETS = {"time_ratio_max": 11.0, "memory_ratio_max": 1.3}
HOURS = 1000.0
NODES = (1, 4, 16)
CORES_PER_NODE = 8
STAGES = ("prepare", "prepare_logmel", "score")
"""``knd prepare`` with the default groups, with ``features.groups=[logmel]``, and ``knd score``."""


def corpus(work: Path, actors: int, seeds: int) -> str:
    """``seeds`` synthetic corpora of ``actors`` actors side by side, written once."""
    from knd.data.ravdess import actor_clips
    from knd.stages.synth import write_corpus

    root = work / f"corpus-{actors}a-{seeds}x"
    per_seed = sum(len(actor_clips(a)) for a in range(1, actors + 1))
    for seed in range(seeds):
        folder = root / f"seed-{seed}"
        if len(list(folder.rglob("*.wav"))) != per_seed:
            print(f"writing synth seed {seed} ({per_seed} files) to {folder} ...", flush=True)
            write_corpus(str(folder), actors, seed=seed, progress=False)
    return str(root)


class DriverMemory:
    """Peak RSS of one process (the command's driver), sampled on a thread."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                with open(f"/proc/{self.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            self.peak = max(self.peak, int(line.split()[1]) * 1024)
            except OSError:
                return
            time.sleep(0.2)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def command(stage: str, args: list[str], memory: TreeMemory) -> dict:
    """Run ``knd <stage> args`` in a fresh process; time, memory and its log's own figures."""
    memory.reset()
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "knd.cli", stage, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # knd's INFO lines (which carry the stage's own timings) show only when verbose.
        env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"KND_VERBOSE": "1"},
    )
    driver = DriverMemory(child.pid)
    out, err = child.communicate()
    wall = time.perf_counter() - started
    driver_peak = driver.stop()
    if child.returncode != 0:
        raise SystemExit(f"knd {stage} failed ({child.returncode}):\n{err[-3000:]}")
    text = out + err
    if stage == "prepare":
        found = re.search(r"in ([\d.]+) s \(Ray start-up ([\d.]+) s\)", text)
        stage_s, ray_s = float(found.group(1)), float(found.group(2))
    else:
        found = re.search(r"in ([\d.]+) s .*Ray start-up ([\d.]+) s", text)
        stage_s, ray_s = float(found.group(1)) + float(found.group(2)), float(found.group(2))
    return {
        "wall_s": round(wall, 2),
        "stage_s": round(stage_s, 2),
        "ray_start_s": round(ray_s, 2),
        "steady_s": round(stage_s - ray_s, 2),
        "peak_tree_gb": round(memory.peak / 2**30, 2),
        "peak_tree_pss_gb": round(memory.peak_pss / 2**30, 2),
        "peak_driver_gb": round(driver_peak / 2**30, 3),
    }


def measure(name: str, folder: str, work: Path, checkpoint: str, args, memory) -> dict:
    files = storage.list_files(folder, storage.AUDIO_SUFFIXES)
    features = work / f"features-{name}"
    storage.delete_dir(str(features))
    cpus = f"ray.num_cpus={args.num_cpus}"
    row = {"files": len(files)}
    row["prepare"] = command("prepare", [f"input={folder}", f"output={features}", cpus], memory)
    print(f"{name}: prepare {row['prepare']}", flush=True)
    # The log-mel alone beside the default groups: what the groups add per clip.
    logmel_only = [f"input={folder}", f"output={features}-logmel", cpus, "features.groups=[logmel]"]
    row["prepare_logmel"] = command("prepare", logmel_only, memory)
    print(f"{name}: prepare_logmel {row['prepare_logmel']}", flush=True)
    scores = work / f"scores-{name}.csv"
    row["score"] = command(
        "score",
        [f"checkpoint={checkpoint}", f"input={folder}", f"output={scores}", cpus]
        + ([f"num_actors={args.actors_score}"] if args.actors_score else []),
        memory,
    )
    print(f"{name}: score {row['score']}", flush=True)
    manifest = json.loads((features / "manifest.json").read_text())
    row["clips"] = manifest["num_rows"]
    import pandas as pd

    row["audio_s"] = round(float(pd.read_csv(scores)["duration"].sum()), 1)
    return row


def projection(big: dict, num_cpus: int) -> dict:
    """1,000 h of audio on nodes of 8 cores from the measured steady-state cost per clip."""
    clip_s = big["audio_s"] / big["files"]
    clips = HOURS * 3600 / clip_s
    out = {
        "assumptions": (
            f"{HOURS:.0f} h as clips of the measured mean length ({clip_s:.2f} s, "
            f"{clips:,.0f} clips); core-seconds per clip from the {big['files']}-file run's "
            f"steady state on {num_cpus} cores; linear scaling over {CORES_PER_NODE}-core nodes "
            "(input read from S3 at the same per-clip cost, no other job); Ray start-up and the "
            "driver's listing/commit not included"
        ),
        "mean_clip_s": round(clip_s, 2),
        "clips": round(clips),
    }
    for stage in STAGES:
        per_clip = big[stage]["steady_s"] * num_cpus / big["files"]
        out[stage] = {
            "core_s_per_clip": round(per_clip, 4),
            **{
                f"{n}_nodes_h": round(clips * per_clip / (n * CORES_PER_NODE) / 3600, 2)
                for n in NODES
            },
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--actors", type=int, default=24, help="actors per seed (60 clips each)")
    parser.add_argument("--copies", type=int, default=10, help="seeds in the large corpus")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--actors-score", type=int, default=None, help="score's num_actors")
    parser.add_argument("--work", default=None, help="scratch folder (default: /tmp/knd_scale)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)

    work = Path(args.work or Path(tempfile.gettempdir()) / "knd_scale")
    work.mkdir(parents=True, exist_ok=True)
    small = corpus(work, args.actors, 1)
    large = corpus(work, args.actors, args.copies)
    checkpoint = str(work / "checkpoint-cpu_small")
    if not Path(checkpoint, "meta.json").exists():
        paths = storage.list_files(small, storage.AUDIO_SUFFIXES)
        make_checkpoint(
            checkpoint, "cpu_small", feature_params(), paths[:: max(1, len(paths) // 32)]
        )
    machine = Machine()
    with TreeMemory() as memory:
        one = measure("1x", small, work, checkpoint, args, memory)
        many = measure(f"{args.copies}x", large, work, checkpoint, args, memory)
    ratios = {}
    for stage in STAGES:
        ratios[stage] = {
            "files": round(many["files"] / one["files"], 2),
            "time_steady": round(many[stage]["steady_s"] / one[stage]["steady_s"], 2),
            "time_wall": round(many[stage]["wall_s"] / one[stage]["wall_s"], 2),
            "peak_tree_memory": round(many[stage]["peak_tree_gb"] / one[stage]["peak_tree_gb"], 2),
            "peak_tree_pss": round(
                many[stage]["peak_tree_pss_gb"] / one[stage]["peak_tree_pss_gb"], 2
            ),
            "peak_driver_memory": round(
                many[stage]["peak_driver_gb"] / one[stage]["peak_driver_gb"], 2
            ),
        }
    report = {
        "command": "python bench/scale.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "num_cpus": args.num_cpus,
        "machine": machine.record(),
        "1x": one,
        f"{args.copies}x": many,
        "ratios": ratios,
        "targets": TARGETS,
        "meets_targets": {
            stage: {
                "time": ratios[stage]["time_steady"]
                <= TARGETS["time_ratio_max"] * args.copies / 10,
                "memory": ratios[stage]["peak_tree_memory"] <= TARGETS["memory_ratio_max"],
            }
            for stage in ratios
        },
        "projection_1000h": projection(many, args.num_cpus),
    }
    print(json.dumps({"ratios": ratios, "projection": report["projection_1000h"]}, indent=2))
    write_results(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
