"""How hard is each development corpus, and which recipe generalises across speakers on all of them?

    .venv/bin/python bench/synth_difficulty.py                                # the whole protocol
    .venv/bin/python bench/synth_difficulty.py --recipes none                 # linear only
    .venv/bin/python bench/synth_difficulty.py --corpora emodb --recipes egemaps_linear \\
        --folds 1 --seeds 0 --work /tmp/difficulty                            # a reduced run
    .venv/bin/python bench/synth_difficulty.py --work /tmp/difficulty --finished-only  # report only

**Corpora** (``--corpora``, default ``classic,speech,emodb,crema_d,tess,savee``): ``classic`` and
``speech`` are the RAVDESS layout in that voice style (``knd synth style=...``, 24 actors, seed
0); ``emodb``, ``crema_d``, ``tess`` and ``savee`` are the synthetic voice under that corpus's
real names (``knd synth layout=...``, its default speakers, seed 0, the classic voice;
``LAYOUT:speech`` takes the speech-like one). ``--styles classic,speech`` still names RAVDESS
corpora alone, as before ``--corpora`` was. Each is synthesised and prepared (``corpus=LAYOUT``,
``--groups``, default ``logmel,prosody,egemaps``) under ``--work`` (reused when already there).
Then, over the corpus's default speaker folds (``knd.data.speakers.corpus_folds``: EmoBox's six
actor groups for RAVDESS, five speaker-disjoint folds otherwise, one per speaker for fewer than
five speakers; fold k tests on group k):

* **linear**: logistic regressions trained on every non-test speaker, on the mean and standard
  deviation over time of every log-mel band (no order of events), on 11 prosody statistics,
  on both, and on the 88 eGeMAPS functionals, each standardised by the training clips'
  statistics; and on the eGeMAPS functionals standardised **per speaker**
  (``egemaps_speaker_norm``: ``knd.learning.speaker_norm``, every clip of the speaker, shrinkage
  ``prior_clips`` 4, the prior pooled over the training speakers);
* **recipes** (``--recipes``, default ``cpu_small,plain_cnn``): ``knd.stages.train.run`` per fold
  (``--folds``, 1-based; those past a corpus's count are skipped) and seed, each recipe as it
  ships. A recipe with a validation group (cpu_small) validates on the next fold, so it trains
  on the rest and picks its epoch there (with fewer than three folds it validates on nothing);
  one without (plain_cnn) trains on every non-test speaker and keeps the last epoch. A run is
  named ``features-<corpus>-<recipe>-f<fold>-s<seed>`` (``features-speech-plain_cnn-f1-s0``).

Per corpus it reports mean +- std over folds x seeds of test accuracy and UAR per recipe, the
ratio of a recipe's UAR to the log-mel linear model's on the same folds (the hidden real-speech
corpus separates them 0.52 -> 0.77 UAR, issue 16) and each recipe's paired difference to
``--baseline`` over the (fold, seed) runs both finished (``paired``, ``summary``). Across corpora
(``selection``) each recipe's **worst corpus** (lowest mean UAR) and whether it loses more than
0.02 UAR to the baseline (paired) on any corpus: the default is the recipe whose worst corpus is
best among those run on every corpus that lose no more than 0.02 to the baseline (today's
default) anywhere. Every run's figures, time and command go to
``bench/results/synth_difficulty.json`` (``--out``) after each run, so a reduced or interrupted
run still leaves its figures. A run ``--out`` already holds (same corpus, recipe, fold, test
speakers and seed) is read back, not retrained, and so are the corpora and recipes this invocation
does not name: the protocol runs across sessions and machines, its figures committed as they come.
A run whose ``metrics.json`` is already under ``--work`` is read back too; ``--finished-only``
reports those and trains, synthesises and prepares nothing (a corpus not prepared under
``--work`` is skipped).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from knd.config.loading import load_config
from knd.data import storage
from knd.data.shards import manifest_emotions
from knd.data.speakers import corpus_folds, speaker_names
from knd.learning.report import read_history

RESULTS = Path(__file__).resolve().parent / "results" / "synth_difficulty.json"
ALL_CORPORA = "classic,speech,emodb,crema_d,tess,savee"
RAVDESS_STYLES = ("classic", "speech")
PRIOR_CLIPS = 4.0  # per-speaker standardisation's shrinkage (knd.learning.speaker_norm)
LOSS_MARGIN = 0.02  # a recipe losing more UAR than this to the baseline on a corpus is out
SELECTION_RULE = (
    "the default is the recipe whose worst corpus (lowest mean test UAR) is best, among those "
    f"run on every corpus that lose no more than {LOSS_MARGIN} UAR (paired, same fold and seed) "
    "to the baseline (today's default) on any corpus"
)


@dataclass(frozen=True)
class Corpus:
    """One development corpus: its name (results, folders, run names), layout and voice."""

    key: str
    layout: str
    style: str

    @property
    def actors(self) -> int | None:
        """What ``write_corpus`` synthesises: RAVDESS's 24 actors, else the layout's speakers."""
        return 24 if self.layout == "ravdess" else None


def parse_corpus(entry: str) -> Corpus:
    """``classic``/``speech`` (RAVDESS in that voice), ``LAYOUT`` (classic voice) or
    ``LAYOUT:STYLE``; ``ravdess[:STYLE]`` is the same corpus as ``STYLE``."""
    from knd.data.corpora import LAYOUTS
    from knd.stages.synth import STYLES

    name, _, style = entry.partition(":")
    if name in RAVDESS_STYLES and not style:
        return Corpus(name, "ravdess", name)
    style = style or "classic"
    if name not in LAYOUTS or style not in STYLES:
        raise SystemExit(
            f"--corpora: {entry!r} is none of {', '.join(RAVDESS_STYLES)}, LAYOUT or LAYOUT:STYLE "
            f"(layouts {', '.join(LAYOUTS)}; styles {', '.join(STYLES)})"
        )
    if name == "ravdess":
        return Corpus(style, "ravdess", style)
    return Corpus(name if style == "classic" else f"{name}-{style}", name, style)


def recall_per_class(truth: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    return np.array(
        [
            np.mean(predicted[truth == k] == k) if np.any(truth == k) else np.nan
            for k in range(classes)
        ]
    )


def time_averaged(features: np.ndarray) -> np.ndarray:
    """Mean and standard deviation over time of every band of ``[N, n_mels, frames]``."""
    f = features.astype(np.float32)
    return np.concatenate([f.mean(axis=2), f.std(axis=2)], axis=1)


def by_speaker(x: np.ndarray, speakers: np.ndarray, train: np.ndarray) -> np.ndarray:
    """eGeMAPS rows ``x`` each standardised by its speaker's statistics (all its clips, shrinkage
    :data:`PRIOR_CLIPS`), the prior pooled over the ``train`` rows' speakers."""
    from knd.learning.speaker_norm import normalise_by_speaker, pooled_stats, speaker_moments

    groups = {"egemaps": x}
    moments = speaker_moments(groups, speakers)  # a speaker's sums come from its clips alone
    training = {int(s) for s in np.unique(speakers[train])}
    prior = pooled_stats({s: m for s, m in moments.items() if s in training})
    return normalise_by_speaker(groups, speakers, moments, prior, PRIOR_CLIPS)["egemaps"]


def linear_figures(x, y, actors, test_actors, labels, per_speaker: bool = False) -> dict:
    """Test accuracy, UAR and per-class recall of a logistic regression on ``x`` standardised by
    the training clips' statistics (StandardScaler) or, ``per_speaker``, by each speaker's."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    test = np.isin(actors, test_actors)
    if per_speaker:
        x = by_speaker(x, actors, ~test)
        model = LogisticRegression(max_iter=3000, C=1.0)
    else:
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=1.0))
    model.fit(x[~test], y[~test])
    predicted = model.predict(x[test])
    recall = recall_per_class(y[test], predicted, len(labels))
    return {
        "test_actors": [int(a) for a in test_actors],
        "accuracy": float(np.mean(predicted == y[test])),
        "uar": float(np.nanmean(recall)),
        "train_accuracy": float(model.score(x[~test], y[~test])),
        "recall": {labels[k]: round(float(r), 3) for k, r in enumerate(recall)},
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


def linear_baselines(table, folds: list[tuple[int, ...]]) -> dict[str, list[dict]]:
    """Per-fold logistic regressions on the time-averaged log-mel and on whatever groups exist."""
    y, actors = table.emotion - 1, table.actor
    labels = manifest_emotions(table.manifest)
    inputs = {"logmel_mean_std": (time_averaged(table.groups["logmel"]), False)}
    if "prosody" in table.groups:
        stats = prosody_statistics(table.groups["prosody"])
        inputs["prosody_stats"] = (stats, False)
        both = np.concatenate([inputs["logmel_mean_std"][0], stats], 1)
        inputs["logmel_mean_std+prosody_stats"] = (both, False)
    if "egemaps" in table.groups:
        inputs["egemaps"] = (table.groups["egemaps"], False)
        inputs["egemaps_speaker_norm"] = (table.groups["egemaps"], True)
    return {
        name: [
            linear_figures(x, y, actors, group, labels, per_speaker)
            | {"test_speakers": speaker_names(group, table.manifest)}
            for group in folds
        ]
        for name, (x, per_speaker) in inputs.items()
    }


def synthesised(audio: str, corpus: Corpus) -> bool:
    """Whether every file ``write_corpus`` would write for ``corpus`` is under ``audio``."""
    from knd.data.synth_layouts import plan

    files = plan(corpus.layout, corpus.actors, 0)
    return all(storage.exists(storage.join(audio, f.path)) for f in files)


def ensure_corpus(work: str, corpus: Corpus, workers: int, groups: str) -> tuple[str, str, dict]:
    """Synthesise and prepare ``corpus`` under ``work`` (reused when present)."""
    from knd.stages import prepare, synth

    audio = storage.join(work, f"synth-{corpus.key}")
    features = storage.join(work, f"features-{corpus.key}")
    seconds: dict = {}
    if not synthesised(audio, corpus):
        started = time.perf_counter()
        synth.write_corpus(
            audio, corpus.actors, seed=0, workers=workers, style=corpus.style, layout=corpus.layout
        )
        seconds["synth"] = time.perf_counter() - started
    started = time.perf_counter()
    overrides = [f"input={audio}", f"output={features}", f"features.groups=[{groups}]"]
    if corpus.layout != "ravdess":  # RAVDESS's prepare stays the command it was
        overrides.append(f"corpus={corpus.layout}")
    prepare.run(load_config("prepare", overrides))
    seconds["prepare"] = time.perf_counter() - started
    return audio, features, seconds


def run_name(features: str, recipe: str, fold: int, seed: int) -> str:
    """``features-<corpus>-<recipe>-f<fold>-s<seed>``: what finished runs are found by."""
    return f"{Path(features).name}-{recipe}-f{fold}-s{seed}"


def speaker_list(numbers, manifest: dict) -> str:
    """``["03","08"]``: speakers by the corpus's ids, quoted so ``03`` stays ``03``."""
    return "[" + ",".join(f'"{name}"' for name in speaker_names(numbers, manifest)) + "]"


def train_overrides(features, manifest, folds, recipe: str, fold: int, seed: int, args) -> list:
    """``knd train`` overrides of ``recipe`` holding out fold ``fold`` (1-based) of ``folds``."""
    overrides = [
        f"data={features}",
        f"recipe={recipe}",
        f"split.test_speakers={speaker_list(folds[fold - 1], manifest)}",
        f"train.seed={seed}",
        f"run_dir={args.work}/runs",
        f"name={run_name(features, recipe, fold, seed)}",
        "wandb.enabled=false",
    ]
    val = load_config("train", overrides[:2]).split.val_speakers
    if val is None or len(val):  # a recipe that selects its epoch: on the next fold
        # With fewer than three folds, a validation fold would leave no speaker to train on.
        chosen = folds[fold % len(folds)] if len(folds) >= 3 else ()
        overrides.append(f"split.val_speakers={speaker_list(chosen, manifest)}")
    if args.epochs:
        overrides.append(f"optim.epochs={args.epochs}")
    if args.num_cpus:
        overrides.append(f"ray.num_cpus={args.num_cpus}")
    return overrides


def cnn_run(features, manifest, folds, recipe: str, fold: int, seed: int, args) -> dict | None:
    """One ``knd train`` run of ``recipe`` holding out fold ``fold`` (1-based) of ``folds``.

    None when ``--finished-only`` and the run has not finished under ``--work``.
    """
    from knd.stages import train

    overrides = train_overrides(features, manifest, folds, recipe, fold, seed, args)
    run_path = Path(args.work) / "runs" / run_name(features, recipe, fold, seed)
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
        "test_actors": [int(a) for a in folds[fold - 1]],
        "test_speakers": speaker_names(folds[fold - 1], manifest),
        "accuracy": float(test_m["accuracy"]),
        "uar": float(test_m["uar"]),
        "model_selection": result.metrics.get("model_selection"),
        "epoch": result.best_epoch,
        "epochs": len(result.history),
        "median_train_epoch_s": float(np.median(epoch_s)) if epoch_s else None,
        "train_seconds": float(np.sum(epoch_s)),  # the epochs' training time, start-up excluded
        "seconds": seconds,
        "command": "knd train " + shlex.join(overrides),
    }


def figures(s: dict, signed: bool = False) -> str:
    """``acc 0.812 +- 0.034, UAR 0.800 +- 0.041`` of a :func:`summary` (``signed``: a change)."""
    acc, uar = s["accuracy"], s["uar"]
    if acc["mean"] is None:
        return "no runs"
    sign = "+" if signed else ""
    return (
        f"acc {acc['mean']:{sign}.3f} +- {acc['std']:.3f}, "
        f"UAR {uar['mean']:{sign}.3f} +- {uar['std']:.3f}"
    )


def prepared_corpus(corpus: Corpus, args, workers: int) -> dict | None:
    """The corpus's entry (paths, folds, linear baselines) and its features in memory; None when
    ``--finished-only`` finds it unprepared."""
    from knd.data.shards import load_features, read_manifest

    if args.finished_only:  # report only: synthesise and prepare nothing either
        audio = storage.join(args.work, f"synth-{corpus.key}")
        features, seconds = storage.join(args.work, f"features-{corpus.key}"), {}
        if read_manifest(features) is None:
            print(f"[{corpus.key}] not prepared under {args.work}: skipped")
            return None
    else:
        audio, features, seconds = ensure_corpus(args.work, corpus, workers, args.groups)
    table = load_features(features, groups=[g for g in args.groups.split(",") if g])
    folds = corpus_folds(table.manifest)
    baselines = linear_baselines(table, folds)
    linear = baselines.pop("logmel_mean_std")
    entry = {
        "corpus": audio,
        "layout": corpus.layout,
        "style": corpus.style,
        "features": features,
        "seconds": seconds,
        "folds": [
            {"fold": k, "test_actors": list(g), "test_speakers": speaker_names(g, table.manifest)}
            for k, g in enumerate(folds, 1)
        ],
        "linear": {"folds": linear, **summary(linear)},
        "linear_other": {k: {"folds": v, **summary(v)} for k, v in baselines.items()},
        "cnn": {},
    }
    for name, lin in [("logmel_mean_std", entry["linear"]), *entry["linear_other"].items()]:
        print(f"[{corpus.key}] linear on {name} over {len(folds)} folds: {figures(lin)}")
    return {"entry": entry, "manifest": table.manifest, "folds": folds}


def carry_over(entry: dict, key: str, earlier: dict, recipes: list[str]) -> None:
    """The runs of every recipe ``--out`` already holds for the corpus and this invocation does
    not run: a protocol run across sessions keeps what the earlier ones measured."""
    for recipe, old in earlier.get("corpora", {}).get(key, {}).get("cnn", {}).items():
        if recipe not in recipes and old.get("runs"):
            runs = [dict(r, carried_over=True) for r in old["runs"]]
            entry["cnn"][recipe] = {"runs": runs, **summary(runs)}


def earlier_run(
    earlier: dict, key: str, recipe: str, fold: int, seed: int, actors: list[int], speakers
) -> dict | None:
    """The run ``--out`` already holds of ``recipe`` on fold ``fold`` (same test speakers) with
    ``seed`` (None if none): read back instead of trained again, on whichever machine it ran.
    Runs recorded before speakers were named match by their actor numbers."""
    old = earlier.get("corpora", {}).get(key, {}).get("cnn", {}).get(recipe, {})
    for run in old.get("runs", []):
        same = run.get("test_speakers", speakers) == speakers and run["test_actors"] == actors
        if (run["fold"], run["seed"]) == (fold, seed) and same:
            return dict(run, carried_over=True)
    return None


def run_recipe(corpus: Corpus, prepared: dict, recipe: str, args, save, earlier: dict) -> None:
    """Every selected (fold, seed) run of ``recipe`` on the corpus, saved after each (a run
    ``earlier`` holds, ``--out``'s figures when the bench started, is read back)."""
    entry, manifest, folds = prepared["entry"], prepared["manifest"], prepared["folds"]
    chosen = [f for f in args.folds or range(1, len(folds) + 1) if f <= len(folds)]
    runs: list[dict] = []
    for fold in chosen:
        for seed in args.seeds:
            actors = [int(a) for a in folds[fold - 1]]
            speakers = speaker_names(folds[fold - 1], manifest)
            run = earlier_run(earlier, corpus.key, recipe, fold, seed, actors, speakers)
            if run is None:
                run = cnn_run(entry["features"], manifest, folds, recipe, fold, seed, args)
            if run is None:
                continue
            runs.append(run)
            entry["cnn"][recipe] = {"runs": runs, **summary(runs)}
            save()
            fresh = run.get("seconds") and not run.get("carried_over")
            took = f"{run['seconds'] / 60:.1f} min" if fresh else "read back"
            print(
                f"[{corpus.key}] {recipe} fold {fold} seed {seed}: acc {run['accuracy']:.3f} "
                f"UAR {run['uar']:.3f} ({took})"
            )
    if not runs:
        return
    s = entry["cnn"][recipe]
    # Against the linear model on the same folds, so a reduced run compares like with like.
    linear_uar = np.mean([entry["linear"]["folds"][r["fold"] - 1]["uar"] for r in runs])
    s["uar_over_linear_uar_same_folds"] = s["uar"]["mean"] / float(linear_uar)
    print(f"[{corpus.key}] {recipe} over {s['n']} runs: {figures(s)}")
    save()


def corpus_summary(key: str, entry: dict, baseline: str) -> None:
    """Each recipe's figures and paired difference to ``baseline`` (``paired``, ``summary``)."""
    entry["paired"] = {}
    base = entry["cnn"].get(baseline)
    for recipe in [r for r in entry["cnn"] if r != baseline and base]:
        pair = (entry["cnn"][recipe]["runs"], base["runs"])
        difference = {"difference": f"{recipe} - {baseline}"}
        entry["paired"][recipe] = paired_difference(*pair) | difference

    def figures_of(s: dict | None) -> dict | None:
        return {k: s[k] for k in ("n", "accuracy", "uar")} if s else None

    linear = [("logmel_mean_std", entry["linear"]), *entry["linear_other"].items()]
    entry["summary"] = {
        "baseline": baseline,
        "recipes": {
            recipe: figures_of(s) | {"paired_vs_baseline": figures_of(entry["paired"].get(recipe))}
            for recipe, s in entry["cnn"].items()
        },
        "linear": {name: figures_of(s) for name, s in linear},
    }
    print(f"[{key}] summary (mean +- std over folds x seeds; paired: minus {baseline}):")
    for recipe, s in entry["summary"]["recipes"].items():
        d = s["paired_vs_baseline"]
        paired = f"; paired over {d['n']}: {figures(d, signed=True)}" if d else ""
        print(f"[{key}]   {recipe:<22} n={s['n']:<3} {figures(s)}{paired}")
    for name, s in entry["summary"]["linear"].items():
        print(f"[{key}]   linear {name:<29} n={s['n']:<3} {figures(s)}")


def recipe_selection(recipe: str, corpora: dict, requested: list[str], baseline: str) -> dict:
    """One recipe's mean UAR per corpus, its worst corpus, and its paired loss to ``baseline``
    (``requested``: every corpus asked for, a skipped one counting as missing)."""
    ran = {k: e for k, e in corpora.items() if recipe in e["cnn"] and e["cnn"][recipe]["n"]}
    uar = {k: e["cnn"][recipe]["uar"]["mean"] for k, e in ran.items()}
    if recipe == baseline:
        paired = {k: 0.0 for k in ran}
    else:
        paired = {
            k: e["paired"][recipe]["uar"]["mean"]
            for k, e in ran.items()
            if recipe in e.get("paired", {}) and e["paired"][recipe]["n"]
        }
    worst = min(uar, key=uar.get) if uar else None
    losing = [k for k, d in paired.items() if d < -LOSS_MARGIN]
    return {
        "uar_by_corpus": uar,
        "worst_corpus": worst,
        "worst_uar": uar[worst] if worst else None,
        "paired_uar_vs_baseline": paired,
        "loses_more_than_margin": bool(losing),
        "loses_on": losing,
        "missing_corpora": [k for k in requested if k not in ran],
        "unpaired_corpora": [k for k in ran if k not in paired],
    }


def selection(corpora: dict, requested: list[str], baseline: str) -> dict:
    """Across corpora: each recipe's worst corpus and losses to ``baseline``, and the default
    that :data:`SELECTION_RULE` picks (None when no recipe qualifies)."""
    recipes = list(dict.fromkeys(r for e in corpora.values() for r in e["cnn"]))
    table = {r: recipe_selection(r, corpora, requested, baseline) for r in recipes}
    eligible = [
        r
        for r, s in table.items()
        if not (s["missing_corpora"] or s["unpaired_corpora"] or s["loses_more_than_margin"])
    ]
    ranked = sorted(eligible, key=lambda r: table[r]["worst_uar"], reverse=True)
    return {
        "rule": SELECTION_RULE,
        "baseline": baseline,
        "margin_uar": LOSS_MARGIN,
        "corpora": requested,
        "corpora_with_results": list(corpora),
        "recipes": table,
        "eligible_by_worst_uar": ranked,
        "default": ranked[0] if ranked else None,
    }


def print_selection(chosen: dict) -> None:
    print(f"selection across {', '.join(chosen['corpora'])} (baseline {chosen['baseline']}):")
    ranked = sorted(chosen["recipes"].items(), key=lambda kv: -(kv[1]["worst_uar"] or 0.0))
    for recipe, s in ranked:
        if s["worst_corpus"] is None:
            print(f"  {recipe:<22} no finished runs")
            continue
        loses = ", ".join(s["loses_on"]) or "none"
        gaps = [f"missing on {', '.join(s['missing_corpora'])}"] if s["missing_corpora"] else []
        gaps += [f"unpaired on {', '.join(s['unpaired_corpora'])}"] if s["unpaired_corpora"] else []
        print(
            f"  {recipe:<22} worst UAR {s['worst_uar']:.3f} ({s['worst_corpus']}); loses > "
            f"{chosen['margin_uar']} to the baseline on: {loses}" + "".join(f"; {g}" for g in gaps)
        )
    print(f"  default by the rule: {chosen['default']}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--corpora",
        default=None,
        help=f"corpora: classic, speech, LAYOUT or LAYOUT:STYLE (default {ALL_CORPORA}; "
        "with --styles alone: those RAVDESS styles)",
    )
    parser.add_argument("--styles", default=None, help="RAVDESS-layout corpus styles (old form)")
    parser.add_argument(
        "--recipes", default="cpu_small,plain_cnn", help="recipes to train ('none': skip)"
    )
    parser.add_argument(
        "--folds", default="all", help="folds (1-based) of each corpus for recipes ('all')"
    )
    parser.add_argument("--seeds", default="0,1", help="training seeds for recipes")
    parser.add_argument("--epochs", type=int, default=0, help="override optim.epochs (0: recipe)")
    parser.add_argument("--work", default="bench/.work/difficulty", help="corpora, features, runs")
    parser.add_argument("--workers", type=int, default=0, help="synth processes (0: per CPU)")
    parser.add_argument("--num-cpus", type=int, default=0, help="CPUs for local Ray (0: all)")
    parser.add_argument(
        "--finished-only",
        action="store_true",
        help="report the runs already finished under --work; train (or prepare) nothing",
    )
    parser.add_argument(
        "--groups", default="logmel,prosody,egemaps", help="feature groups knd prepare computes"
    )
    parser.add_argument(
        "--baseline",
        default="plain_cnn",
        help="recipe every other recipe is compared with, run by run (same fold and seed)",
    )
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    names = [c for c in (args.corpora or args.styles or ALL_CORPORA).split(",") if c]
    if args.corpora and args.styles:
        names = [s for s in args.styles.split(",") if s] + names
    args.corpora = list({c.key: c for c in map(parse_corpus, names)}.values())
    args.recipes = [r for r in args.recipes.split(",") if r and r != "none"]
    args.folds = None if args.folds == "all" else [int(f) for f in args.folds.split(",") if f]
    args.seeds = [int(s) for s in args.seeds.split(",") if s]
    args.work = str(Path(args.work).resolve())
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    earlier = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    workers = args.workers or os.cpu_count() or 1
    result: dict = {
        "command": "python bench/synth_difficulty.py " + shlex.join(argv or sys.argv[1:]),
        "folds": "each corpus's default speaker folds (knd.data.speakers.corpus_folds: EmoBox's "
        "actor groups for RAVDESS, else up to 5 speaker-disjoint folds); fold k tests on group k",
        "linear_features": "mean+std over time of each log-mel band (prepared features)",
        "hidden_corpus_reference": {
            "linear": {"accuracy": 0.50, "uar": 0.52},
            "cpu_small": {"accuracy": 0.70, "uar": 0.66},
            "plain_cnn_w32_no_val": {"accuracy": 0.80, "uar": 0.77},
        },
        # Corpora this invocation does not run keep their earlier figures.
        "corpora": dict(earlier.get("corpora", {})),
    }

    def save() -> None:
        storage.write_text(args.out, json.dumps(result, indent=2) + "\n")  # saved after every run

    for corpus in args.corpora:
        prepared = prepared_corpus(corpus, args, workers)
        if prepared is None:
            continue
        entry = result["corpora"][corpus.key] = prepared["entry"]
        carry_over(entry, corpus.key, earlier, args.recipes)
        save()
        for recipe in args.recipes:
            run_recipe(corpus, prepared, recipe, args, save, earlier)
        corpus_summary(corpus.key, entry, args.baseline)
        requested = list(dict.fromkeys([*result["corpora"], *(c.key for c in args.corpora)]))
        result["selection"] = selection(result["corpora"], requested, args.baseline)
        save()
    if result["corpora"]:
        print_selection(result["selection"])
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
