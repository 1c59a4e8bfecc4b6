"""Encoder embeddings: extraction throughput (Ray vs a plain loop), head vs CNN epochs, tune rate.

    .venv/bin/python bench/embed.py                      # tiny random wav2vec2, 4 actors, 2 CPUs
    .venv/bin/python bench/embed.py --size base --actors 1   # a base-size encoder's speed

No pretrained weights can be downloaded here, so the encoder is randomly initialised with a real
architecture's config and written with ``save_pretrained``: ``--size tiny`` (hidden 32, two
layers: what the tests use) or ``--size base`` (wav2vec2-base's shapes, 95 M parameters). Speed
does not depend on the weights' values.

1. **Extraction**: the ``[logmel, embedding]`` groups of ``--actors`` actors of the synthetic
   corpus, by the driver logic of ``knd prepare`` (hash pass, featurise tasks that write their own
   shards, manifest) run as a plain loop in this process (torch's default threads), then by
   ``knd prepare`` on a local Ray with ``--num-cpus`` CPUs (one task per CPU, one torch thread
   each, the encoder loaded once per worker process). The loop runs twice, with torch's default
   threads and with one: ``ray_vs_loop`` is against the faster of the two. Files/s and real-time
   factor (audio seconds per second), warm-up apart; peak memory (PSS of this process tree, see
   bench/prepare.py).
2. **Epochs**: one epoch of ``embedding_head`` on the cached embeddings against one of
   ``plain_cnn`` on the log-mel of the same clips, in-process, same engine.
3. **Tune**: ``knd tune`` over ``configs/tune/embedding_head.yaml`` (``--tune-samples`` trials,
   ``--tune-epochs`` epochs, two actor folds): trials per hour, start-up included.

Figures go to ``bench/results/embed.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Machine, write_results  # noqa: E402
from prepare import TreeMemory, _copy_subset, corpus_dir, measure, run_loop  # noqa: E402

from knd.config.loading import load_config  # noqa: E402
from knd.config.schema import RayConfig
from knd.data import storage  # noqa: E402
from knd.stages.prepare import list_inputs, run  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "embed.json"
TARGETS = {"ray_vs_loop": 1.3}
TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(16,) * 7,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
)


def write_encoder(folder: Path, size: str) -> str:
    """A random wav2vec2 of ``size`` (tiny or base) in the Hugging Face folder format."""
    import torch
    import transformers

    if not (folder / "config.json").exists():
        torch.manual_seed(0)
        transformers.logging.set_verbosity_error()
        config = transformers.Wav2Vec2Config(**(TINY if size == "tiny" else {}))
        transformers.AutoModel.from_config(config).save_pretrained(str(folder))
    return str(folder)


def extraction(args, corpus: str, encoder: str, scratch: Path, memory: TreeMemory) -> dict:
    """The plain loop (torch's default threads, then one thread) and Ray on the same files."""
    import ray
    import torch

    from knd.runtime.cluster import init_ray

    groups = "features.groups=[logmel,embedding]"
    base = [f"input={corpus}", f"ray.num_cpus={args.num_cpus}", groups]
    base.append(f"features.encoder={encoder}")

    def cfg_for(name: str):
        storage.delete_dir(str(scratch / name))
        return load_config("prepare", [*base, f"output={scratch / name}"])

    uris, paths, listing = list_inputs(corpus)
    n, warm = len(uris), min(16, len(uris))
    started = time.perf_counter()
    run_loop(cfg_for("loop-warm"), uris[:warm], paths[:warm], listing, args.num_cpus)
    loop_warm = time.perf_counter() - started
    rows, default_threads = {}, torch.get_num_threads()

    def loop():
        return run_loop(cfg_for("loop"), uris, paths, listing, args.num_cpus)

    rows["loop"], audio = measure("loop", loop, memory, n)
    rows["loop"].update(warmup_s=round(loop_warm, 2), torch_threads=default_threads)
    # With other work on the machine, torch's threads wait on each other at every small op of
    # an encoder's forward pass: one thread is the fairer loop there.
    torch.set_num_threads(1)
    rows["loop_1thread"], _ = measure("loop1", loop, memory, n, audio)
    torch.set_num_threads(default_threads)
    started = time.perf_counter()
    init_ray(RayConfig(address=None, num_cpus=args.num_cpus, verbose=False))
    ray_start = time.perf_counter() - started
    warm_dir = scratch / "ray-warm-input"
    _copy_subset(uris[:warm], paths[:warm], warm_dir)
    started = time.perf_counter()
    # Every worker process imports torch and transformers and loads the encoder once.
    run(load_config("prepare", [*base, f"input={warm_dir}", f"output={scratch / 'ray-warm'}"]))
    ray_warm = time.perf_counter() - started
    rows["ray"], _ = measure("ray", lambda: run(cfg_for("ray")), memory, n, audio)
    rows["ray"].update(startup_s=round(ray_start, 2), warmup_s=round(ray_warm, 2))
    ray.shutdown()
    for row in rows.values():
        row["realtime_factor"] = row.pop("audio_s_per_s")
    return rows


def epoch_seconds(features: str, recipe: str, extra: list[str], epochs: int = 3) -> float:
    """Median seconds of one training epoch of ``recipe`` on every clip of ``features``."""
    import numpy as np
    import torch

    from knd.data.label_sets import label_set
    from knd.data.shards import load_features, manifest_emotions
    from knd.learning.engine import ArrayBatches, Learner, row_stats

    cfg = load_config("train", [f"data={features}", f"recipe={recipe}", *extra])
    table = load_features(features, groups=cfg.model.inputs)
    inputs = {g: torch.from_numpy(v) for g, v in table.inputs().items() if g in cfg.model.inputs}
    classes = label_set(cfg.labels, manifest_emotions(table.manifest))
    labels = torch.from_numpy(classes.targets(table.emotion, manifest_emotions(table.manifest)))
    batches = ArrayBatches(inputs, labels, cfg.optim.batch_size, seed=0)
    norm = row_stats(inputs, torch.arange(len(labels)))
    learner = Learner(cfg, len(classes.names), norm, batches.steps, torch.device("cpu"))
    times = []
    for epoch in range(epochs):
        started = time.perf_counter()
        learner.train_epoch(batches.epoch(epoch))
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def tune_rate(features: str, scratch: Path, samples: int, epochs: int) -> dict:
    """Trials per hour of the embedding-head search on cached embeddings (the shipped space, its
    layer choices fitted to this encoder's states)."""
    import yaml

    from knd.data.shards import read_manifest
    from knd.stages.tune import run as tune

    shipped = Path(__file__).resolve().parents[1] / "configs" / "tune" / "embedding_head.yaml"
    space = yaml.safe_load(shipped.read_text())
    states = read_manifest(features)["feature_groups"]["embedding"]["shape"][0]
    space["model.layer"] = {"choice": [-1, *range(states)][:6]}
    space_file = scratch / "space.yaml"
    space_file.write_text(yaml.safe_dump(space))
    args = [
        f"data={features}",
        f"space={space_file}",
        "recipe=wav2vec2_frozen",
        f"num_samples={samples}",
        f"max_epochs={epochs}",
        "folds=2",
        f"storage_path={scratch / 'tune'}",
        "name=embed",
    ]
    started = time.perf_counter()
    result = tune(load_config("tune", args))
    seconds = time.perf_counter() - started
    return {
        "trials": result.num_trials,
        "seconds": round(seconds, 1),
        "trials_per_hour": round(3600 * result.num_trials / seconds),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", help="audio folder (default: synthesise --actors actors)")
    parser.add_argument("--actors", type=int, default=4)
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--size", choices=("tiny", "base"), default="tiny")
    parser.add_argument("--tune-samples", type=int, default=20)
    parser.add_argument("--tune-epochs", type=int, default=20)
    parser.add_argument("--out", default=None, help="scratch folder (default: a temp dir)")
    args = parser.parse_args(argv)

    corpus = corpus_dir(args.corpus, args.actors)
    scratch = Path(args.out or tempfile.mkdtemp(prefix="knd_bench_embed_"))
    encoder = write_encoder(scratch / f"wav2vec2-{args.size}", args.size)
    machine = Machine()
    print(f"{corpus}; {args.num_cpus} CPUs; load average {machine.load_before}", flush=True)
    with TreeMemory() as memory:
        rows = extraction(args, corpus, encoder, scratch, memory)
    features = str(scratch / "ray")
    head = epoch_seconds(features, "wav2vec2_frozen", [])
    cnn = epoch_seconds(features, "plain_cnn", ["model.groups=[logmel]"])
    print(f"epoch: embedding_head {head:.3f} s, plain_cnn {cnn:.2f} s", flush=True)
    tune = None  # --tune-samples 0 (e.g. a one-actor corpus leaves no actor to fold)
    if args.tune_samples:
        tune = tune_rate(features, scratch, args.tune_samples, args.tune_epochs)
    print(f"tune: {tune}", flush=True)
    best_loop = max(rows["loop"]["files_per_s"], rows["loop_1thread"]["files_per_s"])
    ratios = {
        "ray_vs_loop": round(rows["ray"]["files_per_s"] / best_loop, 2),
        "ray_vs_default_thread_loop": round(
            rows["ray"]["files_per_s"] / rows["loop"]["files_per_s"], 2
        ),
        "head_epoch_vs_cnn_epoch": round(head / cnn, 4),
    }
    report = {
        "command": "python bench/embed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "corpus": corpus,
        "encoder": {"size": args.size, "architecture": "wav2vec2", "weights": "random"},
        "num_cpus": args.num_cpus,
        "machine": machine.record(),
        "extraction": rows,
        "peak_pss_gb": round(memory.overall_pss / 2**30, 2),
        "epoch_seconds": {"embedding_head": round(head, 4), "plain_cnn": round(cnn, 3)},
        "tune": tune,
        "ratios": ratios,
        "targets": TARGETS,
        "meets_targets": {"ray_vs_loop": ratios["ray_vs_loop"] >= TARGETS["ray_vs_loop"]},
    }
    suffix = "" if args.size == "tiny" else f"_{args.size}"
    print(json.dumps({"ratios": ratios, "peak_pss_gb": report["peak_pss_gb"]}))
    write_results(RESULTS.with_name(f"embed{suffix}.json"), report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
