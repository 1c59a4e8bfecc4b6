"""How hard is each development corpus, and which recipe generalises across speakers on it?

    .venv/bin/python bench/synth_difficulty.py                                # everything
    .venv/bin/python bench/synth_difficulty.py --recipes none                 # linear only
    .venv/bin/python bench/synth_difficulty.py --styles speech --recipes plain_cnn,cpu_small \\
        --folds 1 --seeds 0 --work /tmp/difficulty                            # a reduced run
    .venv/bin/python bench/synth_difficulty.py --work /tmp/difficulty --finished-only  # report only

For each corpus style (``knd synth style=classic|speech``, 24 actors, seed 0) the corpus is
synthesised and prepared with the default features (``configs/prepare.yaml``) under ``--work``
(reused when already there). Then, over the six EmoBox actor folds
(``knd.data.ravdess.EMOBOX_FOLDS``; fold k holds out group k as the test actors):

* **linear**: a standardised logistic regression on the mean and standard deviation over time
  of every log-mel band of the prepared features (no order of events), trained on every
  non-test actor;
* **CNN recipes** (``--recipes``, default: the old default ``cpu_small`` and the new default
  ``plain_cnn``): ``knd.stages.train.run`` per fold and seed, each recipe as it ships. A recipe
  with a validation group (cpu_small) validates on the next EmoBox group, so it trains on 16 actors
  and picks its epoch there; one without (plain_cnn) trains on all 20 and keeps the last epoch.

It reports mean +- std over folds x seeds of test accuracy and UAR, writes every run's figures,
time and command to ``bench/results/synth_difficulty.json`` after each run (a reduced or
interrupted run still leaves its figures; a run whose ``metrics.json`` is already under
``--work`` is read back, not retrained; ``--finished-only`` reports those and trains nothing),
and prints the ratio of the CNN's UAR to the linear model's (the hidden real-speech corpus
separates them 0.52 -> 0.77 UAR, issue 16) and, for two recipes, their paired difference over
the (fold, seed) runs both finished.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from knd.config.loading import load_config
from knd.data import storage
from knd.data.ravdess import EMOBOX_FOLDS, EMOTIONS
from knd.learning.report import read_history

RESULTS = Path(__file__).resolve().parent / "results" / "synth_difficulty.json"


def recall_per_class(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    return np.array(
        [np.mean(predicted[truth == k] == k) if np.any(truth == k) else np.nan for k in range(8)]
    )


def time_averaged(features: np.ndarray) -> np.ndarray:
    """Mean and standard deviation over time of every band of ``[N, n_mels, frames]``."""
    f = features.astype(np.float32)
    return np.concatenate([f.mean(axis=2), f.std(axis=2)], axis=1)


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
        "test_actors": [int(a) for a in test_actors],
        "accuracy": float(np.mean(predicted == y[test])),
        "uar": float(np.nanmean(recall)),
        "train_accuracy": float(model.score(x[~test], y[~test])),
        "recall": {EMOTIONS[k]: round(float(r), 3) for k, r in enumerate(recall)},
    }


def summary(rows: list[dict]) -> dict:
    """Mean and standard deviation (over folds x seeds) of accuracy and UAR."""
    out: dict = {"n": len(rows)}
    for key in ("accuracy", "uar"):
        values = np.array([r[key] for r in rows], dtype=float)
        out[key] = {
            "mean": float(values.mean()) if len(values) else None,
            "std": float(values.std()) if len(values) else None,
        }
    return out


def paired_difference(first: list[dict], second: list[dict]) -> dict:
    """Mean and std of ``first - second`` over the (fold, seed) pairs both recipes ran.

    Folds differ far more in difficulty than recipes do, so the paired difference says which
    recipe is ahead more sharply than comparing two means with their fold-to-fold spread.
    """
    by_key = {(r["fold"], r["seed"]): r for r in second}
    pairs = [(r, by_key[(r["fold"], r["seed"])]) for r in first if (r["fold"], r["seed"]) in by_key]
    return summary([{k: a[k] - b[k] for k in ("accuracy", "uar")} for a, b in pairs])


def prosody_statistics(prosody: np.ndarray) -> np.ndarray:
    """The 11 prosody statistics of issue 20 per clip, from the ``[N, 4, frames]`` group.

    F0 in semitones over voiced frames: mean, std, 10th/90th percentile, slope, mean absolute
    change; voiced ratio; speech duration (voiced frames); log-energy mean, std, range.
    """
    rows = []
    for clip in prosody.astype(np.float64):
        f0, voiced, energy = clip[0], clip[1] > 0, clip[3]
        v = f0[voiced] if voiced.sum() >= 2 else np.zeros(2)
        slope = np.polyfit(np.arange(len(v)), v, 1)[0]
        rows.append(
            [v.mean(), v.std(), *np.percentile(v, [10, 90]), slope, np.abs(np.diff(v)).mean()]
            + [voiced.mean(), voiced.sum() / 100.0]
            + [energy.mean(), energy.std(), np.ptp(energy)]
        )
    return np.asarray(rows, dtype=np.float32)


def linear_baselines(table) -> dict[str, list[dict]]:
    """Per-fold logistic regressions on the time-averaged log-mel and on whatever groups exist."""
    y, actors = table.emotion - 1, table.actor
    inputs = {"logmel_mean_std": time_averaged(table.groups["logmel"])}
    if "prosody" in table.groups:
        stats = prosody_statistics(table.groups["prosody"])
        inputs["prosody_stats"] = stats
        inputs["logmel_mean_std+prosody_stats"] = np.concatenate(
            [inputs["logmel_mean_std"], stats], 1
        )
    if "egemaps" in table.groups:
        inputs["egemaps"] = table.groups["egemaps"]
    return {
        name: [linear_figures(x, y, actors, group) for group in EMOBOX_FOLDS]
        for name, x in inputs.items()
    }


def ensure_corpus(work: str, style: str, workers: int, groups: str) -> tuple[str, str, dict]:
    """Synthesise and prepare the corpus of ``style`` under ``work`` (reused when present)."""
    from knd.stages import prepare, synth

    corpus = storage.join(work, f"synth-{style}")
    features = storage.join(work, f"features-{style}")
    seconds: dict = {}
    if not storage.exists(storage.join(corpus, "Actor_24")):
        started = time.perf_counter()
        synth.write_corpus(corpus, 24, seed=0, workers=workers, style=style)
        seconds["synth"] = time.perf_counter() - started
    started = time.perf_counter()
    groups_key = f"features.groups=[{groups}]"
    prepare.run(load_config("prepare", [f"input={corpus}", f"output={features}", groups_key]))
    seconds["prepare"] = time.perf_counter() - started
    return corpus, features, seconds


def cnn_run(features: str, recipe: str, fold: int, seed: int, args) -> dict | None:
    """One ``knd train`` run of ``recipe`` holding out EmoBox group ``fold`` (1-based).

    None when ``--finished-only`` and the run has not finished under ``--work``.
    """
    from knd.stages import train

    test = EMOBOX_FOLDS[fold - 1]
    name = f"{Path(features).name}-{recipe}-f{fold}-s{seed}"
    overrides = [
        f"data={features}",
        f"recipe={recipe}",
        f"split.test_speakers=[{','.join(map(str, test))}]",
        f"train.seed={seed}",
        f"run_dir={args.work}/runs",
        f"name={name}",
        "wandb.enabled=false",
    ]
    base = load_config("train", overrides[:2])
    if base.split.val_speakers:  # a recipe that selects its epoch: on the next EmoBox group
        val = EMOBOX_FOLDS[fold % len(EMOBOX_FOLDS)]
        overrides.append(f"split.val_speakers=[{','.join(map(str, val))}]")
    if args.epochs:
        overrides.append(f"optim.epochs={args.epochs}")
    if args.num_cpus:
        overrides.append(f"ray.num_cpus={args.num_cpus}")
    run_path = Path(args.work) / "runs" / name
    if (run_path / "metrics.json").exists():  # finished earlier (an interrupted bench resumes)
        metrics = json.loads((run_path / "metrics.json").read_text())
        history = read_history(str(run_path))
        result = train.TrainResult(
            str(run_path), metrics["checkpoint"], metrics, history, metrics["best_epoch"]
        )
        seconds = None
    elif args.finished_only:
        return None
    else:
        started = time.perf_counter()
        result = train.run(load_config("train", overrides))
        seconds = time.perf_counter() - started
    test_m = result.metrics["test"]
    epoch_s = [h["train_epoch_s"] for h in result.history]
    return {
        "recipe": recipe,
        "fold": fold,
        "seed": seed,
        "test_actors": list(test),
        "accuracy": float(test_m["accuracy"]),
        "uar": float(test_m["uar"]),
        "model_selection": result.metrics.get("model_selection"),
        "epoch": result.best_epoch,
        "epochs": len(result.history),
        "median_train_epoch_s": float(np.median(epoch_s)) if epoch_s else None,
        "train_seconds": float(np.sum(epoch_s)),  # the epochs' training time, start-up excluded
        "seconds": seconds,
        "command": "knd train " + " ".join(overrides),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--styles", default="classic,speech", help="corpus styles")
    parser.add_argument(
        "--recipes", default="cpu_small,plain_cnn", help="CNN recipes to train ('none': skip)"
    )
    parser.add_argument("--folds", default="1,2,3,4,5,6", help="EmoBox folds (1-based) for CNNs")
    parser.add_argument("--seeds", default="0,1", help="training seeds for CNNs")
    parser.add_argument("--epochs", type=int, default=0, help="override optim.epochs (0: recipe)")
    parser.add_argument("--work", default="bench/.work/difficulty", help="corpora, features, runs")
    parser.add_argument("--workers", type=int, default=0, help="synth processes (0: per CPU)")
    parser.add_argument("--num-cpus", type=int, default=0, help="CPUs for local Ray (0: all)")
    parser.add_argument(
        "--finished-only",
        action="store_true",
        help="report the runs already finished under --work; train nothing",
    )
    parser.add_argument(
        "--groups", default="logmel,prosody,egemaps", help="feature groups knd prepare computes"
    )
    parser.add_argument(
        "--baseline",
        default="plain_cnn",
        help="recipe every other recipe is compared with, run by run (same fold and seed)",
    )
    parser.add_argument(
        "--carry",
        default="",
        help="recipes whose runs are carried over from --out's earlier figures (same corpus, "
        "fold and seed) instead of being trained again",
    )
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    earlier = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    styles = [s for s in args.styles.split(",") if s]
    recipes = [r for r in args.recipes.split(",") if r and r != "none"]
    folds = [int(f) for f in args.folds.split(",") if f]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    workers = args.workers or os.cpu_count() or 1
    args.work = str(Path(args.work).resolve())

    from knd.data.shards import load_features

    result: dict = {
        "command": "python bench/synth_difficulty.py " + " ".join(argv or sys.argv[1:]),
        "folds": "EmoBox actor groups; fold k tests on group k",
        "linear_features": "mean+std over time of each log-mel band (prepared features)",
        "hidden_corpus_reference": {
            "linear": {"accuracy": 0.50, "uar": 0.52},
            "cpu_small": {"accuracy": 0.70, "uar": 0.66},
            "plain_cnn_w32_no_val": {"accuracy": 0.80, "uar": 0.77},
        },
        "corpora": {},
    }

    def save() -> None:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        storage.write_text(args.out, json.dumps(result, indent=2) + "\n")

    for style in styles:
        corpus, features, seconds = ensure_corpus(args.work, style, workers, args.groups)
        table = load_features(features, groups=[g for g in args.groups.split(",") if g])
        baselines = linear_baselines(table)
        linear = baselines.pop("logmel_mean_std")
        entry = {
            "corpus": corpus,
            "features": features,
            "seconds": seconds,
            "linear": {"folds": linear, **summary(linear)},
            "linear_other": {k: {"folds": v, **summary(v)} for k, v in baselines.items()},
            "cnn": {},
        }
        result["corpora"][style] = entry
        for name, lin in [("logmel_mean_std", entry["linear"]), *entry["linear_other"].items()]:
            print(
                f"[{style}] linear on {name} over 6 folds: acc {lin['accuracy']['mean']:.3f} +- "
                f"{lin['accuracy']['std']:.3f}, UAR {lin['uar']['mean']:.3f} +- "
                f"{lin['uar']['std']:.3f}"
            )
        for recipe in [r for r in args.carry.split(",") if r]:
            old = earlier.get("corpora", {}).get(style, {}).get("cnn", {}).get(recipe)
            if old:
                runs = [dict(r, carried_over=True) for r in old["runs"]]
                entry["cnn"][recipe] = {"runs": runs, **summary(runs)}
        save()
        for recipe in recipes:
            runs: list[dict] = []
            for fold in folds:
                for seed in seeds:
                    run = cnn_run(features, recipe, fold, seed, args)
                    if run is None:
                        continue
                    runs.append(run)
                    entry["cnn"][recipe] = {"runs": runs, **summary(runs)}
                    save()
                    r = runs[-1]
                    took = f"{r['seconds'] / 60:.1f} min" if r["seconds"] else "read back"
                    print(
                        f"[{style}] {recipe} fold {fold} seed {seed}: acc {r['accuracy']:.3f} "
                        f"UAR {r['uar']:.3f} ({took})"
                    )
            if not runs:
                continue
            s = entry["cnn"][recipe]
            # Against the linear model on the same folds, so a reduced run compares like with like.
            linear_uar = np.mean([linear[r["fold"] - 1]["uar"] for r in runs])
            s["uar_over_linear_uar_same_folds"] = s["uar"]["mean"] / float(linear_uar)
            print(
                f"[{style}] {recipe} over {s['n']} runs: acc {s['accuracy']['mean']:.3f} +- "
                f"{s['accuracy']['std']:.3f}, UAR {s['uar']['mean']:.3f} +- {s['uar']['std']:.3f}"
            )
            save()
        entry["paired"] = {}
        for recipe in [r for r in entry["cnn"] if r != args.baseline]:
            if args.baseline not in entry["cnn"]:
                break
            pair = (entry["cnn"][recipe]["runs"], entry["cnn"][args.baseline]["runs"])
            d = paired_difference(*pair) | {"difference": f"{recipe} - {args.baseline}"}
            entry["paired"][recipe] = d
            print(
                f"[{style}] {d['difference']} over {d['n']} paired runs (same fold and seed): "
                f"acc {d['accuracy']['mean']:+.3f} +- {d['accuracy']['std']:.3f}, "
                f"UAR {d['uar']['mean']:+.3f} +- {d['uar']['std']:.3f}"
            )
        save()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
