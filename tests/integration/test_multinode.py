"""The pipeline on two Ray nodes with no shared filesystem: every path is ``s3://`` (moto)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from knd import storage

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SCRIPT = Path(__file__).with_name("multinode_pipeline.py")
REPO = SCRIPT.parents[2]


def test_prepare_train_score_on_two_nodes_through_s3(tiny_corpus, s3_server, tmp_path):
    # 3 actors (test 1, validation 2, training 3), every 8th clip: 23 files, 7 or 8 per actor
    # (two prepare tasks, two training ranks and two scoring actors still have work on each node).
    prefix = f"{s3_server.url}/two-nodes"
    files = [
        p for p in storage.list_files(tiny_corpus) if any(f"/Actor_0{a}/" in p for a in (1, 2, 3))
    ][::8]
    assert all(sum(f"/Actor_0{a}/" in p for p in files) >= 7 for a in (1, 2, 3))
    uploaded = []
    for path in files:
        rel = Path(path).relative_to(Path(tiny_corpus).resolve()).as_posix()
        uploaded.append(f"{prefix}/audio/{rel}")
        storage.write_bytes(uploaded[-1], Path(path).read_bytes())

    # Its own session, so a timeout kills the cluster's processes with it.
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env = {k: v for k, v in env.items() if k != "RAY_ADDRESS"}
    child = subprocess.Popen(
        [sys.executable, str(SCRIPT), prefix],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = child.communicate(timeout=420)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        out, err = child.communicate()
        pytest.fail(f"the two-node pipeline did not finish in 420 s:\n{err[-3000:]}")
    assert child.returncode == 0, err[-4000:]
    result = json.loads(out.strip().splitlines()[-1])

    assert result["nodes"] == 2
    assert result["prepared_rows"] == len(files) and result["rejected"] == 0
    assert result["checkpoint"].startswith(f"{prefix}/runs/two-nodes/")
    assert result["test_n"] == sum("/Actor_01/" in p for p in files)
    assert result["scored"] == len(files) and result["failed"] == 0
    # Everything the stages wrote is in the bucket.
    written = storage.list_files(prefix)
    assert f"{prefix}/features/manifest.json" in written
    assert all(f"{prefix}/features/{s}" in written for s in result["shards"])
    assert any(p.startswith(f"{prefix}/runs/two-nodes/") for p in written)
    scores = pd.read_parquet(io.BytesIO(storage.read_bytes(f"{prefix}/scores.parquet")))
    assert len(scores) == len(files) and (scores["error"] == "").all()
    assert list(scores["path"]) == sorted(uploaded)
