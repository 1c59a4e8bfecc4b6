"""``jobs/*.py`` submitted to a real cluster: a ``ray start --head`` on this machine of our own.

The head runs in its own session (``setsid``) with its own temp dir, free ports and auth token, so
it neither joins nor disturbs the in-process ``ray_session`` of other tests (``ray.init()`` finds
a cluster through the default temp dir, and ours is elsewhere); this process only speaks HTTP to
its dashboard (the Job Submission API), and teardown stops that process group alone (never
``ray stop``, which would stop every Ray on the machine).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import ray_head

pytestmark = pytest.mark.ray

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
ACTORS = (1, 2, 3)  # test actor 1, validation actor 2, training actor 3
CLIP_STEP = 6  # every 6th clip of each: 10 clips per actor, 30 files for the jobs to prepare
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def connect(url: str, token: str, proc: subprocess.Popen, log: Path, timeout_s: float = 120.0):
    """A Job Submission client, once the dashboard answers (the client's own version check)."""
    from ray.job_submission import JobSubmissionClient

    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            pytest.fail(f"ray start exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            return JobSubmissionClient(url, headers={"Authorization": f"Bearer {token}"})
        except ConnectionError as e:
            if time.monotonic() > deadline:
                pytest.fail(f"the dashboard at {url} did not answer in {timeout_s:.0f} s: {e}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def cluster():
    """A fresh 2-CPU head with the dashboard: its client, GCS port, dashboard URL and token."""
    token = secrets.token_hex(32)
    with ray_head(dashboard=True, token=token) as head:
        client = connect(head.url, token, head.proc, head.log)
        yield SimpleNamespace(client=client, gcs_port=head.gcs_port, url=head.url, token=token)


def run_job(cluster, args: list[str], timeout_s: float = 300.0) -> tuple[str, str]:
    """Submit ``python <args>`` with the repo as working_dir; wait; return (status, logs)."""
    client = cluster.client
    job_id = client.submit_job(
        entrypoint=shlex.join(["python", *args]),
        runtime_env={"working_dir": str(REPO), "env_vars": {"WANDB_MODE": "disabled"}},
    )
    deadline = time.monotonic() + timeout_s
    status = str(client.get_job_status(job_id))
    while status not in TERMINAL and time.monotonic() < deadline:
        time.sleep(0.5)
        status = str(client.get_job_status(job_id))
    logs = client.get_job_logs(job_id)
    if status not in TERMINAL:
        client.stop_job(job_id)
        pytest.fail(f"job {args[0]} still {status} after {timeout_s:.0f} s:\n{logs[-3000:]}")
    return status, logs


def joined(logs: str) -> int | None:
    """The GCS port of the cluster a job's driver joined, from knd.runtime.cluster's log line.

    Inside a job Ray sets RAY_ADDRESS to its own cluster (by the node's IP, not 127.0.0.1).
    """
    found = re.search(r"joining Ray cluster at \S+:(\d+)", logs)
    return int(found.group(1)) if found else None


def test_a_misspelt_key_submitted_as_the_readme_does_fails_with_the_key_in_its_logs(
    cluster, tmp_path
):
    """``ray job submit --working-dir . --runtime-env <(python jobs/runtime_env.py)``, the CLI."""
    secret = "knd-secret-" + secrets.token_hex(8)
    shell_env = {**os.environ, "WANDB_API_KEY": secret, "WANDB_MODE": "disabled"}
    env_file = tmp_path / "runtime_env.yaml"
    with open(env_file, "w") as out:
        subprocess.run(
            [sys.executable, "jobs/runtime_env.py"], env=shell_env, cwd=REPO, stdout=out, check=True
        )
    job_id = f"knd-bad-key-{secrets.token_hex(4)}"
    # The client finds the token where a user's shell has it: RAY_AUTH_TOKEN in the environment.
    cli_env = {**shell_env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": cluster.token}
    submit = subprocess.run(
        [
            str(VENV_BIN / "ray"), "job", "submit", "--address", cluster.url,
            f"--submission-id={job_id}", "--working-dir", ".", "--runtime-env", str(env_file),
            "--", "python", "jobs/train.py", f"data={tmp_path}", "optim.epoch=3",
        ],
        env=cli_env, cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = submit.stdout + submit.stderr
    assert submit.returncode == 1, output  # `ray job submit` exits 1 when its job FAILED
    assert str(cluster.client.get_job_status(job_id)) == "FAILED"
    logs = cluster.client.get_job_logs(job_id)
    assert "unknown key 'optim.epoch'" in logs, logs
    assert "Traceback" not in logs, "a bad argument should fail in one line, not a traceback"
    info = cluster.client.get_job_info(job_id)
    assert info.runtime_env["env_vars"]["WANDB_API_KEY"] == secret  # it reached the job...
    assert secret not in output + logs  # ...and was printed nowhere


def test_prepare_then_train_jobs_write_their_artefacts(cluster, tiny_corpus, tmp_path):
    corpus, features, runs = tmp_path / "corpus", tmp_path / "features", tmp_path / "runs"
    # A slice of the session's synthetic corpus (already written once): the jobs' mechanics, not
    # learning, are under test here.
    clips = []
    for actor in ACTORS:
        source = sorted((Path(tiny_corpus) / f"Actor_{actor:02d}").glob("*.wav"))[::CLIP_STEP]
        for path in source:
            target = corpus / path.parent.name / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            clips.append(str(target))

    # Log-mel alone: the job's mechanics (test_prepare prepares every group on Ray).
    prepare = ["jobs/prepare.py", f"input={corpus}", f"output={features}"]
    prepare.append("features.groups=[logmel]")
    status, logs = run_job(cluster, prepare)
    assert status == "SUCCEEDED", logs[-3000:]
    assert joined(logs) == cluster.gcs_port, "the driver should join this test's cluster"
    manifest = json.loads((features / "manifest.json").read_text())
    assert manifest["num_rows"] == len(clips)
    assert manifest["shards"] and all((features / s).is_file() for s in manifest["shards"])
    assert str(features) in logs, "the job's log should say where it wrote"

    status, logs = run_job(
        cluster,
        [
            "jobs/train.py", f"data={features}", f"run_dir={runs}", "name=job",
            "recipe=cpu_small", "optim.epochs=1", "train.num_workers=1", "wandb.enabled=false",
            "split.test_speakers=[1]", "split.val_speakers=[2]",
        ],
    )  # fmt: skip
    assert status == "SUCCEEDED", logs[-3000:]
    assert joined(logs) == cluster.gcs_port
    run = runs / "job"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["n"] == sum("Actor_01" in c for c in clips)
    assert metrics["test_actors"] == [1]
    assert (run / "checkpoint" / "model.pt").is_file()
    assert json.loads((run / "checkpoint" / "meta.json").read_text())["split"]["test"] == [1]
