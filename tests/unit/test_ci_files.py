"""The Dockerfile and the GitHub Actions workflow: linted, and pinned to what the project pins.

Docker itself is not available on our machines, so the image is never built here: these tests
check what can be checked without it (hadolint, the base image tag, layer order, the user).
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DOCKERFILE = REPO / "Dockerfile"
WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"


def lint(tool: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / tool), *args], capture_output=True, text=True, timeout=60)


def instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


@pytest.mark.parametrize(
    "tool, path",
    [("hadolint", DOCKERFILE), ("actionlint", WORKFLOW)],
    ids=["hadolint", "actionlint"],
)
def test_linter_passes(tool, path):
    result = lint(tool, str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_linters_can_fail(tmp_path):
    bad_dockerfile = tmp_path / "Dockerfile"
    bad_dockerfile.write_text("FROM ubuntu\nRUN cd /tmp && pip install torch\n")
    assert lint("hadolint", str(bad_dockerfile)).returncode != 0
    bad_workflow = tmp_path / "ci.yml"
    bad_workflow.write_text(WORKFLOW.read_text().replace("runs-on:", "run-on:", 1))
    assert lint("actionlint", str(bad_workflow)).returncode != 0


def test_base_image_matches_the_pinned_ray_and_python():
    ray_version = importlib.metadata.version("ray")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert f"ray[default,train,tune,data]=={ray_version}" in project["dependencies"]
    python = "py" + project["requires-python"].split(">=")[1].split(",")[0].replace(".", "")
    froms = [args for op, args in instructions() if op == "FROM"]
    assert froms == [f"rayproject/ray:{ray_version}-{python}-gpu"]


def test_dependencies_install_before_the_source_is_copied_and_a_non_root_user_runs():
    ops = instructions()
    copies = [args for op, args in ops if op == "COPY"]
    assert copies[0].split()[-2:] == ["pyproject.toml", "./"]
    install_deps = next(i for i, (op, args) in enumerate(ops) if "-r /tmp/requirements" in args)
    first_source = next(i for i, (op, args) in enumerate(ops) if op == "COPY" and "knd/" in args)
    assert install_deps < first_source
    users = [args for op, args in ops if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert not [args for op, args in ops if op in ("ENV", "ARG") and re.search("KEY|TOKEN", args)]


def test_dockerignore_lets_in_exactly_what_the_dockerfile_copies():
    """An allow-list (``*``, then ``!`` per source): local data, runs and .venv cannot leak in."""
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    patterns = [line for line in lines if line and not line.startswith("#")]
    assert patterns[0] == "*"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = {
        source.rstrip("/")
        for op, args in instructions()
        if op == "COPY"
        for source in args.split()[:-1]
        if not source.startswith("--")
    }
    assert allowed == copied
    assert all((REPO / source).exists() for source in copied)


def test_workflow_runs_lint_and_tests_on_push_and_pr_bench_nightly_and_docker_on_tags():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    assert {"push", "pull_request", "schedule"} <= set(triggers)
    jobs = workflow["jobs"]
    steps = {name: " ".join(str(s.get("run", s.get("uses"))) for s in job["steps"])
             for name, job in jobs.items()}  # fmt: skip
    assert "make lint" in steps["lint"]
    assert "tests/integration" in steps["integration"]
    assert "make bench" in steps["bench"] and "upload-artifact" in steps["bench"]
    assert "docker/build-push-action" in steps["docker"]
    assert jobs["docker"]["permissions"]["packages"] == "write"
    assert "refs/tags/" in jobs["docker"]["if"]
    for name, job in jobs.items():
        setup = [s for s in job["steps"] if "setup-python" in s.get("uses", "")]
        assert all(s["with"]["cache"] == "pip" for s in setup), name


def test_make_lint_runs_hadolint_and_actionlint():
    makefile = (REPO / "Makefile").read_text()
    lint_recipe = makefile.split("\nlint:", 1)[1].split("\n\n", 1)[0]
    assert "hadolint Dockerfile" in lint_recipe and "actionlint" in lint_recipe
