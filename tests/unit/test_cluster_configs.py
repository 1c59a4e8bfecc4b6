"""Every ``cluster/*.yaml`` passes the validation ``ray up`` runs first, with the installed Ray;
the KubeRay RayJobs (``cluster/rayjob.yaml``) name entry points that exist, with valid keys.

``prepare_config`` fills in Ray's defaults for the provider (as ``ray up`` does, offline), then
``validate_config`` checks the result against Ray's JSON schema (``autoscaler/ray-schema.json``).
"""

from __future__ import annotations

import copy
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_DIR = ROOT / "cluster"
RAYJOBS = CLUSTER_DIR / "rayjob.yaml"
CONFIGS = sorted(p for p in CLUSTER_DIR.glob("*.yaml") if p != RAYJOBS)
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


def rayjobs() -> list[dict]:
    return [doc for doc in yaml.safe_load_all(RAYJOBS.read_text()) if doc]


def entry_point(command: str) -> tuple[str, list[str]]:
    """``(jobs module, key=value args)`` of ``python jobs/X.py ...`` or ``python -m jobs.X``."""
    words = shlex.split(command)
    assert words[0] == "python", command
    if words[1] == "-m":
        module, args = words[2].removeprefix("jobs."), words[3:]
        assert words[2].startswith("jobs."), command
    else:
        match = re.fullmatch(r"jobs/(\w+)\.py", words[1])
        assert match, f"not a jobs/ entry point: {command}"
        module, args = match.group(1), words[2:]
    return module, args


def test_rayjobs_are_kuberay_jobs_that_retry_on_a_new_cluster_and_clean_up():
    jobs = rayjobs()
    assert {job["metadata"]["name"] for job in jobs} >= {"knd-prepare", "knd-train", "knd-score"}
    for job in jobs:
        assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
        spec = job["spec"]
        assert isinstance(spec["backoffLimit"], int) and spec["backoffLimit"] >= 1
        assert spec["shutdownAfterJobFinishes"] is True
        assert isinstance(spec["ttlSecondsAfterFinished"], int)
        cluster = spec["rayClusterSpec"]
        pods = [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]
        for pod in pods:
            for container in pod["template"]["spec"]["containers"]:
                assert container["image"].split(":")[0].endswith("/knd")
    text = RAYJOBS.read_text()
    for secret in ("AWS_SECRET_ACCESS_KEY", "WANDB_API_KEY", "aws_secret_access_key"):
        assert secret not in text


def test_every_rayjob_entry_point_exists_and_takes_its_keys():
    from knd.config.loading import load_config

    for job in rayjobs():
        module, args = entry_point(job["spec"]["entrypoint"])
        script = ROOT / "jobs" / f"{module}.py"
        assert script.exists(), f"{job['metadata']['name']}: no {script}"
        stage = re.search(r'run_command\("(\w+)"', script.read_text()).group(1)
        load_config(stage, args)  # an unknown key fails here, naming it
        if stage == "train":  # a retry continues the run only under a fixed name
            assert any(a.startswith("name=") for a in args), job["spec"]["entrypoint"]


def test_an_entry_point_that_does_not_exist_is_caught():
    module, _ = entry_point("python -m jobs.nosuch data=x")
    assert not (ROOT / "jobs" / f"{module}.py").exists()
