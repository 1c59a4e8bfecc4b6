"""The whole command line on a tiny corpus: synth -> prepare -> train -> evaluate -> score.

Each step is the installed ``knd`` command in its own process with its own local Ray, as a user
runs it; the test checks exit codes and the files each step promises, not the accuracy (the
integration tests measure learning), so it keeps every 3rd clip of the synthesised corpus.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

KND = str(Path(sys.executable).with_name("knd"))
pytestmark = pytest.mark.ray


def knd(*args: str) -> subprocess.CompletedProcess:
    # RAY_ADDRESS from an outer cluster must not redirect the commands: each starts a local Ray.
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["WANDB_MODE"] = "disabled"
    done = subprocess.run([KND, *args], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, f"knd {args[0]} failed:\n{done.stderr[-3000:]}"
    return done


def test_every_command_in_sequence(tmp_path):
    corpus, features, runs = tmp_path / "corpus", tmp_path / "features", tmp_path / "runs"
    # Three actors: one to test, one to validate, one to train on (mechanics, not accuracy).
    knd("synth", f"out={corpus}", "actors=3", "workers=2")
    for actor in ("Actor_01", "Actor_02", "Actor_03"):
        clips = sorted((corpus / actor).glob("*.wav"))
        assert len(clips) == 60  # RAVDESS's 60 clips per actor
        for path in set(clips) - set(clips[::3]):
            path.unlink()
    knd("prepare", f"input={corpus}", f"output={features}", "ray.num_cpus=2")
    manifest = json.loads((features / "manifest.json").read_text())
    assert manifest["num_rows"] == 3 * 20
    assert manifest["rows_per_actor"] == {"1": 20, "2": 20, "3": 20}

    knd(
        "train", f"data={features}", f"run_dir={runs}", "name=e2e", "ray.num_cpus=2",
        "split.test_speakers=[1]", "split.val_speakers=[2]", "optim.epochs=1",
        "model.width=8", "train.num_workers=1",  # DDP over 2 ranks: test_train's shared run
    )  # fmt: skip
    run = runs / "e2e"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_actors"] == [1] and metrics["test"]["n"] == 20
    assert (run / "confusion.png").stat().st_size > 0
    assert (run / "checkpoint" / "model.pt").exists()

    evaluation = tmp_path / "evaluation"
    knd("evaluate", f"checkpoint={run / 'checkpoint'}", f"data={features}", f"out={evaluation}")
    assert json.loads((evaluation / "metrics.json").read_text())["test"]["n"] == 20
    assert (evaluation / "per_actor.csv").exists()

    scores = tmp_path / "scores.csv"
    knd(
        "score", f"checkpoint={run / 'checkpoint'}", f"input={corpus / 'Actor_03'}",
        f"output={scores}", "ray.num_cpus=2", "num_actors=1",
    )  # fmt: skip
    with scores.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 20
    assert all(row["error"] == "" for row in rows)
    assert {row["label"] for row in rows} <= set(metrics["labels"])
