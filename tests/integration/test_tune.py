"""``knd tune`` and ``knd analyse`` on the tiny corpus (8 actors), with a real local Ray.

The main experiment is made the hard way: a second driver process (on the session's Ray) runs a
2-configuration search (test actors 1 and 2 set aside, 2 actor folds over actors 3..8, 2 epochs,
one trial at a time), is killed with SIGKILL once the first trial has finished and the second has
checkpointed its first epoch, and the same ``knd tune`` command finishes it in this process. Every
other check reads that experiment, except ASHA's, which needs a search of its own.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from knd.config.loading import load_config

pytestmark = pytest.mark.ray

TEST_ACTORS = [1, 2]
TINY = {"model.width": 8, "optim.batch_size": 16, "optim.warmup_epochs": 0}


def write_space(folder: Path, **entries) -> str:
    path = folder / "space.yaml"
    path.write_text(yaml.safe_dump(TINY | entries))
    return str(path)


def tune_args(features: str, space: str, storage: Path | str, name: str, *extra: str) -> list[str]:
    return [
        f"data={features}",
        f"space={space}",
        "test_speakers=[1,2]",
        "folds=2",
        "num_samples=1",
        f"storage_path={storage}",
        f"name={name}",
        "max_concurrent=1",
        *extra,
    ]


def results_of(trial_dir: str) -> list[dict]:
    path = Path(trial_dir, "result.json")
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def snapshot(experiment: Path) -> dict[str, dict]:
    """Tune's last saved experiment state: ``{trial_id: {"status", "epoch"}}``."""
    files = sorted(glob.glob(str(experiment / "experiment_state-*.json")))
    if not files:
        return {}
    try:
        state = json.loads(Path(files[-1]).read_text())
    except (json.JSONDecodeError, OSError):
        return {}  # caught mid-write
    out = {}
    for trial_json, runtime in state["trial_data"]:
        trial, meta = json.loads(trial_json), json.loads(runtime)
        epoch = (meta.get("last_result") or {}).get("epoch", 0)
        out[trial["trial_id"]] = {"status": trial["status"], "epoch": epoch}
    return out


@pytest.fixture(scope="module")
def resumed(tiny_features, ray_session, tmp_path_factory):
    """A search killed after its first finished trial, then the same command again (as a job
    retry runs it): it continues the search, as ``resume=PATH`` does (the same code path)."""
    from knd.stages.tune import run

    root = tmp_path_factory.mktemp("tune")
    space = write_space(root, **{"optim.lr": {"grid": [3.0e-3, 1.0e-3]}})
    experiment = root / "runs" / "cv"
    args = tune_args(tiny_features, space, root / "runs", "cv", "max_epochs=2")
    address = ray_session.get_runtime_context().gcs_address
    log = open(root / "driver.log", "w")  # noqa: SIM115 - closed below, after the kill
    # A second driver on the session's Ray: killing it ends its job, and Ray then ends the trial
    # actors it owned, as when a real driver dies; the cluster itself lives on for the resume.
    driver = subprocess.Popen(
        [sys.executable, "-m", "knd.cli", "tune", *args, f"ray.address={address}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 200
    state = {}
    try:
        while time.monotonic() < deadline and driver.poll() is None:
            state = snapshot(experiment)
            done = [t for t, s in state.items() if s["status"] == "TERMINATED"]
            started = [t for t, s in state.items() if t not in done and s["epoch"] >= 1]
            if done and started:
                break
            time.sleep(0.3)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        log.close()
    assert driver.returncode == -signal.SIGKILL, (root / "driver.log").read_text()[-3000:]
    assert len(done) == 1 and len(started) == 1, state
    before = {t: results_of(str(experiment / f"trial_{t}")) for t in state}

    result = run(load_config("tune", args))
    return SimpleNamespace(
        experiment=experiment,
        result=result,
        finished=done[0],
        interrupted=started[0],
        before=before,
        after={t: results_of(str(experiment / f"trial_{t}")) for t in state},
        meta=json.loads((experiment / "knd_tune.json").read_text()),
    )


def test_killed_search_resumes_without_rerunning_finished_work(resumed):
    assert resumed.result.exit_code == 0 and resumed.result.num_trials == 2
    finished, interrupted = resumed.finished, resumed.interrupted
    # The finished trial never ran again; the interrupted one went on from its epoch-1 checkpoint.
    assert resumed.after[finished] == resumed.before[finished]
    assert [r["epoch"] for r in resumed.after[finished]] == [1, 2]
    assert [r["epoch"] for r in resumed.before[interrupted]] == [1]
    assert [r["epoch"] for r in resumed.after[interrupted]] == [1, 2]


def test_no_test_actor_reaches_any_trial(resumed):
    meta = resumed.meta
    folded = sorted(a for fold in meta["folds"] for a in fold)
    assert folded == [3, 4, 5, 6, 7, 8] and len(meta["folds"]) == 2
    assert meta["test_actors"] == TEST_ACTORS
    reports = [r for rows in resumed.after.values() for r in rows]
    assert reports
    for report in reports:  # what each trainable actually received, reported by itself
        seen = {int(a) for a in report["actors"].split(",")}
        assert seen == set(folded) and not seen & set(TEST_ACTORS)


def test_fold_scores_aggregate(resumed):
    for rows in resumed.after.values():
        for report in rows:
            folds = [report["uar_fold_1"], report["uar_fold_2"]]
            assert report["uar"] == pytest.approx(statistics.fmean(folds))
            assert report["uar_std"] == pytest.approx(statistics.pstdev(folds))
            assert 0.0 <= min(folds) <= max(folds) <= 1.0


def test_best_configuration_is_retrained_and_tested_once(resumed):
    best = json.loads((resumed.experiment / "best_result.json").read_text())
    reports = {t: rows[-1] for t, rows in resumed.after.items()}
    top = max(reports, key=lambda t: reports[t]["uar"])
    assert best["trial_id"] == top
    assert best["cv"]["uar"] == pytest.approx(reports[top]["uar"])
    assert best["test_actors"] == TEST_ACTORS
    test = best["test"]
    assert test["n"] == 120  # actors 1 and 2, 60 clips each
    assert set(test["per_actor"]) == {"1", "2"}
    for key in ("uar", "accuracy", "macro_f1"):
        assert 0.0 <= test[key] <= 1.0
    checkpoint = json.loads((resumed.experiment / "best/checkpoint/meta.json").read_text())
    assert checkpoint["split"]["test"] == TEST_ACTORS
    assert checkpoint["split"]["train"] == [3, 4, 5, 6, 7, 8]


@pytest.fixture(scope="module")
def analysis(resumed, tmp_path_factory):
    from knd.stages.analyse import run

    out = tmp_path_factory.mktemp("analysis")
    return run(load_config("analyse", [f"experiment={resumed.experiment}", f"out={out}"]))


def test_analyse_writes_every_file(resumed, analysis):
    import csv

    names = {Path(f).name for f in analysis.files}
    assert names == {
        "trials.csv",
        "summary.md",
        "score_vs_params.png",
        "learning_curves.png",
        "fold_spread.png",
        "best_config.yaml",
        "report.md",
        "report.html",
    }
    out = Path(analysis.out)
    for name in names:
        assert (out / name).stat().st_size > 0, name
    for name in ("score_vs_params.png", "learning_curves.png", "fold_spread.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == 2
    for row in rows:
        last = resumed.after[row["trial_id"]][-1]
        assert float(row["uar"]) == pytest.approx(last["uar"])
        assert float(row["uar_std"]) == pytest.approx(last["uar_std"])
        assert float(row["uar_fold_1"]) == pytest.approx(last["uar_fold_1"])
        assert (row["status"], row["epochs"], row["stopped_early"]) == ("TERMINATED", "2", "False")
        assert float(row["optim.lr"]) in (3.0e-3, 1.0e-3)
    assert float(rows[0]["uar"]) >= float(rows[1]["uar"])
    summary = (out / "summary.md").read_text()
    assert rows[0]["trial_id"] in summary and "stopped early by ASHA: 0" in summary
    # One writer of best_config.yaml: analyse's copy is the one tune wrote beside the experiment.
    assert (out / "best_config.yaml").read_text() == (
        resumed.experiment / "best_config.yaml"
    ).read_text()


def test_best_config_is_the_train_config_of_the_best_trial(resumed, analysis, tiny_features):
    """``knd train config=best_config.yaml`` trains what the best trial trained: every searched
    value, the tune's fixed values and its test actors. (Training itself from such a config is
    every other train test; tune's own retrain of that configuration is checked above.)"""
    from functools import reduce

    best = str(Path(analysis.out) / "best_config.yaml")
    cfg = load_config("train", [f"data={tiny_features}", f"config={best}"])
    params = json.loads((resumed.experiment / "best_result.json").read_text())["params"]
    assert "optim.lr" in params
    for key, value in (TINY | params).items():  # a dotted key names a field of the train config
        assert reduce(getattr, key.split("."), cfg) == pytest.approx(value), key
    assert list(cfg.split.test_speakers) == [str(a) for a in TEST_ACTORS]


def test_asha_stops_a_hopeless_trial_on_s3(tiny_features, ray_session, s3_server, tmp_path):
    from knd.learning.experiment import load_experiment, trial_rows
    from knd.stages.tune import run

    # The good configuration runs first (one trial at a time), so it sets every rung's cutoff.
    # The experiment lives on (moto's) S3: trials checkpoint there and the analysis reads it back.
    space = write_space(tmp_path, **{"optim.lr": {"grid": [1.0e-2, 1.0e-8]}})
    storage = f"{s3_server.url}/tune"
    args = tune_args(tiny_features, space, storage, "asha", "max_epochs=2")
    args += ["grace_epochs=1", "reduction_factor=2", "retrain_best=false"]
    result = run(load_config("tune", args))
    assert result.exit_code == 0 and result.test is None
    assert result.experiment == f"{storage}/asha"
    rows = {
        r["params"]["optim.lr"]: r for r in trial_rows(load_experiment(result.experiment), None)
    }
    good, bad = rows[1.0e-2], rows[1.0e-8]
    assert (good["epochs"], good["stopped_early"]) == (2, False)
    assert bad["epochs"] == 1 and bad["stopped_early"], (good["uar"], bad["uar"])
    assert result.best["trial_id"] == good["trial_id"]
