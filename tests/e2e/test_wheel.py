"""The built wheel works when installed non-editable, away from the clone.

A wheel is built from the tree, installed into a fresh virtual environment whose dependencies
come from this test's environment (a ``.pth`` line, so nothing is downloaded), and ``knd`` is run
from an unrelated folder: the default configs must come from inside the installed package.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def run(*args, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, f"{args}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The ``bin`` folder of a fresh venv with the wheel built from this tree installed."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    # Build from a copy of what the wheel is made of, so no build/ folder lands in the clone.
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "configs", src / "configs")
    shutil.copytree(
        REPO / "knd", src / "knd", symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
    )
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
        "-w", str(root / "dist"), str(src))  # fmt: skip
    wheel = next((root / "dist").glob("knd-*.whl"))

    venv = root / "venv"
    # No pip of its own (ensurepip is most of a venv's set-up): this environment's pip installs
    # into it with --python.
    run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    run(sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
        "--no-deps", "--no-index", str(wheel), env=clean_env())  # fmt: skip
    # The dependencies (torch, ray, ...) from this environment, after the venv's own packages; a
    # plain path line, so this environment's editable install of knd is not picked up.
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    purelib = run(str(venv / "bin" / "python"), "-c", code, env=clean_env()).stdout.strip()
    Path(purelib, "_knd_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin"


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KND_CONFIG_DIR")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def test_installed_knd_is_the_wheel_not_the_clone(installed, tmp_path):
    out = run(str(installed / "python"), "-c", "import knd, knd.config.loading; "
              "print(knd.__file__); print(knd.config.loading.config_dir())",
              cwd=tmp_path, env=clean_env()).stdout.split()  # fmt: skip
    venv = str(installed.parent)
    assert out[0].startswith(venv) and out[1].startswith(venv), out
    assert not out[0].startswith(str(REPO))


def test_train_help_and_synth_run_from_another_folder(installed, tmp_path):
    help_text = run(str(installed / "knd"), "train", "--help", cwd=tmp_path, env=clean_env())
    assert "optim.lr" in help_text.stdout and "train.num_workers" in help_text.stdout
    assert "site-packages/knd/configs/train.yaml" in help_text.stdout

    synth = run(str(installed / "knd"), "synth", "out=corpus", "actors=1", "workers=1",
                cwd=tmp_path, env=clean_env())  # fmt: skip
    assert "knd synth done" in synth.stdout
    assert len(list((tmp_path / "corpus" / "Actor_01").glob("*.wav"))) == 60
