"""Fixtures shared by every test tier. Heavy fixtures are session-scoped and built lazily."""

from __future__ import annotations

import contextlib

import pytest

RAY_TRAIN_POLL_S = "0.25"
"""How often Ray Train's controller polls its workers in this session (Ray's default is 2 s):
it collects reports, notices a finished or dead worker group and starts teardown only at a poll,
which cost each of the suite's dozen training runs about 3 s of waiting on 2 cores."""

RAY_SESSION_ENV = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": RAY_TRAIN_POLL_S,
    # The GCS declares a node dead after 5 failed health checks, one every 3 s by default: each
    # worker node the chaos tests kill then held its stage up 15 s. A check a second still
    # tolerates 5 s of a node that does not answer (and 10 s for each answer) before a false
    # alarm.
    "RAY_health_check_period_ms": "1000",
}


def pytest_configure(config):
    """Settings every Ray of the session inherits: the in-process one, each ``knd`` command's,
    the job cluster's head and the chaos cluster (each copies this process's environment)."""
    import os

    for name, value in RAY_SESSION_ENV.items():
        os.environ.setdefault(name, value)


@pytest.fixture(scope="session")
def aws_test_env():
    """Dummy AWS credentials and a loopback S3 endpoint in ``os.environ`` for the whole session.

    Ray workers copy the environment of the process that starts Ray, so these variables must be
    set before ``ray_session`` starts: ``ray_session`` depends on this fixture for that reason.
    The endpoint's port is reserved here and served by ``s3_server`` when a test needs S3; no
    test can reach real AWS either way.
    """
    import os
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    values = {
        "AWS_ACCESS_KEY_ID": "knd-test-key",
        "AWS_SECRET_ACCESS_KEY": "knd-test-secret-not-for-logs",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    saved = {k: os.environ.get(k) for k in [*values, "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"]}
    for key in ("AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        os.environ.pop(key, None)
    os.environ.update(values)
    yield values
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def s3_server(aws_test_env):
    """moto's S3 server (real HTTP on 127.0.0.1) with an empty bucket: bucket, endpoint, url."""
    import logging
    from types import SimpleNamespace

    import boto3
    from moto.server import ThreadedMotoServer

    endpoint = aws_test_env["AWS_ENDPOINT_URL"]
    server = ThreadedMotoServer(
        ip_address="127.0.0.1", port=int(endpoint.rsplit(":", 1)[1]), verbose=False
    )
    server.start()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request otherwise
    bucket = "knd-test"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    yield SimpleNamespace(bucket=bucket, endpoint=endpoint, url=f"s3://{bucket}")
    server.stop()


@pytest.fixture(scope="session")
def ray_session(aws_test_env):
    """One real local Ray for the whole test session (2 CPUs, no dashboard)."""
    import ray

    # address="local": never join another Ray that this machine's temp folder last recorded.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """The synthetic corpus of 8 actors (480 RAVDESS-named WAVs), written once per session."""
    from knd.stages.synth import write_corpus

    out = tmp_path_factory.mktemp("tiny_corpus")
    write_corpus(str(out), actors=8, seed=0, progress=False)
    return str(out)


@pytest.fixture(scope="session")
def tiny_features(tiny_corpus, ray_session, tmp_path_factory):
    """``tiny_corpus`` prepared by ``knd.stages.prepare.run``: the shipped log-mel parameters, and
    the log-mel group alone (what every model its users train reads; the prosody and eGeMAPS groups
    are prepared and checked by test_feature_groups and test_prepare)."""
    from knd.config.loading import load_config
    from knd.stages.prepare import run

    out = tmp_path_factory.mktemp("tiny_features")
    args = [f"input={tiny_corpus}", f"output={out}", "features.groups=[logmel]"]
    result = run(load_config("prepare", args))
    assert result.exit_code == 0 and result.num_rejected == 0, result
    return str(out)


TINY_ENCODER = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(16,) * 7,
    conv_stride=(5, 2, 2, 2, 2, 2, 2),
    conv_kernel=(10, 3, 3, 3, 3, 2, 2),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
)
"""The real architectures' shapes, shrunk: 20 ms frames at 16 kHz, two transformer layers."""


def write_tiny_encoder(folder, kind: str = "wav2vec2", seed: int = 0) -> str:
    """A randomly initialised speech encoder of a real architecture, as ``save_pretrained``
    writes it (config.json + model.safetensors): what knd loads in place of downloaded weights."""
    import torch
    import transformers
    from transformers import AutoModel

    configs = {
        "wav2vec2": transformers.Wav2Vec2Config,
        "hubert": transformers.HubertConfig,
        "wavlm": transformers.WavLMConfig,
    }
    torch.manual_seed(seed)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    AutoModel.from_config(configs[kind](**TINY_ENCODER)).save_pretrained(str(folder))
    return str(folder)


@pytest.fixture(scope="session")
def tiny_encoders(tmp_path_factory):
    """``{architecture: folder}`` of tiny random wav2vec2, HuBERT and WavLM encoders."""
    root = tmp_path_factory.mktemp("encoders")
    return {kind: write_tiny_encoder(root / kind, kind) for kind in ("wav2vec2", "hubert", "wavlm")}


# --- A Ray head of a test's own (``ray start --head --block``), for tests of real clusters ---


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports that were free a moment ago (held open together so they differ)."""
    import socket

    sockets = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("", 0))  # Ray listens on the node's address, not only on loopback
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def group_alive(pgid: int) -> bool:
    import os

    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_process_group(proc, grace_s: float = 40.0) -> None:
    """SIGTERM ``ray start --block``, wait for its process group to empty, SIGKILL what is left.

    The leader alone gets SIGTERM: it drains the node and stops its children in order (a SIGTERM
    to the whole group kills the GCS first and leaves the rest waiting for it).
    """
    import os
    import signal
    import time

    proc.terminate()
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader so that the group can empty
        if not group_alive(proc.pid):
            return
        time.sleep(0.2)
    if group_alive(proc.pid):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def die_with_this_process() -> None:
    """In the child: SIGTERM it when the test process dies, even by SIGKILL (Linux only).

    ``ray start --block`` then stops its own children, so a test run killed mid-way (a CI
    timeout) does not leave a head behind with two busy CPUs and ports taken.
    """
    import ctypes
    import signal
    import sys

    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def head_command(temp_dir, dashboard: bool) -> tuple[list[str], dict[str, int]]:
    """``ray start --head --block`` on 127.0.0.1 with 2 CPUs, every port free, and its ports."""
    import sys
    from pathlib import Path

    names = ("gcs", "dashboard", "client", "agent_http", "agent_grpc", "metrics", "runtime_env",
             "node_manager", "object_manager")  # fmt: skip
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    # Workers on ports the OS picks (0), not the 10002-19999 every other Ray here draws from.
    command = [
        str(Path(sys.executable).parent / "ray"), "start", "--head", "--block",
        "--disable-usage-stats", "--node-ip-address=127.0.0.1", f"--port={ports['gcs']}",
        "--num-cpus=2", "--num-gpus=0", f"--include-dashboard={str(dashboard).lower()}",
        "--dashboard-host=127.0.0.1", f"--dashboard-port={ports['dashboard']}",
        f"--ray-client-server-port={ports['client']}",
        f"--dashboard-agent-listen-port={ports['agent_http']}",
        f"--dashboard-agent-grpc-port={ports['agent_grpc']}",
        f"--metrics-export-port={ports['metrics']}",
        f"--runtime-env-agent-port={ports['runtime_env']}",
        f"--node-manager-port={ports['node_manager']}",
        f"--object-manager-port={ports['object_manager']}",
        "--min-worker-port=0", "--max-worker-port=0", f"--temp-dir={temp_dir}",
    ]  # fmt: skip
    return command, ports


@contextlib.contextmanager
def ray_head(dashboard: bool, token: str, timeout_s: float = 120.0):
    """A fresh 2-CPU Ray head of this test's own, up (``Ray runtime started``); always stopped.

    It runs in its own session (``setsid``) with its own temp dir and free ports, so it neither
    joins nor disturbs the in-process ``ray_session`` (``ray.init()`` finds a cluster through the
    default temp dir, and this one is elsewhere); teardown stops that process group alone, never
    ``ray stop``, which would stop every Ray on the machine. The head asks for ``token``
    (``RAY_AUTH_MODE=token``): a head started without one here was seen to refuse drivers as
    unauthenticated. Yields proc, log, gcs_port, address (``127.0.0.1:port``) and url (the
    dashboard's).
    """
    import os
    import shutil
    import subprocess
    import sys
    import tempfile
    import time
    from pathlib import Path
    from types import SimpleNamespace

    # A short temp dir: Ray's socket paths must stay under the 107-character Unix limit.
    temp_dir = Path(tempfile.mkdtemp(prefix="knd-ray-", dir="/tmp"))
    command, ports = head_command(temp_dir, dashboard)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
    # A job's `python` is the first one on the head's PATH: make it this venv's. No drain on
    # SIGTERM: it waits up to 30 s for a Serve hand-over this cluster never has.
    bin_dir = str(Path(sys.executable).parent)
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
               RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")  # fmt: skip
    # This cluster's own token, not ~/.ray/auth_token, which other Ray sessions here share.
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    log = temp_dir / "ray-start.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command, env=env, cwd=Path(__file__).parents[1], stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_this_process,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout_s
        while "Ray runtime started" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield SimpleNamespace(
            proc=proc, log=log, gcs_port=ports["gcs"], address=f"127.0.0.1:{ports['gcs']}",
            url=f"http://127.0.0.1:{ports['dashboard']}",
        )  # fmt: skip
    finally:
        stop_process_group(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)
