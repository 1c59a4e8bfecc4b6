"""Ray Train (1 worker) against a plain PyTorch loop: same model, data, epochs and step code.

    python bench/train.py --data data/features                      # cpu_small on this CPU
    python bench/train.py --data data/features --recipe resnet18 --device cuda --mode plain

Both sides train through :class:`knd.learning.engine.Learner` (same augmentation, optimiser and
schedule) with the same number of torch threads; the plain loop draws its batches from tensors
already in memory, as a Ray Train worker does once it has read its shard (streamed from Ray Data
instead when the shard is too large). Reported:

- ``ratio``: Ray's steady-state training-epoch time (median over epochs after the first) over
  the plain loop's (target <= 1.10);
- Ray start-up (``ray.init``) and time to the first epoch (driver data preparation plus worker
  group start), and the first batch's latency inside the worker, separately;
- samples/s of both, and on CUDA the GPU utilisation sampled during the plain loop.

``--evaluate`` also scores the plain loop's final model on the validation and test actors (used
to tune recipes quickly without Ray). Results go to ``bench/results/train.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import Machine, write_results  # noqa: E402

from knd.config.loading import (
    load_config,
    replace,
    to_dict,  # noqa: E402
)
from knd.data.label_sets import label_set  # noqa: E402
from knd.data.ravdess import split_actors  # noqa: E402
from knd.data.speakers import default_split  # noqa: E402
from knd.learning.checkpoint import make_meta  # noqa: E402
from knd.learning.engine import ArrayBatches, Learner, row_stats  # noqa: E402
from knd.learning.inference import score_actors  # noqa: E402


class GpuSampler:
    """Samples ``torch.cuda.utilization()`` in a thread while the plain loop runs."""

    def __init__(self, interval: float = 0.2):
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.samples.append(float(torch.cuda.utilization()))
            except Exception:  # no NVML: leave the figure out
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def plain_loop(cfg, data: str, device: str, threads: int, evaluate: bool) -> dict:
    """Train with the engine over in-memory tensors, no Ray; per-epoch times and metrics."""
    from knd.data.shards import load_features, manifest_actors, manifest_emotions, read_manifest

    torch.set_num_threads(threads)
    torch.manual_seed(cfg.train.seed)
    manifest = read_manifest(data)
    if manifest is None:
        raise SystemExit(f"no prepared features at {data} (run knd prepare)")
    test, val = default_split(manifest, cfg.split.test_speakers, cfg.split.val_speakers)
    split = split_actors(test, val, actors=manifest_actors(manifest))
    train = load_features(data, actors=split.train, groups=cfg.model.groups)
    dev = torch.device(device)
    gpu = dev.type == "cuda"
    inputs = {g: torch.from_numpy(v).to(dev) for g, v in train.inputs().items()}
    emotions = manifest_emotions(manifest)
    classes = label_set(cfg.labels, emotions)
    labels = torch.from_numpy(classes.targets(train.emotion, emotions)).to(dev)
    batches = ArrayBatches(inputs, labels, cfg.optim.batch_size, cfg.train.seed)
    norm = row_stats(inputs, torch.arange(len(labels), device=dev))
    names = classes.names
    learner = Learner(cfg, len(names), norm, batches.steps, dev)
    epoch_s = []
    sampler = GpuSampler() if gpu else None
    if sampler:
        sampler.__enter__()
    for epoch in range(1, cfg.optim.epochs + 1):
        if gpu:
            torch.cuda.synchronize()
        started = time.perf_counter()
        learner.train_epoch(batches.epoch(epoch))
        if gpu:
            torch.cuda.synchronize()
        epoch_s.append(time.perf_counter() - started)
        print(f"plain epoch {len(epoch_s)}: {epoch_s[-1]:.2f} s", flush=True)
    if sampler:
        sampler.__exit__()
    out = {
        "epoch_s": epoch_s,
        "samples_per_epoch": batches.steps * batches.batch_size,
        "steady_epoch_s": statistics.median(epoch_s[1:] or epoch_s),
    }
    out["samples_per_s"] = out["samples_per_epoch"] / out["steady_epoch_s"]
    if sampler and sampler.samples:
        out["gpu_utilisation_pct"] = statistics.mean(sampler.samples)
    if evaluate:
        parts = {"train": split.train, "val": split.val, "test": split.test}
        meta = make_meta(cfg, train.manifest, learner.norm_stats, parts, run="bench-plain")
        for part, actors in (("val", split.val), ("test", split.test)):
            if not actors:
                continue
            m = score_actors(learner.model, meta, data, actors, 256, dev).metrics
            out[part] = {k: m[k] for k in ("accuracy", "uar", "macro_f1", "n")}
            print(f"plain {part}: {out[part]}", flush=True)
    return out


def ray_loop(cfg, threads: int) -> dict:
    """The same training through ``knd.stages.train.run`` with one worker."""
    from knd.runtime.cluster import init_ray
    from knd.stages import train

    started = time.perf_counter()
    init_ray(cfg.ray)
    ray_init_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as run_dir:
        cfg = replace(
            cfg,
            **{
                "run_dir": run_dir,
                "name": "bench",
                "train.num_workers": 1,
                "train.cpus_per_worker": threads,
                "wandb.enabled": False,
            },
        )
        called = time.time()
        result = train.run(cfg)
        total_s = time.time() - called
    history = result.history
    epoch_s = [h["train_epoch_s"] for h in history]
    steady = statistics.median(epoch_s[1:] or epoch_s)
    first_epoch_start = history[0]["epoch_started_at"]
    samples_per_epoch = history[0]["epoch_samples"]
    return {
        "ray_init_s": ray_init_s,
        "to_first_epoch_s": first_epoch_start - called,
        "first_batch_s": history[0]["first_batch_s"],
        "epoch_s": epoch_s,
        "steady_epoch_s": steady,
        "samples_per_epoch": samples_per_epoch,
        "samples_per_s": samples_per_epoch / steady,
        "total_s": total_s,
        "test": {k: result.metrics["test"][k] for k in ("accuracy", "uar", "macro_f1", "n")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="features written by knd prepare")
    parser.add_argument("--recipe", default="cpu_small")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2, help="torch threads on both sides")
    parser.add_argument("--mode", default="both", choices=["both", "plain", "ray"])
    parser.add_argument("--evaluate", action="store_true", help="score the plain loop's model")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "train.json"))
    parser.add_argument("overrides", nargs="*", help="knd train key=value overrides")
    args = parser.parse_args()

    overrides = [f"data={args.data}", f"recipe={args.recipe}", f"optim.epochs={args.epochs}"]
    overrides.append(f"train.use_gpu={'true' if args.device == 'cuda' else 'false'}")
    cfg = load_config("train", overrides + args.overrides)
    result: dict = {
        "recipe": args.recipe,
        "device": args.device,
        "epochs": args.epochs,
        "threads": args.threads,
        "config": {k: to_dict(cfg)[k] for k in ("model", "optim", "augment")},
    }
    machine = Machine()
    if args.device == "cuda":
        result["gpu"] = torch.cuda.get_device_name(0)
    if args.mode in ("both", "plain"):
        result["plain"] = plain_loop(cfg, args.data, args.device, args.threads, args.evaluate)
    if args.mode in ("both", "ray"):
        result["ray"] = ray_loop(cfg, args.threads)
    if args.mode == "both":
        ray_r, plain = result["ray"], result["plain"]
        result["ratio"] = ray_r["steady_epoch_s"] / plain["steady_epoch_s"]
        result["samples_per_s_ratio"] = ray_r["samples_per_s"] / plain["samples_per_s"]
        print(
            f"steady-state epoch: ray {ray_r['steady_epoch_s']:.2f} s, plain "
            f"{plain['steady_epoch_s']:.2f} s, ratio {result['ratio']:.3f} (target <= 1.10); "
            f"samples/s: ray {ray_r['samples_per_s']:.1f}, plain {plain['samples_per_s']:.1f} "
            f"({result['samples_per_s_ratio']:.3f}x)"
        )
        print(
            f"ray.init {result['ray']['ray_init_s']:.1f} s, to first epoch "
            f"{result['ray']['to_first_epoch_s']:.1f} s, first batch "
            f"{result['ray']['first_batch_s']:.2f} s"
        )
    if "plain" in result:
        plain = result["plain"]
        line = f"plain loop: {plain['samples_per_s']:.0f} samples/s"
        if "gpu_utilisation_pct" in plain:
            line += f", GPU utilisation {plain['gpu_utilisation_pct']:.0f}%"
        print(line)
    result["machine"] = machine.record()
    write_results(args.out, result)


if __name__ == "__main__":
    main()
