"""Node loss, tested: a worker node hard-killed half way through prepare and score, and replaced.

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


def test_losing_a_worker_node_loses_and_duplicates_no_row(s3_server, tmp_path):
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
        out, err = child.communicate(timeout=480)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        out, err = child.communicate()
        pytest.fail(f"the chaos run did not finish in 480 s:\n{err[-3000:]}")
    assert child.returncode == 0, err[-4000:]
    result = json.loads(out.strip().splitlines()[-1])

    prepare, score = result["prepare"], result["score"]
    for stage in (prepare, score):
        assert stage["killed"], stage  # the node died while the stage ran, not after
        assert stage["exit_code"] == 0
        assert stage["rows_lost"] == 0 and stage["rows_duplicated"] == 0, stage
        assert stage["rows_equal_uninterrupted"], stage
    # No shard of the dead node's in-flight tasks is listed, half-written or left behind.
    assert prepare["unlisted_files_left"] == 0
    assert score["errors"] == 0 and score["files"] == prepare["files"] == 60
