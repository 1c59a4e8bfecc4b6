"""Losing a worker node half way: prepare and score on a 3-node local Ray cluster.

    .venv/bin/python bench/chaos.py --actors 2                   # 120 files, local paths
    .venv/bin/python bench/chaos.py --actors 1 --prefix s3://BUCKET/chaos --out -   # the test's run
    .venv/bin/python bench/chaos.py --actors 24 --seeds 10 --groups logmel \
        --out bench/results/chaos_10x_logmel.json                   # the 10x corpus: 14,400 files

A head with no CPU (it holds the driver) and two worker nodes of one CPU each, made with
``ray.cluster_utils.Cluster`` in this process. For ``knd prepare`` and then ``knd score``: once
uninterrupted, then once more with one worker node hard-killed (its raylet and workers, no drain)
when about ``--kill-at`` of the work is staged, and a replacement node added at once, as an
autoscaler would. Reported per stage: the wall-time ratio (killed / uninterrupted), rows lost, rows
duplicated, whether the rows equal the uninterrupted run's, and files left behind unlisted. Then
the driver: a real ``knd prepare`` / ``knd score`` process on the cluster is SIGKILLed at about
``--kill-at`` and the same command runs again: the total time ratio ((killed run + rerun) /
uninterrupted), the files the rerun reused and the files it did again.
Everything is written under ``--prefix`` (``s3://`` in the test, so no node relies on a shared
disk). Prints one JSON line; figures go to ``bench/results/chaos.json`` unless ``--out -``.
The cluster is stopped with ``Cluster.shutdown`` (never ``ray stop``, which stops every Ray on the
machine).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import Machine

os.environ.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")

RESULTS = Path(__file__).resolve().parent / "results" / "chaos.json"


def write_corpus(prefix: str, actors: int, seeds: int = 1) -> str:
    """``knd synth``'s corpus of ``actors`` actors under ``prefix/audio`` (local or s3://); with
    ``seeds`` > 1, one corpus per seed in ``audio/seed-K`` (the 10x corpus is 10 seeds)."""
    from knd.data import storage
    from knd.stages.synth import write_corpus as synth

    audio = storage.join(prefix, "audio")
    for seed in range(seeds):
        out = storage.join(audio, f"seed-{seed}") if seeds > 1 else audio
        synth(out, actors, seed, progress=False)  # writes s3:// itself: no scratch copy
    return audio


def staged_count(folder: str, suffix: str) -> int:
    """Files ending in ``suffix`` directly in ``folder`` (0 while it does not exist)."""
    import pyarrow.fs as pafs

    from knd.data import storage

    fs, path = storage.resolve(folder)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return sum(1 for i in infos if i.base_name.endswith(suffix))


def staged_chunks(parent: str, output_name: str) -> int:
    """Chunks ``knd score`` has staged for ``parent/output_name`` (in its hidden folder)."""
    import pyarrow.fs as pafs

    from knd.data import storage

    fs, path = storage.resolve(parent)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    folders = [i.base_name for i in infos if i.base_name.startswith(f".{output_name}.staged-")]
    return sum(staged_count(storage.join(parent, f), ".parquet") for f in folders)


def busy_worker(cluster):
    """A worker node with work on it (no CPU free), else the first worker; never the head, which
    holds the driver."""
    from ray._private.state import available_resources_per_node

    free = available_resources_per_node()
    workers = cluster.list_all_nodes()[1:]
    busy = [n for n in workers if free.get(n.node_id, {}).get("CPU", 0.0) < 1.0]
    return (busy or workers)[0]


def kill_a_worker_when(cluster, ready, done: threading.Event) -> dict:
    """Hard-kill one worker node once ``ready()`` holds, then add a replacement node."""
    while not ready() and not done.is_set():
        time.sleep(0.05)
    if done.is_set():
        return {"killed": False}
    victim = busy_worker(cluster)
    started = time.perf_counter()
    cluster.remove_node(victim, allow_graceful=False)
    cluster.add_node(num_cpus=1)
    return {"killed": True, "replaced_in_s": round(time.perf_counter() - started, 2)}


def with_node_loss(cluster, work, ready) -> tuple[object, float, dict]:
    """``(result, seconds, kill)`` of ``work()`` while one worker node is killed and replaced."""
    done = threading.Event()
    box: dict = {}

    def target() -> None:
        try:
            box["result"] = work()
        finally:
            done.set()

    started = time.perf_counter()
    thread = threading.Thread(target=target)
    thread.start()
    kill = kill_a_worker_when(cluster, ready, done)
    thread.join()
    return box.get("result"), time.perf_counter() - started, kill


def with_driver_killed(
    stage: str, args: list[str], ready, rerun, uninterrupted_s: float
) -> tuple[object, dict]:
    """``(rerun result, timings)``: a real ``knd <stage>`` process joined to the cluster is
    SIGKILLed once ``ready()`` holds, then ``rerun()`` runs the same; the timings are both runs'
    seconds and their total over ``uninterrupted_s``."""
    import signal
    import subprocess

    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "knd.cli", stage, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    while not ready() and child.poll() is None:
        time.sleep(0.05)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    killed_s = time.perf_counter() - started
    started = time.perf_counter()
    result = rerun()
    rerun_s = time.perf_counter() - started
    return result, {
        "killed_run_s": round(killed_s, 1),
        "rerun_s": round(rerun_s, 1),
        "time_ratio": round((killed_s + rerun_s) / uninterrupted_s, 2),
    }


def prepare_outcome(ref_out: str, out: str) -> dict:
    """Rows lost and duplicated against the uninterrupted output; equal rows; unlisted files."""
    import numpy as np

    from knd.data import storage
    from knd.data.shards import load_features

    ref, got = load_features(ref_out), load_features(out)
    paths = list(got.path)
    same = sorted(paths) == sorted(ref.path)
    if same:
        a, b = np.argsort(got.path), np.argsort(ref.path)
        for group, values in got.inputs().items():
            same = same and bool(np.array_equal(values[a], ref.inputs()[group][b]))
    folders = {s.split("/")[0] for s in got.manifest["shards"]}
    listed = {storage.join(out, s) for s in got.manifest["shards"]}
    written = {f for folder in folders for f in storage.list_files(storage.join(out, folder))}
    return {
        "rows_lost": len(set(ref.path) - set(paths)),
        "rows_duplicated": len(paths) - len(set(paths)),
        "rows_equal_uninterrupted": same,
        "unlisted_files_left": len(written - listed),
    }


def bench_prepare(cluster, audio: str, prefix: str, kill_at: float, groups: str) -> dict:
    """``knd prepare`` uninterrupted, then with a worker node lost at about ``kill_at``."""
    from knd.config.loading import load_config
    from knd.data import storage
    from knd.stages.prepare import (
        files_per_task,
        label_inputs,
        list_inputs,
        run,
        staging_folders,
    )

    options = ["batch_size=4", *([f"features.groups=[{groups}]"] if groups else [])]

    def cfg(name: str):
        out = storage.join(prefix, name)
        return load_config("prepare", [f"input={audio}", f"output={out}", *options])

    started = time.perf_counter()
    ref = run(cfg("features-ref"))
    ref_s = time.perf_counter() - started
    chaos_cfg = cfg("features-chaos")
    uris, paths, listing = list_inputs(audio)

    def staging_of(c) -> str:
        digest = label_inputs(c, uris, paths).digest
        return storage.join(c.output, staging_folders(c, listing, labels_digest=digest)[0])

    staging = staging_of(chaos_cfg)
    parts = math.ceil(ref.num_rows / files_per_task(ref.num_rows, 2.0, chaos_cfg))
    ready = lambda: staged_count(staging, ".done.json") >= kill_at * parts  # noqa: E731
    result, chaos_s, kill = with_node_loss(cluster, lambda: run(chaos_cfg), ready)
    node_loss = {
        "node_lost_s": round(chaos_s, 1),
        "time_ratio": round(chaos_s / ref_s, 2),
        **kill,
        "exit_code": result.exit_code if result else None,
        **prepare_outcome(ref.output, chaos_cfg.output),
    }
    again_cfg = cfg("features-driver-killed")
    staging = staging_of(again_cfg)
    args = [f"input={audio}", f"output={again_cfg.output}", *options]
    ready = lambda: staged_count(staging, ".done.json") >= kill_at * parts  # noqa: E731
    again, timings = with_driver_killed("prepare", args, ready, lambda: run(again_cfg), ref_s)
    driver_kill = {
        **timings,
        "files_reused": again.num_reused,
        "files_decoded_by_rerun": again.num_rows - again.num_reused,
        **prepare_outcome(ref.output, again_cfg.output),
    }
    files = ref.num_rows + ref.num_rejected
    uninterrupted = {
        "seconds": round(ref_s, 1),
        "rows": ref.num_rows,
        "rejected": ref.num_rejected,
        # Every shard the manifest lists is in the bucket: nothing relied on a node's disk.
        "shards_listed_missing": sum(
            not storage.exists(storage.join(ref.output, shard)) for shard in ref.manifest["shards"]
        ),
    }
    return {
        "files": files,
        "uninterrupted_s": uninterrupted["seconds"],
        "uninterrupted": uninterrupted,
        "node_loss": node_loss,
    }, driver_kill


def score_outcome(ref_out: str, out: str, num_files: int) -> dict:
    """Rows lost and duplicated, and whether they equal the uninterrupted run's."""
    import io

    import numpy as np
    import pandas as pd

    from knd.data import storage

    ref = pd.read_parquet(io.BytesIO(storage.read_bytes(ref_out))).sort_values("path")
    got = pd.read_parquet(io.BytesIO(storage.read_bytes(out))).sort_values("path")
    same = list(got["path"]) == list(ref["path"]) and list(got["label"]) == list(ref["label"])
    probs = [c for c in ref.columns if c.startswith("p_")]
    same = same and bool(np.allclose(got[probs].to_numpy(), ref[probs].to_numpy(), atol=1e-6))
    return {
        "rows_lost": num_files - got["path"].nunique(),
        "rows_duplicated": len(got) - got["path"].nunique(),
        "rows_equal_uninterrupted": same,
        "errors": int((got["error"] != "").sum()),
    }


def bench_score(cluster, audio: str, prefix: str, kill_at: float) -> dict:
    """``knd score`` uninterrupted, then with a worker node lost at about ``kill_at``."""
    from knd.config.loading import load_config
    from knd.data import storage
    from knd.stages.score import FILES_PER_TASK, run

    checkpoint = storage.join(prefix, "checkpoint")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from score import feature_params, make_checkpoint  # bench/score.py

    paths = storage.list_files(audio)
    make_checkpoint(checkpoint, "cpu_small", feature_params(), paths[:: max(1, len(paths) // 32)])

    def cfg(name: str):
        args = [f"checkpoint={checkpoint}", f"input={audio}", f"output={prefix}/{name}"]
        return load_config("score", [*args, "num_actors=2"])

    started = time.perf_counter()
    ref = run(cfg("scores-ref.parquet"))
    ref_s = time.perf_counter() - started
    chunks = math.ceil(len(paths) / (2 * FILES_PER_TASK))

    def ready() -> bool:
        return staged_chunks(prefix, "scores-chaos.parquet") >= kill_at * chunks

    result, chaos_s, kill = with_node_loss(cluster, lambda: run(cfg("scores-chaos.parquet")), ready)
    node_loss = {
        "node_lost_s": round(chaos_s, 1),
        "time_ratio": round(chaos_s / ref_s, 2),
        **kill,
        "exit_code": result.exit_code if result else None,
        **score_outcome(ref.output, result.output, len(paths)),
    }
    name = "scores-driver-killed.parquet"
    again_cfg = cfg(name)
    args = [f"{k}={v}" for k, v in (("checkpoint", checkpoint), ("input", audio))]
    args += [f"output={again_cfg.output}", "num_actors=2"]
    ready = lambda: staged_chunks(prefix, name) >= kill_at * chunks  # noqa: E731
    again, timings = with_driver_killed("score", args, ready, lambda: run(again_cfg), ref_s)
    driver_kill = {
        **timings,
        "files_reused": again.resumed,
        "files_scored_by_rerun": again.num_files - again.resumed,
        **score_outcome(ref.output, again.output, len(paths)),
    }
    files = len(paths)
    return {"files": files, "uninterrupted_s": round(ref_s, 1), "node_loss": node_loss}, driver_kill


class EpochLog:
    """Train hooks: each worker appends ``epoch pid`` to a file at the end of every epoch (the
    cluster's nodes are processes of this machine, so a local file reaches them all)."""

    def __init__(self, path: str):
        self.path = path

    def on_batch(self, epoch, index, rank, actors) -> None:
        pass

    def on_epoch_end(self, epoch, rank, metrics) -> None:
        with open(self.path, "a") as f:
            f.write(f"{epoch} {rank} {os.getpid()}\n")


def prepare_logmel(audio: str, prefix: str) -> str:
    """The log-mel features of ``audio`` that the train and tune stages share."""
    from knd.config.loading import load_config
    from knd.data import storage
    from knd.stages.prepare import run as prepare

    features = storage.join(prefix, "features-logmel")
    args = [f"input={audio}", f"output={features}", "features.groups=[logmel]"]
    prepare(load_config("prepare", args))
    return features


def score_trained(checkpoint: str, audio: str, out: str) -> dict:
    """The trained checkpoint scores the test actor's audio on the cluster (after the loss)."""
    import io

    import pandas as pd

    from knd.config.loading import load_config
    from knd.data import storage
    from knd.stages.score import run as score

    test_audio = storage.join(audio, "Actor_01")
    args = [f"checkpoint={checkpoint}", f"input={test_audio}", f"output={out}", "num_actors=2"]
    result = score(load_config("score", args))
    rows = pd.read_parquet(io.BytesIO(storage.read_bytes(out)))
    files = sorted(storage.list_files(test_audio))
    return {
        "files": len(files),
        "rows": len(rows),
        "errors": int((rows["error"] != "").sum()),
        "paths_equal_input": sorted(rows["path"]) == files,
        "failed": result.failed,
    }


def bench_train(
    cluster, audio: str, features: str, prefix: str, lose_node: bool = True, epochs: int = 3
) -> dict:
    """``knd train`` (2 DDP workers, one per worker node), with a worker node lost once Ray has
    recorded a checkpoint and a replacement node added (the run must go on from that
    checkpoint), or uninterrupted (``lose_node=False``: the pipeline across nodes). Its
    checkpoint (on the run's storage) then scores the test actor's audio on the cluster."""
    from knd.config.loading import load_config
    from knd.data import storage
    from knd.learning.report import read_history
    from knd.stages.train import RAY_RUN_SNAPSHOT, run

    run_dir, name = storage.join(prefix, "runs"), "node-lost" if lose_node else "across-nodes"
    args = [f"data={features}", f"run_dir={run_dir}", f"name={name}", "recipe=cpu_small"]
    args += [
        "model.width=8",
        "split.test_speakers=[1]",
        "split.val_speakers=[]",
        "wandb.enabled=false",
    ]
    args += [f"optim.epochs={epochs}", "train.num_workers=2", "train.max_failures=2"]
    epoch_log = tempfile.mktemp(prefix="knd-chaos-epochs-")
    snapshot = storage.join(run_dir, name, RAY_RUN_SNAPSHOT)
    work = lambda: run(load_config("train", args), hooks=EpochLog(epoch_log))  # noqa: E731
    if lose_node:
        result, seconds, kill = with_node_loss(cluster, work, lambda: storage.exists(snapshot))
    else:
        started = time.perf_counter()
        result, kill = work(), {"killed": False}
        seconds = time.perf_counter() - started
    ends = [
        tuple(int(v) for v in line.split()) for line in Path(epoch_log).read_text().splitlines()
    ]
    history = read_history(storage.join(run_dir, name))
    return {
        "seconds": round(seconds, 1),
        **kill,
        # (epoch, rank, pid): the group restarted on the new node goes on after the checkpoint
        "epochs_ended": ends,
        "history_epochs": [int(h["epoch"]) for h in history],
        "metrics_epochs": result.metrics.get("epochs") if result else None,
        "metrics_written": storage.exists(storage.join(run_dir, name, "metrics.json")),
        "checkpoint": result.checkpoint if result else None,
        "scored": score_trained(
            result.checkpoint, audio, storage.join(prefix, "scores-trained.parquet")
        )
        if result
        else None,
    }


def bench_tune(cluster, features: str, prefix: str) -> dict:
    """``knd tune`` (two trials at once, one per worker node) with a worker node lost once a trial
    has checkpointed an epoch: its trial must go on from that checkpoint, and analyse must read
    the finished experiment."""
    import yaml

    from knd.config.loading import load_config
    from knd.data import storage
    from knd.learning.experiment import load_experiment
    from knd.stages.analyse import run as analyse
    from knd.stages.tune import run

    space = Path(tempfile.mkdtemp(prefix="knd-chaos-tune-")) / "space.yaml"
    fixed = {"model.width": 8, "optim.batch_size": 16, "optim.warmup_epochs": 0}
    space.write_text(yaml.safe_dump(fixed | {"optim.lr": {"grid": [3.0e-3, 1.0e-3]}}))
    storage_path, name = storage.join(prefix, "tune"), "node-lost"
    experiment = storage.join(storage_path, name)
    args = [f"data={features}", f"space={space}", "test_speakers=[1]", "folds=2", "num_samples=1"]
    args += [f"storage_path={storage_path}", f"name={name}", "max_epochs=3", "max_concurrent=2"]
    # The search is what a node loss interrupts; the retrain of its winner is test_tune's.
    args.append("retrain_best=false")

    def ready() -> bool:  # a trial has uploaded a checkpoint
        return storage.exists(experiment) and any(
            "/checkpoint_" in path for path in storage.list_files(experiment)
        )

    result, seconds, kill = with_node_loss(cluster, lambda: run(load_config("tune", args)), ready)
    analysis = load_experiment(experiment)
    trials = []
    for trial in analysis.trials:
        frame = analysis.trial_dataframes.get(trial.trial_id)
        epochs = [] if frame is None else [int(e) for e in frame["epoch"]]
        trials.append({"status": trial.status, "failures": trial.run_metadata.num_failures})
        trials[-1]["epochs"] = epochs
    out = tempfile.mkdtemp(prefix="knd-chaos-analyse-")
    analysed = analyse(load_config("analyse", [f"experiment={experiment}", f"out={out}"]))
    return {
        "seconds": round(seconds, 1),
        **kill,
        "exit_code": result.exit_code if result else None,
        "trials": trials,
        "analysed_trials": analysed.num_trials,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--actors", type=int, default=2, help="synthetic actors (60 files each)")
    parser.add_argument("--seeds", type=int, default=1, help="synth seeds (10: the 10x corpus)")
    parser.add_argument("--prefix", help="where everything is written (default: a temp folder)")
    parser.add_argument("--kill-at", type=float, default=0.5, help="share of work staged first")
    parser.add_argument("--out", default=str(RESULTS), help="results JSON ('-': none)")
    parser.add_argument(
        "--stages",
        default="prepare,score",
        help="prepare,score,train,tune (node lost in each); pipeline: train then score, no loss",
    )
    parser.add_argument(
        "--groups", default="", help="prepare's feature groups, e.g. logmel (default: shipped)"
    )
    args = parser.parse_args(argv)
    machine = Machine()

    import ray
    from ray.cluster_utils import Cluster

    from knd.data import storage

    prefix = args.prefix or tempfile.mkdtemp(prefix="knd-chaos-")
    stages = args.stages.split(",")
    audio = (
        write_corpus(prefix, args.actors, args.seeds)
        if {"prepare", "score"} & set(stages)
        else None
    )
    # Train tests actor 1 and trains on 2 and 3; tune holds out 1 and folds 2 and 3.
    learning = {"train", "tune", "pipeline"} & set(stages)
    learning_audio = write_corpus(storage.join(prefix, "learn"), 3) if learning else None
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        os.environ["RAY_ADDRESS"] = cluster.address  # every stage joins this cluster
        ray.init(address=cluster.address, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        results = {
            "command": "python bench/chaos.py " + " ".join(argv or sys.argv[1:]),
            "nodes": "head (0 CPU, driver) + 2 workers (1 CPU each); one worker killed, one added",
        }
        if "prepare" in stages:
            results["prepare"], prepare_driver = bench_prepare(
                cluster, audio, prefix, args.kill_at, args.groups
            )
            results.setdefault("driver_kill", {})["prepare"] = prepare_driver
        if "score" in stages:
            results["score"], score_driver = bench_score(cluster, audio, prefix, args.kill_at)
            results.setdefault("driver_kill", {})["score"] = score_driver
        features = prepare_logmel(learning_audio, prefix) if learning else None
        if "pipeline" in stages:
            results["pipeline"] = bench_train(
                cluster, learning_audio, features, prefix, lose_node=False
            )
        if "train" in stages:
            results["train"] = bench_train(cluster, learning_audio, features, prefix)
        if "tune" in stages:
            results["tune"] = bench_tune(cluster, features, prefix)
    finally:
        ray.shutdown()
        cluster.shutdown()
    results["machine"] = machine.record()
    print(json.dumps(results), flush=True)
    if args.out != "-":
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
