"""``jobs/*.py``: thin ``ray job submit`` entry points, and the runtime env that carries secrets.

The jobs themselves run on a real cluster in ``tests/integration/test_jobs.py``; these checks need
no Ray.
"""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STAGES = ("prepare", "train", "tune", "score")


@pytest.mark.parametrize("stage", STAGES)
def test_each_entry_point_only_delegates_to_its_stage(stage):
    source = (REPO / "jobs" / f"{stage}.py").read_text()
    assert len(source.splitlines()) < 40
    assert f'sys.exit(run_command("{stage}", sys.argv[1:]))' in source


def test_a_misspelt_key_exits_2_with_one_line_naming_it():
    result = subprocess.run(
        [sys.executable, "jobs/train.py", "data=/nowhere", "optim.epoch=3"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "unknown key 'optim.epoch'" in result.stderr
    assert "Traceback" not in result.stderr


def test_runtime_env_passes_only_the_listed_credentials_that_are_set():
    runtime_env = runpy.run_path(str(REPO / "jobs" / "runtime_env.py"))["runtime_env"]
    environ = {
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "AWS_SESSION_TOKEN": "",  # set but empty: left out, not passed as ""
        "WANDB_API_KEY": "wandb-secret",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL_S3": "http://minio:9000",
        "HOME": "/home/me",
        "PATH": "/usr/bin",
    }
    assert runtime_env(environ) == {
        "env_vars": {
            "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
            "AWS_SECRET_ACCESS_KEY": "secret",
            "WANDB_API_KEY": "wandb-secret",
            "AWS_DEFAULT_REGION": "eu-west-1",
            "AWS_ENDPOINT_URL_S3": "http://minio:9000",
        }
    }


def test_runtime_env_forwards_every_variable_storage_reads():
    import re

    runtime_env = runpy.run_path(str(REPO / "jobs" / "runtime_env.py"))
    read = set(re.findall(r"AWS_[A-Z0-9_]+", (REPO / "knd" / "data" / "storage.py").read_text()))
    assert read <= set(runtime_env["PASSED"])


def test_runtime_env_script_feeds_ray_job_submit_through_a_pipe():
    """``--runtime-env <(python jobs/runtime_env.py)``: Ray's own parser reads ``/dev/fd/N``."""
    from ray.dashboard.modules.dashboard_sdk import parse_runtime_env_args

    env = {"PATH": "/usr/bin", "WANDB_API_KEY": "wandb-secret", "AWS_REGION": "eu-west-1"}
    printed = subprocess.run(
        [sys.executable, "jobs/runtime_env.py"],
        cwd=REPO, env=env, capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "w") as pipe:
        pipe.write(printed)
    try:
        parsed = parse_runtime_env_args(runtime_env=f"/dev/fd/{read_end}", working_dir=".")
    finally:
        os.close(read_end)
    assert parsed == {
        "env_vars": {"AWS_REGION": "eu-west-1", "WANDB_API_KEY": "wandb-secret"},
        "working_dir": ".",
    }
