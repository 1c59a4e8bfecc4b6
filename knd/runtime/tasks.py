"""Work on Ray workers, bounded: why a file failed, one torch thread per task, and the one retry
policy of ``knd prepare``'s tasks and ``knd score``'s pipeline.

**The policy.** A unit of work (a task of many files) whose worker died, or that failed as a
whole, is redone file by file; a file whose lone try fails too (the second worker it took down)
becomes one error row, :data:`KILLED_TWICE` or the reason of its own exception, and is never
tried a third time. The driver applies it to work whose outcome it sees
(:func:`retry_file_by_file`: prepare's tasks through :func:`run_tasks`, the files score lost
with a failed block). Ray Data runs a task again on its own after its worker died, unseen by the
driver: :func:`bounded_rerun` applies the same policy inside the worker, with the tries counted
by an :class:`AttemptLedger` actor.

Nothing heavy is imported here (torch and Ray only inside functions): the ledger actor's process
imports this module alone, so it loads neither torch nor pandas nor the feature code.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

log = logging.getLogger(__name__)

Unit = TypeVar("Unit")

OUT_OF_MEMORY = "out of memory while processing this file"
"""A file whose own processing ran out of memory (its worker lived)."""
KILLED_TWICE = "its worker died twice while processing this file"
"""A file that took its worker down again when tried alone: it is not tried a third time."""
WORKER_DEATHS = ("WorkerCrashed", "NodeDied", "ActorDied", "ActorUnavailable")
"""Ray's errors for work whose worker (or node) died, by name (as Ray versions name them)."""


class WorkerDied(RuntimeError):
    """Work that never came back: its worker or node died, or Ray gave up on its block."""


# ----------------------------------------------------------------------------------------------
# Why a file failed


def worker_death(e: BaseException) -> str | None:
    """What happened to the worker of failed work (``out of memory``, Ray's error's name, ``""``
    for :class:`WorkerDied`), or None when the work failed by an exception of its own."""
    name = type(e).__name__
    if isinstance(e, WorkerDied):
        return _first_line(e)
    if "OutOfMemory" in name:
        return "out of memory"
    if any(death in name for death in WORKER_DEATHS):
        return name
    return None


def failure_reason(e: BaseException) -> str:
    """One line saying why a file (or a unit of work) failed, whatever the exception.

    A Ray task's exception is read through its wrapper (the task's own exception); a worker that
    died says how; a ``ValueError`` (an :class:`knd.audio.waveform.AudioError` among them) is its
    message; an ``OSError`` is ``unreadable (...)``; a ``MemoryError`` is :data:`OUT_OF_MEMORY`.
    """
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException) and cause is not e:
        return failure_reason(cause)
    death = worker_death(e)
    if death is not None:
        return f"its worker died ({death})" if death else "its worker died"
    if isinstance(e, ValueError):
        return _first_line(e) or type(e).__name__
    if isinstance(e, OSError):
        return f"unreadable ({e.strerror or _first_line(e) or type(e).__name__})"
    if isinstance(e, MemoryError):
        return OUT_OF_MEMORY
    text = _first_line(e)
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def killed_twice(detail: str = "") -> str:
    """The one reason of a file that took its worker down on its second try."""
    return f"{KILLED_TWICE} ({detail})" if detail else KILLED_TWICE


def second_failure(e: BaseException) -> str:
    """The reason of a file whose lone try failed after its unit's: :func:`killed_twice` when its
    worker died again, else the reason of its own exception."""
    cause = getattr(e, "cause", None)
    death = None if isinstance(cause, BaseException) else worker_death(e)
    return failure_reason(e) if death is None else killed_twice(death)


def _first_line(e: BaseException) -> str:
    text = str(e)
    return text.splitlines()[0] if text else ""


def one_torch_thread() -> None:
    """Give torch one thread in this worker process."""
    import torch

    # One task per CPU already fills the machine; torch's own threads would oversubscribe it.
    torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------------
# The policy on the driver


@dataclass(frozen=True)
class Failed:
    """The outcome of work that failed on its second try: each of its files is an error row."""

    reason: str


def retry_file_by_file(
    attempt: Callable[[list[Unit]], Iterable[tuple[Unit, Any]]],
    units: list[Unit],
    split: Callable[[Unit], list[Unit]],
    on_failed: Callable[[Unit], None] = lambda unit: None,
    size: Callable[[Unit], int] = len,
) -> Iterator[tuple[Unit, Any]]:
    """``(unit, result)`` of every unit as ``attempt`` delivers it, with failed units redone once.

    Args:
        attempt: runs units; yields ``(unit, its result or the exception it failed with)`` in any
            order. A failed unit may be part of a unit (score's files lost with their block).
        units: the work, in units of any number of files.
        split: a failed unit -> its files as units of one file each, tried once more.
        on_failed: called with every unit that failed (to discard what it may have written).
        size: the number of files of a unit (for the log).

    Yields:
        ``(unit, result)``, or ``(unit, Failed(reason))`` for a unit of the second try that
        failed too (:func:`second_failure`); nothing is tried a third time.
    """
    retry: list[Unit] = []
    for unit, out in attempt(units) if units else ():
        if not isinstance(out, BaseException):
            yield unit, out
            continue
        on_failed(unit)
        log.warning(
            "%d file(s) failed together (%s); retrying them one per task",
            size(unit), failure_reason(out),
        )  # fmt: skip
        retry.extend(split(unit))
    for unit, out in attempt(retry) if retry else ():
        if isinstance(out, BaseException):
            on_failed(unit)
            out = Failed(second_failure(out))
        yield unit, out


# ----------------------------------------------------------------------------------------------
# Plain tasks of files: ``{"paths": [...], ...}`` dictionaries run by a task map

TaskMap = Callable[[Callable, list[dict], dict], Iterator[tuple[dict, Any]]]
"""``(fn, tasks, consts) -> (task, rows or the exception)`` for each task, in any order."""


def serial_map(fn: Callable, tasks: list[dict], consts: dict) -> Iterator[tuple[dict, Any]]:
    """Run tasks one after another in this process (the benchmark's plain loop)."""
    for task in tasks:
        try:
            yield task, fn(**task, **consts)
        except Exception as e:  # noqa: BLE001 - reported like a failed Ray task
            yield task, e


def _in_task(fn: Callable, task: dict, consts: dict) -> list[dict]:
    one_torch_thread()
    return fn(**task, **consts)


def ray_map(
    fn: Callable, tasks: list[dict], consts: dict, in_order: bool = False, **options: Any
) -> Iterator[tuple[dict, Any]]:
    """Run tasks as Ray tasks (1 CPU each, no retries: :func:`run_tasks` retries per file).

    At most a few tasks per CPU are in flight, so the driver's bookkeeping stays small however
    large the corpus, and a worker that finishes a task finds the next one queued (Ray hands it
    the same lease: no scheduling round trip between tasks). Results are yielded as they arrive,
    or with ``in_order`` in the order of ``tasks`` (a slow task holds back the finished ones
    behind it, at most the window's). ``options`` go to Ray's ``.options`` (``num_gpus=1``).
    """
    import ray

    options = {"num_cpus": 1, "max_retries": 0, "retry_exceptions": False, **options}
    remote = ray.remote(_in_task).options(**options)
    window = max(4, 4 * int(ray.cluster_resources().get("CPU", 1)))
    fn_ref, consts_ref = ray.put(fn), ray.put(consts)
    todo = iter(tasks)
    pending: dict[Any, dict] = {}  # in submission order
    while True:
        for task in todo:
            pending[remote.remote(fn_ref, task, consts_ref)] = task
            if len(pending) >= window:
                break
        if not pending:
            return
        if in_order:  # the oldest: ray.get below waits for it
            done = [next(iter(pending))]
        else:
            done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            task = pending.pop(ref)
            try:
                yield task, ray.get(ref)
            except Exception as e:  # noqa: BLE001 - a worker crash, OOM kill or task error
                yield task, e


def split_by_file(task: dict) -> list[dict]:
    """A task -> one task per file: every list value sliced, the other values shared."""
    return [
        {k: v[i : i + 1] if isinstance(v, list) else v for k, v in task.items()}
        for i in range(len(task["paths"]))
    ]


def run_tasks(
    map_tasks: TaskMap,
    fn: Callable,
    tasks: list[dict],
    consts: dict,
    on_progress: Callable[[int], None] = lambda files: None,
    on_failed: Callable[[dict], None] = lambda task: None,
    split: Callable[[dict], list[dict]] = split_by_file,
) -> list[dict[str, Any]]:
    """Rows of every file of ``tasks`` (``fn(**task, **consts)`` returns a task's rows), under
    :func:`retry_file_by_file`: a file that fails twice is a row ``{path, error}``, and the job
    always finishes.

    ``on_progress(n)`` runs after every task with the number of files it finished (0 for a task
    whose files are retried); ``on_failed(task)`` with every task that failed, before its files
    are retried; ``split`` makes the one-file tasks of a failed one (default
    :func:`split_by_file`).
    """
    rows: list[dict[str, Any]] = []

    def failed(task: dict) -> None:
        on_failed(task)
        on_progress(0)

    attempt = lambda some: map_tasks(fn, some, consts)  # noqa: E731
    size = lambda task: len(task["paths"])  # noqa: E731
    for task, out in retry_file_by_file(attempt, tasks, split, failed, size):
        if isinstance(out, Failed):
            rows.extend({"path": path, "error": out.reason} for path in task["paths"])
        else:
            rows.extend(out)
        on_progress(size(task))
    return rows


# ----------------------------------------------------------------------------------------------
# The policy inside Ray Data's workers


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


def bounded_rerun(paths: list[str], ledger, work) -> dict[str, np.ndarray]:
    """``work(paths, skip)`` once; after its worker died, file by file, and never a third time.

    Ray Data retries a task whose worker died (its defaults: actors restarted, their tasks
    retried without limit), so a file that kills every worker it reaches would be retried
    forever. Here a batch that started before and never finished is redone one file at a time,
    and a file that was in flight when its worker died in such a one-by-one pass (the second
    death it caused) is not read again: ``work`` gets it in ``skip`` with :data:`KILLED_TWICE`
    and reports it.
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
        parts.append(work([path], {path: killed_twice()} if died else {}))
        ray.get(ledger.finish.remote("file:" + path))
    ledger.finish.remote(batch_key)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
