"""Fixtures shared by every test tier. Heavy fixtures are session-scoped and built lazily."""

from __future__ import annotations

import pytest


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
    from knd.synth import write_corpus

    out = tmp_path_factory.mktemp("tiny_corpus")
    write_corpus(str(out), actors=8, seed=0, progress=False)
    return str(out)


@pytest.fixture(scope="session")
def tiny_features(tiny_corpus, ray_session, tmp_path_factory):
    """``tiny_corpus`` prepared by ``knd.prepare.run`` with the shipped feature parameters."""
    from knd.config import load_config
    from knd.prepare import run

    out = tmp_path_factory.mktemp("tiny_features")
    result = run(load_config("prepare", [f"input={tiny_corpus}", f"output={out}"]))
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
