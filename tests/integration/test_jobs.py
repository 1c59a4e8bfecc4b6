"""``jobs/*.py`` submitted to a real cluster: a ``ray start --head`` on 127.0.0.1 of this test's own.

The head runs in its own session (``setsid``) with its own temp dir and free ports, so it neither
joins nor disturbs the in-process ``ray_session`` of other tests; this process only speaks HTTP
to its dashboard (the Job Submission API), and teardown stops that process group alone (never
``ray stop``, which would stop every Ray on the machine).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
ACTORS = (1, 2, 3, 4, 5, 6)
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports that were free a moment ago (held open together so they differ)."""
    sockets = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def stop_process_group(proc: subprocess.Popen, grace_s: float = 30.0) -> None:
    """SIGTERM the head's process group, wait for it to empty, then SIGKILL what is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader so the group can empty
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.5)


def wait_for_dashboard(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 120.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"ray start exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"the dashboard at {url} did not answer in {timeout_s:.0f} s")


@pytest.fixture(scope="module")
def cluster():
    """A Job Submission client of a fresh 2-CPU head; the head is stopped even if a test fails."""
    from ray.job_submission import JobSubmissionClient

    # A short temp dir: Ray's socket paths must stay under the 107-character Unix limit.
    temp_dir = Path(tempfile.mkdtemp(prefix="knd-ray-", dir="/tmp"))
    gcs, dashboard, client_server, agent_http, agent_grpc, metrics, runtime_env, nm, om = (
        free_ports(9)
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # A job's `python` is the first one on the head's PATH: make it this venv's.
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    command = [
        str(VENV_BIN / "ray"), "start", "--head", "--block", "--disable-usage-stats",
        "--node-ip-address=127.0.0.1", f"--port={gcs}", "--num-cpus=2", "--num-gpus=0",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
        f"--ray-client-server-port={client_server}", f"--dashboard-agent-listen-port={agent_http}",
        f"--dashboard-agent-grpc-port={agent_grpc}", f"--metrics-export-port={metrics}",
        f"--runtime-env-agent-port={runtime_env}", f"--node-manager-port={nm}",
        f"--object-manager-port={om}", f"--temp-dir={temp_dir}",
    ]  # fmt: skip
    log = temp_dir / "ray-start.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{dashboard}"
        wait_for_dashboard(url, proc, log)
        yield JobSubmissionClient(url)
    finally:
        stop_process_group(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)


def run_job(client, args: list[str], timeout_s: float = 150.0) -> tuple[str, str]:
    """Submit ``python <args>`` with the repo as working_dir; wait; return (status, logs)."""
    job_id = client.submit_job(
        entrypoint=shlex.join(["python", *args]),
        runtime_env={"working_dir": str(REPO), "env_vars": {"WANDB_MODE": "disabled"}},
    )
    deadline = time.monotonic() + timeout_s
    status = str(client.get_job_status(job_id))
    while status not in TERMINAL and time.monotonic() < deadline:
        time.sleep(1)
        status = str(client.get_job_status(job_id))
    logs = client.get_job_logs(job_id)
    if status not in TERMINAL:
        client.stop_job(job_id)
        pytest.fail(f"job {args[0]} still {status} after {timeout_s:.0f} s:\n{logs[-3000:]}")
    return status, logs


def test_a_misspelt_key_fails_the_job_with_the_key_in_its_logs(cluster, tmp_path):
    status, logs = run_job(cluster, ["jobs/train.py", f"data={tmp_path}", "optim.epoch=3"])
    assert status == "FAILED", logs
    assert "unknown key 'optim.epoch'" in logs, logs
    assert "Traceback" not in logs, "a bad argument should fail in one line, not a traceback"


def test_prepare_then_train_jobs_write_their_artefacts(cluster, tmp_path):
    from knd.synth import write_corpus

    corpus, features, runs = tmp_path / "corpus", tmp_path / "features", tmp_path / "runs"
    clips = write_corpus(str(corpus), actors=ACTORS, seed=0, workers=1, progress=False)

    status, logs = run_job(cluster, ["jobs/prepare.py", f"input={corpus}", f"output={features}"])
    assert status == "SUCCEEDED", logs[-3000:]
    manifest = json.loads((features / "manifest.json").read_text())
    assert manifest["num_rows"] == len(clips)
    assert manifest["shards"] and all((features / s).is_file() for s in manifest["shards"])
    assert str(features) in logs, "the job's log should say where it wrote"

    status, logs = run_job(
        cluster,
        [
            "jobs/train.py", f"data={features}", f"run_dir={runs}", "name=job",
            "recipe=cpu_small", "optim.epochs=1", "train.num_workers=1", "wandb.enabled=false",
            "split.test_actors=[1]", "split.val_actors=[2]",
        ],
    )  # fmt: skip
    assert status == "SUCCEEDED", logs[-3000:]
    run = runs / "job"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["n"] == sum("Actor_01" in c for c in clips)
    assert metrics["test_actors"] == [1]
    assert (run / "checkpoint" / "model.pt").is_file()
    assert json.loads((run / "checkpoint" / "meta.json").read_text())["split"]["test"] == [1]
