"""Node loss and driver loss, tested: a worker node hard-killed half way through prepare, score,
train and tune, and replaced; then a ``knd prepare`` / ``knd score`` driver SIGKILLed half way and
rerun. The same runs are the pipeline's test on worker nodes with no shared disk.

One run of ``bench/chaos.py`` at its smallest (one synthetic actor, 60 files, for prepare and
score; three actors for train and tune) in a process of its own (a
``ray.cluster_utils.Cluster`` cannot share a process with the session's ``ray.init``), with every
path on moto's S3 server, so no node relies on a shared disk. Prepare computes the log-mel alone:
what a node loss does to a task does not depend on which groups the task computes. Run these
alone with ``pytest -m chaos`` or ``make test-chaos`` (about 5 minutes on 2 cores).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.chaos]

REPO = Path(__file__).resolve().parents[2]


def run_chaos(tmp_path: Path, prefix: str, *args: str) -> dict:
    """The JSON line of ``bench/chaos.py`` run in a session of its own."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env = {k: v for k, v in env.items() if k != "RAY_ADDRESS"}
    command = [sys.executable, str(REPO / "bench" / "chaos.py"), "--prefix", prefix, "--out", "-"]
    child = subprocess.Popen(
        [*command, *args],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a timeout kills the cluster's processes with it
    )
    try:
        out, err = child.communicate(timeout=540)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        out, err = child.communicate()
        pytest.fail(f"the chaos run did not finish in 540 s:\n{err[-3000:]}")
    assert child.returncode == 0, err[-4000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def chaos_run(s3_server, tmp_path_factory):
    """``bench/chaos.py``: every stage, prepare and score on 60 files, on moto S3."""
    return run_chaos(
        tmp_path_factory.mktemp("chaos"), f"{s3_server.url}/chaos", "--actors", "1",
        "--groups", "logmel", "--stages", "prepare,score,train,tune",
    )  # fmt: skip


def test_the_pipeline_runs_on_worker_nodes_with_everything_on_s3(chaos_run, s3_server):
    """Prepare on two 1-CPU nodes, training across both (a node lost on the way, below), and a
    score of the trained checkpoint, each reading and writing only the bucket."""
    prepared = chaos_run["prepare"]["uninterrupted"]
    assert prepared["rows"] == 60 and prepared["rejected"] == 0
    assert prepared["shards_listed_missing"] == 0
    train = chaos_run["train"]
    assert train["checkpoint"].startswith(f"{s3_server.url}/chaos/runs/node-lost/")
    scored = train["scored"]
    assert scored["rows"] == scored["files"] == 60 and scored["paths_equal_input"], scored
    assert scored["errors"] == 0 and scored["failed"] == 0


def test_losing_a_worker_node_loses_and_duplicates_no_row(chaos_run):
    result = chaos_run
    prepare, score = result["prepare"]["node_loss"], result["score"]["node_loss"]
    for stage in (prepare, score):
        assert stage["killed"], stage  # the node died while the stage ran, not after
        assert stage["exit_code"] == 0
        assert stage["rows_lost"] == 0 and stage["rows_duplicated"] == 0, stage
        assert stage["rows_equal_uninterrupted"], stage
    # No shard of the dead node's in-flight tasks is listed, half-written or left behind.
    assert prepare["unlisted_files_left"] == 0
    assert score["errors"] == 0 and result["score"]["files"] == result["prepare"]["files"] == 60


def test_a_killed_driver_on_a_cluster_reruns_and_redoes_only_unfinished_work(chaos_run):
    """The driver-kill half of the same run: a ``knd`` process SIGKILLed half way, rerun."""
    prepare, score = chaos_run["driver_kill"]["prepare"], chaos_run["driver_kill"]["score"]
    for stage in (prepare, score):
        assert stage["rows_lost"] == 0 and stage["rows_duplicated"] == 0, stage
        assert stage["rows_equal_uninterrupted"], stage
        assert stage["files_reused"] > 0, stage  # the rerun did not start from zero
    assert prepare["unlisted_files_left"] == 0
    assert prepare["files_reused"] + prepare["files_decoded_by_rerun"] == 60
    assert score["files_reused"] + score["files_scored_by_rerun"] == 60


def test_training_goes_on_from_its_checkpoint_when_a_worker_node_is_lost(chaos_run):
    result = chaos_run
    train = result["train"]
    assert train["killed"], train
    assert train["metrics_written"] and train["history_epochs"] == [1, 2, 3]
    assert train["metrics_epochs"] == [1, 2, 3]
    ends = train["epochs_ended"]
    # The group that ran when the node died, then the one restarted from the checkpoint: epoch
    # numbering goes on after the checkpoint instead of starting again at 1.
    first_pids = {pid for epoch, _, pid in ends if epoch == 1}
    restarted = [epoch for epoch, _, pid in ends if pid not in first_pids]
    assert restarted and min(restarted) >= 2, ends


def test_a_search_whose_worker_node_is_lost_finishes_and_analyse_reads_it(chaos_run):
    tune = chaos_run["tune"]
    assert tune["killed"] and tune["exit_code"] == 0, tune
    trials = tune["trials"]
    assert len(trials) == 2 and all(t["status"] == "TERMINATED" for t in trials), trials
    # The trial on the lost node failed once and went on from its checkpoint: no epoch twice.
    assert any(t["failures"] >= 1 for t in trials), trials
    assert all(t["epochs"] == [1, 2, 3] for t in trials), trials
    assert tune["analysed_trials"] == 2
