"""An exclusive lease on a prepare output, so two ``knd prepare`` runs never commit into one.

The lease is a small JSON file beside the manifest (:data:`LEASE`); this module knows nothing
else of the shard format.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
import uuid
from typing import Any

import pyarrow.fs as pafs

from knd.data import storage

log = logging.getLogger(__name__)

LEASE = ".knd-prepare.lease"


class OutputBusyError(ValueError):
    """Another ``knd prepare`` holds the lease on an output (a ValueError: the CLI's one line)."""


class OutputLease:
    """An exclusive lease on a prepare output, so two runs never commit into one output.

    Locally the lease file is created with ``O_EXCL`` (atomic); on S3 it is written only when
    absent and read back, and :meth:`check` before the commit makes sure it is still ours. It
    holds pid, host, start and renewal times; the holder renews it every ``renew_s`` and a lease
    not renewed for ``stale_after_s`` (or, on this host, whose process is gone) is taken over.
    """

    def __init__(
        self,
        output: str,
        stale_after_s: float = 600.0,
        renew_s: float = 60.0,
        wait_s: float = 0.0,
    ):
        self.output, self.uri = output, storage.join(output, LEASE)
        self.stale_after_s, self.renew_s, self.wait_s = stale_after_s, renew_s, wait_s
        self.token = uuid.uuid4().hex
        self.renewed = 0.0
        self.started = time.time()

    def _body(self) -> bytes:
        now = time.time()
        holder = {"token": self.token, "pid": os.getpid(), "host": socket.gethostname()}
        return json.dumps(holder | {"started": self.started, "renewed": now})

    def _holder(self) -> dict[str, Any] | None:
        if not storage.exists(self.uri):
            return None
        try:
            holder = json.loads(storage.read_text(self.uri))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # half written or unreadable: judged by its age below
        return holder if isinstance(holder, dict) else {}

    def _stale(self, holder: dict[str, Any]) -> bool:
        renewed = holder.get("renewed")
        if not isinstance(renewed, int | float):
            fs, path = storage.resolve(self.uri)
            info = fs.get_file_info(path)
            renewed = info.mtime.timestamp() if info.mtime else 0.0
        if time.time() - renewed > self.stale_after_s:
            return True
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            try:
                os.kill(holder["pid"], 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                return False
        return False

    def acquire(self) -> OutputLease:
        """Take the lease.

        A lease held on another host (whose process cannot be checked from here: the run that a
        job retry on a new cluster replaces) is waited for, up to ``wait_s``: taken over once
        stale, refused as soon as its holder renews it (it is alive).

        Raises:
            OutputBusyError: another live run holds it.
        """
        self.started = time.time()
        storage.makedirs(self.output)
        tries, waiting_since, seen = 0, time.monotonic(), None
        while tries < 3:
            if self._create():
                if (self._holder() or {}).get("token") == self.token:
                    self.renewed = time.monotonic()
                    return self
                tries += 1
                continue
            holder = self._holder()
            if holder is None or self._stale(holder):
                if holder is not None:
                    log.warning("taking over the stale lease %s (holder %s)", self.uri, holder)
                    self._delete()
                tries += 1
                continue
            elsewhere = holder.get("host") != socket.gethostname()
            renewed = seen is not None and holder.get("renewed") != seen
            if not elsewhere or renewed or time.monotonic() - waiting_since >= self.wait_s:
                raise OutputBusyError(
                    f"{self.output} is being written by another knd prepare (pid "
                    f"{holder.get('pid')} on {holder.get('host')}); wait for it, or delete "
                    f"{self.uri} if that run is gone"
                )
            if seen is None:
                log.warning(
                    "waiting for the lease %s of %s: taken over once stale", self.uri, holder
                )
            seen = holder.get("renewed")
            time.sleep(min(10.0, max(0.05, self.wait_s / 20)))
        raise OutputBusyError(f"could not take the lease {self.uri}: another run keeps taking it")

    def _create(self) -> bool:
        fs, path = storage.resolve(self.uri)
        if storage.is_remote(self.uri):
            # S3 has no create-if-absent through pyarrow: write when absent, then read back.
            if fs.get_file_info(path).type != pafs.FileType.NotFound:
                return False
            storage.write_bytes(self.uri, self._body().encode())
            return True
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(self._body())
        return True

    def _delete(self) -> None:
        fs, path = storage.resolve(self.uri)
        with contextlib.suppress(OSError):  # already gone
            fs.delete_file(path)

    def check(self) -> None:
        """Raise :class:`OutputBusyError` unless the lease is still ours."""
        holder = self._holder()
        if not holder or holder.get("token") != self.token:
            raise OutputBusyError(
                f"lost the lease {self.uri} to another knd prepare "
                f"(pid {(holder or {}).get('pid')} on {(holder or {}).get('host')}); "
                "nothing was committed"
            )

    def renew(self, force: bool = False) -> None:
        """Refresh the renewal time (at most every ``renew_s`` unless ``force``)."""
        if not force and time.monotonic() - self.renewed < self.renew_s:
            return
        self.check()
        storage.write_bytes(self.uri, self._body().encode())
        self.renewed = time.monotonic()

    def release(self) -> None:
        """Give the lease back (only if it is still ours)."""
        holder = self._holder()
        if holder and holder.get("token") == self.token:
            self._delete()

    def __enter__(self) -> OutputLease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


# ----------------------------------------------------------------------------------------------
# Reading: used by train, tune, evaluate and the benchmarks
