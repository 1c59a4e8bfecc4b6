"""Trials per hour of ``knd tune`` on 2 CPU cores, and Tune's own overhead per trial.

    .venv/bin/python bench/tune.py --data /tmp/features        # features from knd prepare
    .venv/bin/python bench/tune.py --actors 8 --configs 4 --epochs 2 --folds 2   # small settings
    .venv/bin/python bench/tune.py --data /tmp/features --folds 5 --epochs 3 \
        --out bench/results/tune_folds5.json   # the shipped folds, ASHA's grace period

The same ``--configs`` cpu_small configurations (a grid over the learning rate; everything else
fixed; every configuration trains ``--epochs`` epochs on ``--folds`` actor folds, test actors 1 and
2 set aside) run three ways in one process, one after another:

- ``plain``: a Python loop over the configurations calling ``knd.stages.tune.CrossValidation``
  directly (torch on both cores), no Ray at all: the baseline;
- ``tune_sequential``: ``knd.stages.tune.run`` with one trial at a time on both cores
  (``cpus_per_trial=2``), so its wall time minus the summed training time is Tune's overhead;
- ``tune_parallel``: ``knd.stages.tune.run`` with two one-core trials at once
  (``cpus_per_trial=1``), the default way a search uses the machine.

"Training time" is the sum of every trial's per-epoch ``epoch_s`` (training and validating every
fold); everything else (process start, moving data, building models, checkpoints, Tune's
bookkeeping) counts as overhead. ASHA cannot stop anything here (grace period = max_epochs), so all
three do the same work. Figures are printed as ratios against ``plain`` and written to
``--out`` (``bench/results/tune.json``). Without ``--data``, a corpus of ``--actors`` actors is
synthesised and prepared first (not timed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from common import Machine, write_results

RESULTS = Path(__file__).resolve().parent / "results" / "tune.json"
TEST_ACTORS = [1, 2]


def prepared_features(args: argparse.Namespace, scratch: str) -> str:
    if args.data:
        return args.data
    from knd.config.loading import load_config
    from knd.stages.prepare import run as prepare
    from knd.stages.synth import write_corpus

    corpus, features = os.path.join(scratch, "corpus"), os.path.join(scratch, "features")
    write_corpus(corpus, actors=args.actors, seed=0, progress=False)
    result = prepare(load_config("prepare", [f"input={corpus}", f"output={features}"]))
    if result.exit_code:
        raise SystemExit("prepare failed")
    return features


def space(args: argparse.Namespace) -> dict:
    lrs = np.geomspace(1e-3, 1e-2, args.configs).round(6).tolist()
    return {
        "model.width": args.width,
        "optim.batch_size": 32,
        "optim.lr": {"grid": lrs},
    }


def tune_config(args, data: str, space_file: str, storage: str, name: str, cpus: int):
    from knd.config.loading import load_config

    return load_config(
        "tune",
        [
            f"data={data}",
            f"space={space_file}",
            f"test_speakers={TEST_ACTORS}".replace(" ", ""),
            f"folds={args.folds}",
            "num_samples=1",
            f"max_epochs={args.epochs}",
            f"grace_epochs={args.epochs}",
            f"storage_path={storage}",
            f"name={name}",
            f"cpus_per_trial={cpus}",
            "retrain_best=false",
        ],
    )


def plain_loop(args: argparse.Namespace, cfg, meta: dict) -> dict:
    """The same configurations, one after another, without Ray."""
    import torch

    from knd.learning.experiment import (
        experiment_groups,
        experiment_label_set,
        trial_train_config,
    )
    from knd.stages.tune import CrossValidation, load_columns

    torch.set_num_threads(2)
    started = time.perf_counter()
    labels = experiment_label_set(meta)
    data = load_columns(cfg.data, meta["train_actors"], experiment_groups(meta), labels)
    grid = space(args)
    fixed = {k: v for k, v in grid.items() if k != "optim.lr"}
    train_s, scores = 0.0, []
    for lr in grid["optim.lr"]["grid"]:
        train_cfg = trial_train_config(fixed | {"optim.lr": lr}, meta)
        torch.manual_seed(train_cfg.train.seed)
        cpu, classes = torch.device("cpu"), len(labels.names)
        cv = CrossValidation(train_cfg, data, meta["folds"], cpu, classes)
        while cv.epoch < cv.epochs:
            metrics = cv.run_epoch()
            train_s += metrics["epoch_s"]
        scores.append(metrics["uar"])
    return {"wall_s": time.perf_counter() - started, "train_s": train_s, "trials": len(scores),
            "best_uar": max(scores)}  # fmt: skip


def tune_run(cfg) -> dict:
    from knd.learning.experiment import load_experiment, read_meta, trial_rows
    from knd.stages.tune import run as tune

    started = time.perf_counter()
    result = tune(cfg)
    wall = time.perf_counter() - started
    rows = trial_rows(load_experiment(result.experiment), read_meta(result.experiment))
    train_s = sum(h.get("epoch_s", 0.0) for r in rows for h in _epochs(result.experiment, r))
    return {"wall_s": wall, "train_s": train_s, "trials": len(rows),
            "best_uar": result.best["uar"] if result.best else None}  # fmt: skip


def _epochs(experiment: str, row: dict) -> list[dict]:
    path = Path(experiment, f"trial_{row['trial_id']}", "result.json")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", help="prepared features (default: synthesise and prepare)")
    parser.add_argument("--actors", type=int, default=8, help="actors to synthesise")
    parser.add_argument("--configs", type=int, default=4, help="configurations (trials)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per fold")
    parser.add_argument("--folds", type=int, default=2, help="actor folds per configuration")
    parser.add_argument("--width", type=int, default=16, help="cpu_small width")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    args = parser.parse_args()
    machine = Machine()

    from knd.config.schema import RayConfig
    from knd.learning.experiment import experiment_meta
    from knd.runtime.cluster import init_ray

    scratch = tempfile.mkdtemp(prefix="knd-bench-tune-")
    init_ray(RayConfig(address=None, num_cpus=2, verbose=False))
    data = prepared_features(args, scratch)
    space_file = os.path.join(scratch, "space.yaml")
    Path(space_file).write_text(yaml.safe_dump(space(args)))
    storage = os.path.join(scratch, "runs")

    from knd.data.shards import read_manifest

    base = tune_config(args, data, space_file, storage, "plain", 2)
    figures = {"plain": plain_loop(args, base, experiment_meta(base, read_manifest(data)))}
    for mode, cpus in (("tune_sequential", 2), ("tune_parallel", 1)):
        figures[mode] = tune_run(tune_config(args, data, space_file, storage, mode, cpus))
    for f in figures.values():
        f["trials_per_hour"] = 3600.0 * f["trials"] / f["wall_s"]
        f["overhead_per_trial_s"] = (f["wall_s"] - f["train_s"]) / f["trials"]
    # Two trials share the wall clock in parallel mode: per trial, the CPU-slot time not training.
    par = figures["tune_parallel"]
    par["overhead_per_trial_s"] = (2 * par["wall_s"] - par["train_s"]) / par["trials"]

    plain = figures["plain"]
    print(f"{args.configs} cpu_small configs x {args.folds} folds x {args.epochs} epochs "
          f"(width {args.width}) on {data}")  # fmt: skip
    for mode, f in figures.items():
        ratio = f["trials_per_hour"] / plain["trials_per_hour"]
        print(
            f"  {mode:<16} wall {f['wall_s']:7.1f} s  training {f['train_s']:7.1f} s  "
            f"{f['trials_per_hour']:7.1f} trials/h ({ratio:.2f}x plain)  "
            f"overhead {f['overhead_per_trial_s']:5.1f} s/trial"
        )
    report = {
        "command": "python " + " ".join(sys.argv),
        "settings": vars(args) | {"out": str(args.out), "test_actors": TEST_ACTORS},
        "machine": machine.record(),
        "figures": figures,
        "ratios_vs_plain": {
            m: f["trials_per_hour"] / plain["trials_per_hour"] for m, f in figures.items()
        },
    }
    write_results(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
