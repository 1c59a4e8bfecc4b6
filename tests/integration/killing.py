"""Killing a real ``knd`` command half way: a child in its own process group, SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable


def start_killable(command: list[str], ray_session) -> subprocess.Popen:
    """A real ``knd`` child in its own process group, joined to this session's Ray (a second
    local Ray would fight it for the 2 CPUs)."""
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address}
    return subprocess.Popen(
        [sys.executable, "-m", "knd.cli", *command],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def kill_when(child: subprocess.Popen, ready: Callable[[], bool], timeout_s: float = 120.0) -> None:
    """SIGKILL ``child``'s process group once ``ready()`` holds (no drain, no cleanup)."""
    deadline = time.monotonic() + timeout_s
    while not ready() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    time.sleep(1.0)  # its Ray tasks die with their owner; let a last write land, as it would
