"""Node loss and driver loss, tested: a worker node hard-killed half way through prepare and
score, and replaced; then a ``knd prepare`` / ``knd score`` driver SIGKILLed half way and rerun.

Runs ``bench/chaos.py`` at its smallest (one synthetic actor, 60 files) in a process of its own (a
``ray.cluster_utils.Cluster`` cannot share a process with the session's ``ray.init``), with every
path on moto's S3 server, so no node relies on a shared disk. Run these alone with
``pytest -m chaos``.
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


@pytest.fixture(scope="module")
def chaos_run(s3_server, tmp_path_factory):
    """The JSON line of ``bench/chaos.py --actors 1`` run on moto S3."""
    tmp_path = tmp_path_factory.mktemp("chaos")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env = {k: v for k, v in env.items() if k != "RAY_ADDRESS"}
    command = [sys.executable, str(REPO / "bench" / "chaos.py"), "--actors", "1"]
    command += ["--prefix", f"{s3_server.url}/chaos", "--out", "-"]
    child = subprocess.Popen(
        command,
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
