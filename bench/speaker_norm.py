"""What per-speaker standardisation does for a linear eGeMAPS model, and what skew does to it.

    .venv/bin/python bench/speaker_norm.py --data speech=F1 classic=F2 emodb=F3 crema_d=F4

Each ``NAME=FEATURES`` is a feature set prepared with the ``egemaps`` group. On every default
fold of each (``knd.data.speakers.corpus_folds``: EmoBox's six for RAVDESS, else five
speaker-disjoint folds; fold k tests on group k and trains on the rest) a logistic regression on
the 88 eGeMAPS functionals is trained and tested with the features standardised

* **global**: by the training clips' statistics (the baseline of issue 30's table);
* **speaker**: each clip by its own speaker's (``knd.learning.speaker_norm``, every clip of the
  speaker, shrinkage ``speaker_prior_clips`` 4, the prior pooled over training speakers);
* **speaker, no shrinkage**: the same with ``prior_clips`` 1e-6 (a speaker's raw statistics).

Then the **skewed** case: each test speaker contributes only a third of its clips, 80 % of them of
one emotion (its statistics are biased towards that emotion), for each shrinkage in
``--skew-prior-clips``; the training side is unchanged. Figures are mean +- std of test UAR over
folds, with the global model's as the baseline of the same run, and go to
``bench/results/speaker_norm.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Machine, write_results  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "speaker_norm.json"
NO_SHRINKAGE = 1e-6


def uar(truth: np.ndarray, predicted: np.ndarray) -> float:
    classes = np.unique(truth)
    return float(np.mean([(predicted[truth == c] == c).mean() for c in classes]))


def fit_predict(x_train, y_train, x_test) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=3000).fit(x_train, y_train).predict(x_test)


def by_speaker(values, speakers, reference_values, reference_speakers, prior_clips):
    """``values`` standardised per speaker (statistics from ``values`` themselves), the prior
    pooled over the reference (training) clips."""
    from knd.learning.speaker_norm import normalise_by_speaker, pooled_stats, speaker_moments

    prior = pooled_stats(speaker_moments({"egemaps": reference_values}, reference_speakers))
    moments = speaker_moments({"egemaps": values}, speakers)
    return normalise_by_speaker({"egemaps": values}, speakers, moments, prior, prior_clips)[
        "egemaps"
    ]


def skewed_rows(speakers, emotions, seed: int) -> np.ndarray:
    """A third of each speaker's clips, 80 % of one emotion (its most frequent), as row indices."""
    rng = np.random.default_rng(seed)
    keep = []
    for speaker in np.unique(speakers):
        rows = np.flatnonzero(speakers == speaker)
        n = max(2, len(rows) // 3)
        counts = np.bincount(emotions[rows])
        main = rows[emotions[rows] == counts.argmax()]
        rest = rows[emotions[rows] != counts.argmax()]
        n_main = min(len(main), int(round(0.8 * n)))
        keep += list(rng.choice(main, n_main, replace=False))
        keep += list(rng.choice(rest, min(len(rest), n - n_main), replace=False))
    return np.sort(np.asarray(keep))


def fold_figures(x, y, actor, test_group, skew_clips) -> dict:
    """UAR of every standardisation on one fold."""
    from sklearn.preprocessing import StandardScaler

    test = np.isin(actor, test_group)
    train = ~test
    scaler = StandardScaler().fit(x[train])
    out = {"global": uar(y[test], fit_predict(scaler.transform(x[train]), y[train],
                                              scaler.transform(x[test])))}  # fmt: skip
    for name, clips in (("speaker", 4.0), ("speaker_no_shrinkage", NO_SHRINKAGE)):
        x_train = by_speaker(x[train], actor[train], x[train], actor[train], clips)
        x_test = by_speaker(x[test], actor[test], x[train], actor[train], clips)
        out[name] = uar(y[test], fit_predict(x_train, y[train], x_test))
    x_train = by_speaker(x[train], actor[train], x[train], actor[train], 4.0)
    test_rows = np.flatnonzero(test)
    few = test_rows[skewed_rows(actor[test], y[test], seed=0)]
    predicted_global = fit_predict(scaler.transform(x[train]), y[train], scaler.transform(x[few]))
    out["skewed_global"] = uar(y[few], predicted_global)
    for clips in skew_clips:
        x_few = by_speaker(x[few], actor[few], x[train], actor[train], clips)
        # The model is the training side's (shrinkage 4); only the test speakers' statistics vary.
        out[f"skewed_speaker_prior_{clips:g}"] = uar(y[few], fit_predict(x_train, y[train], x_few))
    return out


def corpus_figures(data: str, skew_clips: list[float]) -> dict:
    from knd.data.shards import load_features, read_manifest
    from knd.data.speakers import corpus_folds

    table = load_features(data, groups=["egemaps"])
    x, y, actor = table.groups["egemaps"].astype(np.float64), table.emotion, table.actor
    folds = corpus_folds(read_manifest(data))
    runs = [fold_figures(x, y, actor, group, skew_clips) for group in folds]
    summary = {
        key: {
            "mean": round(float(np.mean([r[key] for r in runs])), 3),
            "std": round(float(np.std([r[key] for r in runs])), 3),
        }
        for key in runs[0]
    }
    base = summary["global"]["mean"]
    for figure in summary.values():
        figure["vs_global"] = round(figure["mean"] / base, 3)
    return {"folds": len(folds), "clips": len(y), "summary": summary, "per_fold": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True, help="NAME=FEATURES ...")
    parser.add_argument("--skew-prior-clips", default="0.000001,1,4,16")
    args = parser.parse_args()
    skew_clips = [float(v) for v in args.skew_prior_clips.split(",")]
    machine = Machine()
    results = {}
    for item in args.data:
        name, data = item.split("=", 1)
        results[name] = corpus_figures(data, skew_clips)
        print(name, json.dumps(results[name]["summary"]), flush=True)
    results["machine"] = machine.record()
    write_results(RESULTS, results, indent=1)


if __name__ == "__main__":
    main()
