"""Bounded retries for Ray Data's map actors: a batch whose worker died is redone file by file,
and a file in flight at a second death is reported, never read a third time.

A module of its own that imports nothing heavy: the ledger actor's process imports it and only
it, so starting that actor beside the scoring actors does not import pandas and the feature code
for a dictionary.
"""

from __future__ import annotations

import hashlib

import numpy as np

KILLED_TWICE = "its worker died twice while scoring this file (not retried further)"


class AttemptLedger:
    """A Ray actor (no CPU, on the driver's node) counting attempts that started and never
    finished, by key: a batch or a file whose worker died while it ran."""

    def __init__(self):
        self.unfinished: dict[str, int] = {}

    def start(self, key: str) -> int:
        """Count an attempt; returns how many earlier attempts of ``key`` never finished."""
        before = self.unfinished.get(key, 0)
        self.unfinished[key] = before + 1
        return before

    def finish(self, key: str) -> None:
        self.unfinished[key] = self.unfinished.get(key, 1) - 1


def bounded_retry(paths: list[str], ledger, work) -> dict[str, np.ndarray]:
    """``work(paths, skip)`` once; after its worker died, file by file, and never a third time.

    Ray Data retries a task whose worker died (its defaults: actors restarted, their tasks
    retried without limit), so a file that kills every worker it reaches would be retried
    forever. Here a batch that started before and never finished is redone one file at a time,
    and a file that was in flight when its worker died in such a one-by-one pass (the second
    death it caused) is not read again: ``work`` gets it in ``skip`` and reports it.
    """
    import ray

    batch_key = "batch:" + hashlib.sha256("\n".join(paths).encode()).hexdigest()
    if ray.get(ledger.start.remote(batch_key)) == 0:
        out = work(paths, {})
        ledger.finish.remote(batch_key)
        return out
    parts = []
    for path in paths:
        died = ray.get(ledger.start.remote("file:" + path))
        parts.append(work([path], {path: KILLED_TWICE} if died else {}))
        ray.get(ledger.finish.remote("file:" + path))
    ledger.finish.remote(batch_key)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
