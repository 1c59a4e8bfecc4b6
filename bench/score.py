"""``knd score`` throughput: real-time factor, and Ray Data against a plain loop in the same run.

    .venv/bin/python bench/score.py                              # 2 CPUs, cpu_small, 1440 files
    .venv/bin/python bench/score.py --corpus demo/corpus --actors 4
    .venv/bin/python bench/score.py --recipe resnet18 --use-gpu --num-cpus 16   # on a GPU machine

The corpus is ``knd synth``'s (RAVDESS format: 48 kHz mono WAVs of 3-5 s), written once to a
scratch folder unless ``--corpus`` names one. The checkpoint is the recipe's model with random
weights (``--checkpoint`` takes a trained one instead): throughput does not depend on the weights.
Both sides run the same functions on every file (read, decode, downmix, resample, trim, window,
log-mel, normalise, model):

- **baseline**: one process, a plain ``for`` loop, windows batched ``--batch-size`` at a time
  through the same :class:`knd.stages.score.Scorer` (torch's default threads for the model);
- **ray**: ``knd.stages.score.run`` on a local Ray with ``--num-cpus`` CPUs, end to end (listing,
  decode, model loading, aggregation and writing the CSV), once per ``--compute`` path: ``tasks``
  (Ray's warm worker processes, the model cached per process) and ``actors`` (a pool of
  ``num_actors``, each a new process); Ray's own start-up is measured and reported separately.
  Each path's first run in the bench's Ray session is reported apart (``first_run_seconds``):
  a ``knd score`` command starts its own Ray, so its workers are cold like that first run's.

Real-time factor = seconds of audio scored per wall-clock second. Each side runs ``--repeats``
times, alternating, and the best time of each counts (the machine is shared). Figures are
written to ``bench/results/score.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from common import Machine, write_results

from knd.audio.waveform import decode_audio
from knd.config.loading import build, config_dir, load_config, load_yaml
from knd.config.schema import FeatureConfig
from knd.data import storage
from knd.data.ravdess import EMOTIONS

RESULTS = Path(__file__).resolve().parent / "results" / "score.json"


def feature_params() -> FeatureConfig:
    """The feature parameters ``knd prepare`` uses by default."""
    return build(FeatureConfig, load_yaml(config_dir() / "prepare.yaml")["features"], "features.")


def make_checkpoint(folder: str, recipe: str, params: FeatureConfig, paths: list[str]) -> None:
    """A real checkpoint of ``recipe``'s model with random weights and measured norm statistics."""
    import dataclasses

    import torch

    from knd.audio.features import clip_features, feature_hash
    from knd.learning.checkpoint import save_checkpoint
    from knd.learning.models import build_model

    spec = load_config("train", ["data=unused", f"recipe={recipe}"]).model
    torch.manual_seed(0)
    model = build_model(spec.name, len(EMOTIONS), width=spec.width, dropout=spec.dropout)
    sample = [clip_features(*decode_audio(storage.read_bytes(p)), params)[0] for p in paths]
    stacked = np.stack(sample)
    meta = {
        "version": 2,
        "label_set": "ravdess8",
        "labels": list(EMOTIONS),
        "feature_params": dataclasses.asdict(params),
        "groups": {"logmel": feature_hash(params)},
        "model": {"name": spec.name, "width": spec.width, "dropout": spec.dropout},
        "group_norm": {
            "logmel": {
                "mean": stacked.mean(axis=(0, 2)).tolist(),
                "std": stacked.std(axis=(0, 2)).tolist(),
            }
        },
        "epoch": 0,
        "split": {"train": [], "val": [], "test": []},
        "metrics": {},
        "note": "untrained: random weights, for throughput only",
    }
    save_checkpoint(folder, model, meta)


def baseline(checkpoint: str, paths: list[str], batch_size: int, use_gpu: bool) -> dict:
    """The plain loop: the same per-file functions and the same model code, one process."""
    from knd.audio.features import file_windows
    from knd.learning.checkpoint import load_meta
    from knd.stages.score import Scorer, scoring_params

    started = time.perf_counter()
    meta = load_meta(checkpoint)
    # The groups the model reads, as knd score computes them (not every group prepare stored).
    params = scoring_params(meta, checkpoint)
    hop = load_config("score", ["checkpoint=x", "input=x", "output=x.csv"]).window_hop_seconds
    scorer = Scorer(checkpoint, use_gpu=use_gpu)
    stored = np.dtype(params.dtype)
    pending: list[np.ndarray] = []
    owners: list[str] = []
    probs: dict[str, list[np.ndarray]] = {}
    audio_seconds = 0.0

    def flush() -> None:
        batch = {"logmel": np.stack(pending), "error": np.full(len(pending), "", dtype=object)}
        for path, p in zip(owners, scorer(batch)["probs"], strict=True):
            probs.setdefault(path, []).append(p)
        pending.clear()
        owners.clear()

    for path in paths:
        samples, rate = decode_audio(storage.read_bytes(path))
        audio_seconds += len(samples) / rate
        for window in file_windows(samples, rate, params, hop):
            pending.append(window.groups["logmel"].astype(stored))
            owners.append(path)
            if len(pending) == batch_size:
                flush()
    if pending:
        flush()
    means = {path: np.mean(p, axis=0) for path, p in probs.items()}
    return {
        "seconds": time.perf_counter() - started,
        "audio_seconds": audio_seconds,
        "probs": means,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", help="audio folder (default: synthesise --actors actors)")
    parser.add_argument("--actors", type=int, default=24, help="synthetic actors (60 files each)")
    parser.add_argument("--checkpoint", help="default: untrained --recipe model")
    parser.add_argument("--recipe", default="cpu_small", help="model recipe of the checkpoint")
    parser.add_argument("--use-gpu", action="store_true", help="inference on GPU (both sides)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--num-actors", type=int, default=None, help="default: configs/score.yaml")
    parser.add_argument("--batch-size", type=int, default=None, help="default: configs/score.yaml")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side; best counts")
    parser.add_argument("--compute", default="tasks,actors", help="knd score compute= paths")
    parser.add_argument("--work", help="scratch folder (default: a temporary one)")
    parser.add_argument("--out", default=str(RESULTS), help="results JSON")
    args = parser.parse_args()
    machine = Machine()

    from knd.config.schema import RayConfig
    from knd.runtime.cluster import init_ray
    from knd.stages.score import run

    work = Path(args.work or tempfile.mkdtemp(prefix="knd-bench-score-"))
    corpus = args.corpus
    if corpus is None:
        from knd.stages.synth import write_corpus

        corpus = str(work / f"corpus-{args.actors}")
        if not Path(corpus).exists():  # kept in --work between runs: synthesis is slow
            write_corpus(corpus, args.actors, seed=0, progress=False)
    paths = storage.list_files(corpus, storage.AUDIO_SUFFIXES)
    params = feature_params()
    checkpoint = args.checkpoint
    if checkpoint is None:
        checkpoint = str(work / f"checkpoint-{args.recipe}")
        make_checkpoint(checkpoint, args.recipe, params, paths[:: max(1, len(paths) // 32)])
    defaults = load_config("score", ["checkpoint=x", "input=x", "output=x.csv"])
    num_actors = args.num_actors or defaults.num_actors
    batch_size = args.batch_size or defaults.batch_size

    started = time.perf_counter()
    init_ray(RayConfig(address=None, num_cpus=args.num_cpus, verbose=False))
    ray_start = time.perf_counter() - started

    overrides = [
        f"checkpoint={checkpoint}",
        f"input={corpus}",
        f"output={work / 'scores.csv'}",
        f"num_actors={num_actors}",
        f"batch_size={batch_size}",
        f"use_gpu={str(args.use_gpu).lower()}",
    ]
    paths_run = [c for c in args.compute.split(",") if c]
    base_runs: list[dict] = []
    ray_runs: dict[str, list] = {c: [] for c in paths_run}
    for _ in range(args.repeats):
        base_runs.append(baseline(checkpoint, paths, batch_size, args.use_gpu))
        for compute in paths_run:
            ray_runs[compute].append(run(load_config("score", [*overrides, f"compute={compute}"])))
    base = min(base_runs, key=lambda r: r["seconds"])
    audio_seconds = base["audio_seconds"]
    columns = [f"p_{name}" for name in EMOTIONS]
    expected = np.stack([base["probs"][p] for p in paths])

    def figures_of(runs: list) -> dict:
        best = min(runs, key=lambda r: r.seconds)
        table = pd.read_csv(best.output).set_index("path")
        diff = float(np.abs(table.loc[paths, columns].to_numpy() - expected).max())
        return {
            "ray_seconds": [round(r.seconds, 2) for r in runs],
            # The first run in this Ray session: its workers were cold, as a knd score command's.
            "first_run_seconds": round(runs[0].seconds, 2),
            # Model loading and the first batch, inside ray_seconds.
            "ray_first_rows_seconds": [round(r.first_rows_seconds, 2) for r in runs],
            "realtime_factor_ray": round(audio_seconds / best.seconds, 1),
            "ratio_ray_vs_baseline": round(base["seconds"] / best.seconds, 2),
            "ratio_first_run_vs_baseline": round(base["seconds"] / runs[0].seconds, 2),
            "max_abs_probability_difference": diff,
        }

    result = {
        "command": "python " + " ".join(sys.argv),
        "checkpoint": args.checkpoint or f"untrained {args.recipe} (random weights)",
        "device": "gpu" if args.use_gpu else "cpu",
        "num_cpus": args.num_cpus,
        "machine": machine.record(),
        "files": len(paths),
        "audio_seconds": round(audio_seconds, 1),
        "num_actors": num_actors,
        "batch_size": batch_size,
        "baseline_seconds": [round(r["seconds"], 2) for r in base_runs],
        "realtime_factor_baseline": round(audio_seconds / base["seconds"], 1),
        "ray_start_seconds": round(ray_start, 2),
        "compute": {c: figures_of(runs) for c, runs in ray_runs.items()},
        "targets": {"realtime_factor": 300, "ratio": 1.3},
    }
    print(json.dumps(result, indent=2))
    write_results(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
