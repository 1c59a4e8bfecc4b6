"""How hard is the synthetic corpus? A linear model on time-averaged log-mel, speaker-independent.

    .venv/bin/python bench/synth_difficulty.py                      # synthesise 24 actors first
    .venv/bin/python bench/synth_difficulty.py --corpus /tmp/synth24
    .venv/bin/python bench/synth_difficulty.py --corpus /tmp/synth24 --cnn-metrics RUN/metrics.json

Each clip becomes the mean and standard deviation over time of every log-mel band (the
parameters of ``configs/prepare.yaml``, computed by ``knd.features.clip_features`` exactly as
``knd prepare`` does). A standardised logistic regression trains on every actor outside the test
group (EmoBox fold 1: actors 1, 11, 20, 21) and is scored on the test group. The corpus is meant to
sit between trivial and hopeless for this model (test accuracy roughly 0.40-0.75), so a model of
the whole spectrogram, which also sees the order of events, has room to do clearly better.
Figures are printed as ratios against the majority-class baseline and chance of the same run,
and written to ``bench/results/synth_difficulty.json``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from knd import storage
from knd.audio import decode_audio
from knd.config import FeatureConfig, build, config_dir, load_yaml
from knd.features import clip_features
from knd.ravdess import EMOBOX_FOLDS, EMOTIONS, parse_name
from knd.synth import write_corpus

RESULTS = Path(__file__).resolve().parent / "results" / "synth_difficulty.json"


def feature_params() -> FeatureConfig:
    """The feature parameters ``knd prepare`` uses by default."""
    return build(FeatureConfig, load_yaml(config_dir() / "prepare.yaml")["features"], "features.")


def clip_statistics(path: str) -> np.ndarray:
    """Mean and standard deviation over time of each log-mel band of one file."""
    import torch

    torch.set_num_threads(1)  # one process per core does the parallelism
    samples, rate = decode_audio(storage.read_bytes(path), path)
    mel, _ = clip_features(samples, rate, feature_params())
    return np.concatenate([mel.mean(axis=1), mel.std(axis=1)])


def corpus_table(corpus: str, workers: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(features, emotion index 0..7, actor)`` of every RAVDESS-named WAV under ``corpus``."""
    paths = storage.list_files(corpus, (".wav",))
    if not paths:
        raise SystemExit(f"no .wav files under {corpus}")
    clips = [parse_name(p) for p in paths]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        rows = pool.map(clip_statistics, paths, chunksize=16)
    emotions = np.array([c.emotion - 1 for c in clips])
    actors = np.array([c.actor for c in clips])
    return np.stack(rows), emotions, actors


def recall_per_class(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    return np.array(
        [np.mean(predicted[truth == k] == k) if np.any(truth == k) else np.nan for k in range(8)]
    )


def linear_figures(x, y, actors, test_actors) -> dict:
    """Test accuracy, UAR and per-class recall of StandardScaler + LogisticRegression."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    test = np.isin(actors, test_actors)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=1.0))
    model.fit(x[~test], y[~test])
    predicted = model.predict(x[test])
    recall = recall_per_class(y[test], predicted)
    return {
        "accuracy": float(np.mean(predicted == y[test])),
        "uar": float(np.nanmean(recall)),
        "train_accuracy": float(model.score(x[~test], y[~test])),
        "recall": {EMOTIONS[k]: round(float(r), 3) for k, r in enumerate(recall)},
        "n_test": int(test.sum()),
    }


def majority_figures(y, actors, test_actors) -> dict:
    """The baseline that always answers the training set's most frequent emotion."""
    test = np.isin(actors, test_actors)
    majority = int(np.bincount(y[~test], minlength=8).argmax())
    predicted = np.full(int(test.sum()), majority)
    return {
        "label": EMOTIONS[majority],
        "accuracy": float(np.mean(predicted == y[test])),
        "uar": float(np.nanmean(recall_per_class(y[test], predicted))),
    }


def cnn_figures(metrics_path: str | None) -> dict | None:
    """Test accuracy and UAR of a trained spectrogram model, from its ``metrics.json``.

    This is where the CNN's figure joins the comparison: ``knd train`` / ``knd evaluate`` write
    ``{"test": {"accuracy", "uar", ...}, "test_actors": [...]}``.
    """
    if not metrics_path:
        return None
    metrics = json.loads(storage.read_text(metrics_path))
    test = metrics["test"]
    return {
        "source": str(metrics_path),
        "accuracy": float(test["accuracy"]),
        "uar": float(test["uar"]),
        "test_actors": metrics.get("test_actors"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", help="existing corpus (default: synthesise one in a temp dir)")
    parser.add_argument("--actors", type=int, default=24, help="actors to synthesise (1..N)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0, help="processes (0: one per CPU)")
    parser.add_argument("--test-actors", default="1,11,20,21", help="held-out actors")
    parser.add_argument("--cnn-metrics", help="metrics.json of a CNN trained on the same split")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    workers = args.workers or os.cpu_count() or 1
    test_actors = [int(a) for a in args.test_actors.split(",")]

    with tempfile.TemporaryDirectory(prefix="knd-synth-") as scratch:
        corpus = args.corpus
        synth_seconds = None
        if corpus is None or not storage.exists(corpus):
            corpus = corpus or scratch
            started = time.perf_counter()
            write_corpus(corpus, args.actors, seed=args.seed, workers=workers)
            synth_seconds = time.perf_counter() - started
        started = time.perf_counter()
        x, y, actors = corpus_table(corpus, workers)
        feature_seconds = time.perf_counter() - started

    linear = linear_figures(x, y, actors, test_actors)
    majority = majority_figures(y, actors, test_actors)
    folds = [list(f) for f in EMOBOX_FOLDS if set(f) <= set(actors.tolist())]
    per_fold = [linear_figures(x, y, actors, fold)["uar"] for fold in folds]
    chance = 1.0 / len(EMOTIONS)
    result = {
        "corpus": str(corpus),
        "files": int(len(y)),
        "actors": sorted(set(actors.tolist())),
        "test_actors": test_actors,
        "features": "mean+std over time of log-mel (configs/prepare.yaml)",
        "linear": linear,
        "linear_uar_all_emobox_folds": {"mean": float(np.mean(per_fold)), "folds": per_fold},
        "majority": majority,
        "chance": chance,
        "ratios": {
            "linear_accuracy_over_majority": linear["accuracy"] / majority["accuracy"],
            "linear_uar_over_chance": linear["uar"] / chance,
        },
        "cnn": cnn_figures(args.cnn_metrics),
        "seconds": {"synth": synth_seconds, "features": feature_seconds},
    }
    if result["cnn"]:
        result["ratios"]["cnn_uar_over_linear_uar"] = result["cnn"]["uar"] / linear["uar"]

    print(f"corpus {corpus}: {len(y)} files, test actors {test_actors}")
    print(f"chance                     acc {chance:.3f}  UAR {chance:.3f}")
    print(
        f"majority ({majority['label']:<8})         acc {majority['accuracy']:.3f}  "
        f"UAR {majority['uar']:.3f}"
    )
    print(
        f"linear, time-averaged mel  acc {linear['accuracy']:.3f}  UAR {linear['uar']:.3f}  "
        f"(train acc {linear['train_accuracy']:.3f}; "
        f"{result['ratios']['linear_accuracy_over_majority']:.2f}x majority acc, "
        f"{result['ratios']['linear_uar_over_chance']:.2f}x chance UAR)"
    )
    print(
        f"linear UAR over all {len(per_fold)} EmoBox folds: mean {np.mean(per_fold):.3f} "
        f"({', '.join(f'{u:.2f}' for u in per_fold)})"
    )
    print(
        "linear recall per emotion: "
        + ", ".join(f"{k} {v:.2f}" for k, v in linear["recall"].items())
    )
    if result["cnn"]:
        cnn = result["cnn"]
        print(
            f"CNN (from {cnn['source']})  acc {cnn['accuracy']:.3f}  UAR {cnn['uar']:.3f}  "
            f"({result['ratios']['cnn_uar_over_linear_uar']:.2f}x linear UAR)"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    storage.write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
