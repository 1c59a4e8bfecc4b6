"""Every ``cluster/*.yaml`` passes the validation ``ray up`` runs first, with the installed Ray.

``prepare_config`` fills in Ray's defaults for the provider (as ``ray up`` does, offline), then
``validate_config`` checks the result against Ray's JSON schema (``autoscaler/ray-schema.json``).
"""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_DIR = Path(__file__).resolve().parents[2] / "cluster"
CONFIGS = sorted(CLUSTER_DIR.glob("*.yaml"))
CLOUDS = [p for p in CONFIGS if p.stem != "local"]


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def check(config: dict) -> None:
    validate_config(prepare_config(copy.deepcopy(config)))


def test_a_config_for_aws_gcp_and_on_premises():
    assert {p.stem for p in CONFIGS} >= {"aws", "gcp", "local"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_passes_rays_own_validation(path):
    check(load(path))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
@pytest.mark.parametrize(
    "section, key",
    [(None, "idle_timeout_minutes"), ("docker", "pull_before_run"), ("auth", "ssh_user")],
)
def test_a_misspelt_key_is_rejected(path, section, key):
    config = load(path)
    node = config if section is None else config[section]
    node[key + "s"] = node.pop(key, "x")
    with pytest.raises(jsonschema.ValidationError, match=key + "s"):
        check(config)


@pytest.mark.parametrize("path", CLOUDS, ids=lambda p: p.name)
def test_a_misspelt_node_type_key_is_rejected(path):
    config = load(path)
    config["available_node_types"]["gpu_worker"]["max_worker"] = 2
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        check(config)


@pytest.mark.parametrize("path", CLOUDS, ids=lambda p: p.name)
def test_cloud_clusters_autoscale_spot_gpu_workers_from_zero_beside_a_cpu_head(path):
    config = prepare_config(load(path))
    head = config["available_node_types"][config["head_node_type"]]
    workers = config["available_node_types"]["gpu_worker"]
    assert workers["min_workers"] == 0 < workers["max_workers"] <= config["max_workers"]
    assert "--gpus all" in config["docker"]["worker_run_options"]
    assert "--gpus all" not in config["docker"]["run_options"]
    node, head_node = workers["node_config"], head["node_config"]
    if config["provider"]["type"] == "aws":
        assert node["InstanceType"].startswith(("g5.", "g6."))
        assert node["InstanceMarketOptions"]["MarketType"] == "spot"
        assert "InstanceMarketOptions" not in head_node
    else:
        assert node["guestAccelerators"][0]["acceleratorCount"] == 1
        assert node["scheduling"]["provisioningModel"] == "SPOT"
        assert "guestAccelerators" not in head_node


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_runs_the_project_image_with_no_secrets(path):
    config = load(path)
    assert config["docker"]["image"].split(":")[0].endswith("/knd")
    text = path.read_text()
    for secret in ("AWS_SECRET_ACCESS_KEY=", "WANDB_API_KEY=", "aws_secret_access_key"):
        assert secret not in text
