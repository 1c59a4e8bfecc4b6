"""The shard format's output guards (lease, skip check, superseded folders) and prepare's retries.

No Ray: the lease and folder rules are plain storage, and prepare's task runner is exercised
through its in-process map, which treats a failed task exactly as the Ray map does.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from knd.data.lease import LEASE, OutputBusyError, OutputLease
from knd.data.shards import MANIFEST, missing_shards, remove_superseded
from knd.runtime.tasks import OUT_OF_MEMORY, run_tasks, serial_map


def test_a_second_lease_on_one_output_is_refused_until_the_first_is_released(tmp_path):
    out = str(tmp_path / "out")
    first = OutputLease(out).acquire()
    holder = json.loads((tmp_path / "out" / LEASE).read_text())
    assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
    with pytest.raises(OutputBusyError, match=f"pid {os.getpid()}"):
        OutputLease(out).acquire()
    first.renew(force=True)
    first.check()
    first.release()
    assert not (tmp_path / "out" / LEASE).exists()
    with OutputLease(out) as second:
        second.check()
        # The first run, had it kept going, must not commit over the second one.
        with pytest.raises(OutputBusyError, match="lost the lease"):
            first.check()
    assert not (tmp_path / "out" / LEASE).exists()


def test_a_lease_whose_process_is_gone_or_not_renewed_is_taken_over(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    body = {"token": "x", "pid": gone.pid, "host": socket.gethostname(), "renewed": time.time()}
    (out / LEASE).write_text(json.dumps(body))
    with OutputLease(str(out)) as lease:
        lease.check()
    # Another host's lease: only its age tells; an old one is stale, a fresh one is not.
    body |= {"host": "elsewhere", "pid": 1, "renewed": time.time() - 3600}
    (out / LEASE).write_text(json.dumps(body))
    with OutputLease(str(out), stale_after_s=600) as lease:
        lease.check()
    body["renewed"] = time.time()
    (out / LEASE).write_text(json.dumps(body))
    with pytest.raises(OutputBusyError, match="on elsewhere"):
        OutputLease(str(out)).acquire()


def test_a_lease_held_on_another_host_is_waited_for_until_stale_unless_it_is_renewed(tmp_path):
    """A job retried on a new cluster finds the lease of the run it replaces, held elsewhere."""
    import threading

    out = tmp_path / "out"
    out.mkdir()
    body = {"token": "x", "pid": 1, "host": "elsewhere", "renewed": time.time()}
    (out / LEASE).write_text(json.dumps(body))
    started = time.monotonic()
    with OutputLease(str(out), stale_after_s=0.5, wait_s=5.0) as lease:
        lease.check()
    assert 0.3 < time.monotonic() - started < 5.0

    # A holder that renews while we wait is alive: refused then, not after wait_s.
    (out / LEASE).write_text(json.dumps(body | {"renewed": time.time()}))
    renew = threading.Timer(
        0.3, lambda: (out / LEASE).write_text(json.dumps(body | {"renewed": time.time()}))
    )
    renew.start()
    started = time.monotonic()
    with pytest.raises(OutputBusyError, match="on elsewhere"):
        OutputLease(str(out), stale_after_s=600, wait_s=30.0).acquire()
    assert time.monotonic() - started < 10.0
    renew.join()


def test_missing_shards_and_only_folders_older_than_the_manifest_are_removed(tmp_path):
    out = tmp_path / "out"
    for folder in ("shards-a-1", "shards-a-2", ".tmp-shards-a-3", "shards-a-4"):
        (out / folder).mkdir(parents=True)
        (out / folder / "part-00000.parquet").write_bytes(b"x")
    past = time.time() - 60
    for folder in ("shards-a-1", "shards-a-2", ".tmp-shards-a-3"):
        os.utime(out / folder / "part-00000.parquet", (past, past))
        os.utime(out / folder, (past, past))
    manifest = {"shards": ["shards-a-2/part-00000.parquet", "shards-a-2/part-00001.parquet"]}
    (out / MANIFEST).write_text(json.dumps(manifest))
    assert missing_shards(str(out), manifest) == ["shards-a-2/part-00001.parquet"]
    # shards-a-4 was written after the manifest: possibly a run still under way, so it stays.
    future = time.time() + 60
    os.utime(out / "shards-a-4" / "part-00000.parquet", (future, future))
    removed = remove_superseded(str(out), "shards-a-2")
    assert sorted(removed) == [".tmp-shards-a-3", "shards-a-1"]
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "shards-a-2", "shards-a-4"]


def _fragile(paths, fail_on):
    """A task that dies as a whole when it holds a path of ``fail_on`` (as a crashed worker)."""
    bad = [p for p in paths if p in fail_on]
    if bad:
        raise MemoryError(f"{bad[0]} took the worker down")
    return [{"path": p, "error": None} for p in paths]


def test_a_failed_task_is_retried_one_file_at_a_time_and_the_culprit_reported():
    tasks = [{"paths": ["a", "b", "c"]}, {"paths": ["d", "e"]}, {"paths": ["f"]}]
    rows = run_tasks(serial_map, _fragile, tasks, {"fail_on": {"b", "f"}})
    by_path = {r["path"]: r["error"] for r in rows}
    assert sorted(by_path) == list("abcdef")
    assert by_path["b"] == by_path["f"] == OUT_OF_MEMORY
    assert all(by_path[p] is None for p in "acde")


def test_manifest_actors_lists_actors_in_order_without_unknown():
    from knd.data.shards import manifest_actors

    counts = {"1": 60, "12": 60, "3": 60, "unknown": 7}
    assert manifest_actors({"rows_per_actor": counts}) == [1, 3, 12]
