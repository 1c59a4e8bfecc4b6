"""The installed ``knd`` command: help, argument errors and import hygiene."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

KND = str(Path(sys.executable).with_name("knd"))


def knd(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([KND, *args], capture_output=True, text=True, timeout=120)


def test_usage_lists_every_command():
    out = knd("--help")
    assert out.returncode == 0
    commands = ("synth", "download", "prepare", "train", "evaluate", "tune", "analyse", "score")
    for command in commands:
        assert command in out.stdout


@pytest.mark.parametrize("command", ["synth", "prepare", "train", "score"])
def test_command_help_lists_keys_with_defaults(command):
    out = knd(command, "--help")
    assert out.returncode == 0
    assert "(required)" in out.stdout
    if command == "prepare":
        assert "features.n_mels" in out.stdout and "64" in out.stdout


def test_help_piped_into_a_reader_that_stops_early_exits_quietly():
    # `knd train --help | head`: the reader is gone before knd has written everything. Closing
    # our end of the pipe at once makes knd's write fail every time, not only when head wins.
    proc = subprocess.Popen([KND, "train", "--help"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141  # as a shell reports a reader gone (128 + SIGPIPE)
    assert err == "", err  # no BrokenPipeError traceback, no "Exception ignored"


def test_misspelt_key_fails_naming_the_key():
    out = knd("synth", "out=/tmp/never", "actor=3")
    assert out.returncode == 2
    assert "'actor'" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_missing_required_key_fails():
    out = knd("prepare", "input=/tmp/x")
    assert out.returncode == 2
    assert "'output'" in out.stderr


def test_unknown_command():
    out = knd("fly")
    assert out.returncode == 2
    assert "unknown command" in out.stderr


def test_importing_knd_starts_nothing():
    code = (
        "import sys, knd, knd.config, knd.cli, knd.data.ravdess\n"
        "heavy = [m for m in ('ray', 'torch', 'torchaudio') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
