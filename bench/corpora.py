"""Any labelled corpus: what a label table costs ``knd prepare``, and a cross-corpus table.

    .venv/bin/python bench/corpora.py                   # 14,400 labels, 1,440-file prepare, cross
    .venv/bin/python bench/corpora.py --parts default   # the default recipe against a linear model

Three figures, each against a baseline measured in the same run:

- **labelling**: the driver's labelling of ``--rows`` files (:func:`knd.data.labelling.label_files`)
  from RAVDESS names and from a CSV label table of the same clips (no audio read);
- **prepare**: the whole prepare (hash pass, featurise, commit; one process, ``[logmel]``) of the
  synthetic 1,440-file corpus labelled by its names and by a label table of the same files, in
  files per second; the table path must not be slower per file;
- **cross**: ``cpu_small`` trained on the synthetic corpus in EmoDB's layout, scored within
  (its own test speakers) and on the RAVDESS-layout corpus in the speech style (every speaker,
  the labels both have), beside the same within figure on RAVDESS;
- **default** (``--parts default --layouts emodb,crema_d,table``): the default recipe on the default
  features and split of each layout's synthetic corpus, beside a logistic regression on the
  eGeMAPS functionals on the same speakers.

Figures go to ``bench/results/corpora.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import Machine, write_results

from knd.config.loading import load_config
from knd.data.labelling import label_files
from knd.data.ravdess import actor_clips, parse_name
from knd.runtime.tasks import serial_map
from knd.stages.prepare import list_inputs, prepare_files

RESULTS = Path(__file__).resolve().parent / "results" / "corpora.json"
FEATURES = ["features.groups=[logmel]"]


def write_table(path: Path, paths: list[str]) -> None:
    """A label table of RAVDESS-named files: the labels their names say."""
    from knd.data.ravdess import EMOTIONS

    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "speaker", "gender"])
        for p in paths:
            clip = parse_name(p)
            writer.writerow([p, EMOTIONS[clip.emotion - 1], clip.actor, clip.gender])


def labelling(rows: int, scratch: Path) -> dict:
    """Seconds to label ``rows`` RAVDESS names and the same clips through a table."""
    names = [
        f"Actor_{clip.actor:02d}/{clip.file_name()}"
        for a in range(1, 25)
        for clip in actor_clips(a)
    ]
    paths = [f"copy{i // len(names):03d}/{names[i % len(names)]}" for i in range(rows)]
    table = scratch / "labels.csv"
    write_table(table, paths)
    out = {}
    for name, corpus in (("names", "ravdess"), ("table", str(table))):
        started = time.perf_counter()
        labelled = label_files(corpus, str(scratch), paths, paths)
        seconds = time.perf_counter() - started
        assert len(labelled.paths) == rows and not labelled.rejected, name
        out[name] = {"seconds": round(seconds, 3), "us_per_file": round(seconds / rows * 1e6, 1)}
    out["table_vs_names_time"] = round(out["table"]["seconds"] / out["names"]["seconds"], 2)
    return out


def prepare_throughput(corpus: str, scratch: Path) -> dict:
    """Files per second of the whole prepare by names and by a label table (one process)."""
    uris, paths, listing = list_inputs(corpus)
    table = scratch / "prepare-labels.csv"
    write_table(table, paths)
    out = {}
    for name, key in (("names", "ravdess"), ("table", str(table))):
        cfg = load_config(
            "prepare",
            [f"input={corpus}", f"output={scratch / name}", f"corpus={key}", *FEATURES],
        )
        started = time.perf_counter()
        kept, rejected, _ = prepare_files(cfg, uris, paths, listing, serial_map, 1.0)
        seconds = time.perf_counter() - started
        assert len(kept) == len(paths) and not rejected, (name, rejected[:3])
        out[name] = {"seconds": round(seconds, 1), "files_per_s": round(len(kept) / seconds, 1)}
        print(f"prepare by {name}: {seconds:.1f} s, {out[name]['files_per_s']} files/s", flush=True)
    out["table_vs_names_throughput"] = round(
        out["table"]["files_per_s"] / out["names"]["files_per_s"], 2
    )
    return out


def cross_corpus(scratch: Path) -> dict:
    """Within- and cross-corpus UAR of ``cpu_small`` on two synthetic corpora."""
    from knd.stages.evaluate import run as evaluate
    from knd.stages.prepare import run as prepare
    from knd.stages.synth import write_corpus
    from knd.stages.train import run as train

    corpora = {"emodb": ("emodb", "classic"), "ravdess": ("ravdess", "speech")}
    features = {}
    for name, (layout, style) in corpora.items():
        audio = scratch / f"{name}-audio"
        write_corpus(str(audio), None, seed=1, progress=False, style=style, layout=layout)
        args = [f"input={audio}", f"output={scratch / name}", f"corpus={layout}", *FEATURES]
        features[name] = prepare(load_config("prepare", args)).output
    out = {}
    for name, data in features.items():
        args = [f"data={data}", "recipe=cpu_small", "optim.epochs=15", "wandb.enabled=false"]
        args += [f"run_dir={scratch / 'runs'}", f"name={name}"]
        trained = train(load_config("train", args))
        out[f"{name}_within_uar"] = round(trained.metrics["test"]["uar"], 3)
        other = next(n for n in features if n != name)
        report = evaluate(
            load_config(
                "evaluate",
                [
                    f"checkpoint={trained.checkpoint}",
                    f"data={features[other]}",
                    f"out={scratch / f'{name}-on-{other}'}",
                ],
            )  # fmt: skip
        ).metrics
        out[f"{name}_on_{other}_uar"] = round(report["test"]["uar"], 3)
        out[f"{name}_on_{other}_shared_labels"] = report["cross_corpus"]["shared_labels"]
        print(f"{name}: within {out[f'{name}_within_uar']}, on {other} "
              f"{out[f'{name}_on_{other}_uar']}", flush=True)  # fmt: skip
    return out


def linear_uar(data: str, train_actors: list[int], test_actors: list[int]) -> float:
    """UAR of a logistic regression on the eGeMAPS functionals, standardised with the training
    speakers' statistics, on the same split (the linear baseline of issue 30's table)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import recall_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from knd.data.shards import load_features

    table = load_features(data, groups=["egemaps"])
    x, y = table.groups["egemaps"].astype(np.float64), table.emotion
    train, test = (np.isin(table.actor, a) for a in (train_actors, test_actors))
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    model.fit(x[train], y[train])
    return float(recall_score(y[test], model.predict(x[test]), average="macro"))


def recipe_vs_linear(scratch: Path, layouts: list[str]) -> dict:
    """The default recipe (default features and split) against the linear eGeMAPS baseline on
    the same speakers, on the synthetic corpus in each layout."""
    from knd.stages.prepare import run as prepare
    from knd.stages.synth import write_corpus
    from knd.stages.train import run as train

    out = {}
    for layout in layouts:
        audio = scratch / f"default-{layout}"
        write_corpus(str(audio), None, seed=2, progress=False, layout=layout)
        corpus = str(audio / "labels.csv") if layout == "table" else layout
        args = [f"input={audio}", f"output={scratch / f'default-{layout}-features'}"]
        data = prepare(load_config("prepare", [*args, f"corpus={corpus}"])).output
        args = [f"data={data}", "wandb.enabled=false", f"run_dir={scratch / 'runs'}"]
        metrics = train(load_config("train", [*args, f"name=default-{layout}"])).metrics
        linear = linear_uar(data, metrics["train_actors"], metrics["test_actors"])
        out[layout] = {
            "recipe": metrics["recipe"],
            "test_speakers": metrics["test_speakers"],
            "recipe_uar": round(metrics["test"]["uar"], 3),
            "linear_egemaps_uar": round(linear, 3),
        }
        print(f"{layout}: {out[layout]}", flush=True)
    return out


PARTS = ("labelling", "prepare", "cross", "default")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=14_400)
    parser.add_argument("--corpus", help="a RAVDESS-layout folder (default: synthesise 24 actors)")
    parser.add_argument(
        "--parts", default="labelling,prepare,cross", help=f"which of {','.join(PARTS)} to run"
    )
    parser.add_argument(
        "--layouts", default="emodb,crema_d,table", help="the default part's layouts"
    )
    args = parser.parse_args(argv)
    parts = args.parts.split(",")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from prepare import corpus_dir

    scratch = Path(tempfile.mkdtemp(prefix="knd_bench_corpora_"))
    machine = Machine()
    # A partial run keeps the figures of the parts it did not run.
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if "labelling" in parts:
        results["labelling"] = labelling(args.rows, scratch)
        print(f"labelling {args.rows} files: {results['labelling']}", flush=True)
    if "prepare" in parts:
        results["prepare"] = prepare_throughput(corpus_dir(args.corpus, 24), scratch)
    if "cross" in parts:
        results["cross"] = cross_corpus(scratch)
    if "default" in parts:
        layouts = args.layouts.split(",")
        results["default_recipe_vs_linear"] = recipe_vs_linear(scratch, layouts)
    results[f"machine_{'_'.join(parts)}"] = machine.record()
    write_results(RESULTS, results)
    print(json.dumps({k: v for k, v in results.items() if not k.startswith("machine")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
