"""The one retry policy and the one failure wording of prepare's tasks and score's pipeline."""

from __future__ import annotations

from knd.audio.waveform import AudioError
from knd.runtime.tasks import (
    KILLED_TWICE,
    OUT_OF_MEMORY,
    Failed,
    WorkerDied,
    failure_reason,
    retry_file_by_file,
    run_tasks,
    second_failure,
    serial_map,
)


class WorkerCrashedError(Exception):
    """Named as Ray names the error of a task whose worker process died."""


class RayTaskError(Exception):
    """Like Ray's wrapper of a task's own exception: the exception is its ``cause``."""

    def __init__(self, cause: BaseException):
        super().__init__(f"task failed\n{cause}")
        self.cause = cause


def test_every_exception_is_one_line_and_a_worker_death_has_one_wording():
    assert failure_reason(AudioError("truncated WAV (expected 3 frames)")) == (
        "truncated WAV (expected 3 frames)"
    )
    assert failure_reason(FileNotFoundError(2, "No such file")) == "unreadable (No such file)"
    assert failure_reason(MemoryError()) == OUT_OF_MEMORY
    assert failure_reason(RuntimeError("bad\nsecond line")) == "RuntimeError: bad"
    assert failure_reason(RayTaskError(MemoryError())) == OUT_OF_MEMORY  # the task's own error
    assert failure_reason(WorkerCrashedError()) == "its worker died (WorkerCrashedError)"
    assert second_failure(WorkerCrashedError()) == f"{KILLED_TWICE} (WorkerCrashedError)"
    assert second_failure(WorkerDied()) == KILLED_TWICE
    assert second_failure(RayTaskError(MemoryError())) == OUT_OF_MEMORY


def test_a_failed_unit_is_redone_file_by_file_once_and_each_failed_unit_is_cleaned_up():
    tries: dict[str, int] = {}

    def attempt(units):
        for unit in units:
            for path in unit:
                tries[path] = tries.get(path, 0) + 1
            if "b" in unit:  # b takes every worker down; c only its unit's (with b)
                yield unit, WorkerCrashedError()
            else:
                yield unit, [f"row {p}" for p in unit]

    failed = []
    units = [["a"], ["b", "c"], ["d"]]
    out = list(retry_file_by_file(attempt, units, lambda u: [[p] for p in u], failed.append))
    assert out == [
        (["a"], ["row a"]),
        (["d"], ["row d"]),
        (["b"], Failed(f"{KILLED_TWICE} (WorkerCrashedError)")),
        (["c"], ["row c"]),
    ]
    assert tries == {"a": 1, "b": 2, "c": 2, "d": 1}  # never a third time
    assert failed == [["b", "c"], ["b"]]


def test_a_task_of_one_file_is_tried_twice_and_the_runner_knows_no_task_keys():
    tries: list[str] = []

    def once_fragile(paths, part):
        tries.extend(paths)
        if tries.count("x") == 1:
            raise MemoryError
        return [{"path": p, "error": None, "part": part} for p in paths]

    discarded = []
    rows = run_tasks(
        serial_map, once_fragile, [{"paths": ["x"], "part": "p0"}], {}, on_failed=discarded.append
    )
    assert rows == [{"path": "x", "error": None, "part": "p0"}] and tries == ["x", "x"]
    assert discarded == [{"paths": ["x"], "part": "p0"}]
