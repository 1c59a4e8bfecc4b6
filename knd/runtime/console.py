"""What a person sees on the terminal: a header, one line per unit of work, a summary.

Each command prints a short header (what it will do, what it reads, where it writes), then one
line per unit of work (an epoch of ``knd train``, a trial's report in ``knd tune``), then a summary
with the output paths. Everything else (Ray's own logs, knd's INFO lines) goes to log files, not
the console, unless ``ray.verbose=true`` or ``KND_VERBOSE=1``. Warnings, which a user can act on,
always show.

Ray's processes log to files under its session folder (``/tmp/ray/session_latest/logs``); with
``log_to_driver=False`` the workers' lines stay there instead of being copied to this terminal.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TextIO

from knd.config.commands import COMMANDS

VERBOSE_ENV = "KND_VERBOSE"

# Python loggers of Ray that print on the driver; kept at WARNING unless verbose.
RAY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "ray.air", "ray.util")
# Warnings of Ray's that ask nothing of a knd user: knd chose this on purpose.
NOT_ACTIONABLE = (
    "Progress bars disabled",  # knd turns Ray Data's bars off and prints its own lines
    "Progress bars for operators disabled",
    "Token authentication is enabled for this Ray cluster",  # Ray's default for a local Ray
)


class _DropNotActionable(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(message.startswith(prefix) for prefix in NOT_ACTIONABLE)


_DROP = _DropNotActionable()
# Where those warnings are logged; a logger's own filter sees its records before any handler.
NOT_ACTIONABLE_LOGGERS = (
    "ray._private.authentication.authentication_token_setup",
    "ray.data._internal.progress",
)


def is_verbose(flag: bool = False) -> bool:
    """True when ``ray.verbose=true`` was given or ``KND_VERBOSE`` is set to a true value."""
    env = os.environ.get(VERBOSE_ENV, "").strip().lower()
    return bool(flag) or env in ("1", "true", "yes", "on")


def out(line: str = "", stream: TextIO | None = None) -> None:
    """Print one console line now (flushed, so it interleaves correctly with stderr)."""
    print(line, file=stream or sys.stdout, flush=True)


def configure_logging(verbose: bool) -> None:
    """Console logging: knd's INFO lines and Ray's logs only when ``verbose``; warnings always.

    Called once by ``knd <command>`` before the stage runs, and again by
    :func:`quiet_ray` after Ray is imported (Ray Data installs its own console handler).
    """
    root = logging.getLogger()
    fmt = (
        "%(asctime)s %(levelname)s %(name)s: %(message)s"
        if verbose
        else "%(levelname)s: %(message)s"
    )
    if not any(getattr(h, "_knd", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler._knd = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    for handler in root.handlers:
        if getattr(handler, "_knd", False):
            handler.setFormatter(logging.Formatter(fmt))
            handler.setLevel(logging.INFO if verbose else logging.WARNING)
    root.setLevel(logging.INFO)
    logging.getLogger("knd").setLevel(logging.INFO)
    quiet_ray_loggers(verbose)


def quiet_ray_loggers(verbose: bool) -> None:
    """Ray's driver-side loggers at WARNING, and their console handlers too (Ray Data's is INFO)."""
    level = logging.INFO if verbose else logging.WARNING
    for name in NOT_ACTIONABLE_LOGGERS:
        if verbose:
            logging.getLogger(name).removeFilter(_DROP)
        else:
            logging.getLogger(name).addFilter(_DROP)
    for name in ("", *RAY_LOGGERS):
        logger = logging.getLogger(name)
        if name and not verbose:
            logger.setLevel(max(logger.level, level) if logger.level else level)
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(
                handler, logging.FileHandler
            ):
                if name:
                    handler.setLevel(level)
                if verbose:
                    handler.removeFilter(_DROP)
                else:
                    handler.addFilter(_DROP)


# Ray Tune's driver-side output, read when a Tuner runs: its new console output prints an
# experiment box and TensorBoard hints even at verbose=0 (the legacy reporter is silent there),
# and it warns about snapshot frequency that knd's num_to_keep=1 causes on purpose.
QUIET_TUNE_ENV = {
    "RAY_AIR_NEW_OUTPUT": "0",
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
}


def ray_init_options(verbose: bool) -> dict[str, Any]:
    """Keyword arguments for ``ray.init`` that keep Ray's logs off the console unless verbose."""
    return {
        "log_to_driver": verbose,
        "logging_level": logging.INFO if verbose else logging.WARNING,
    }


def quiet_ray(verbose: bool) -> None:
    """After ``ray.init``: no Ray Data progress bars or plan printouts, Ray loggers at WARNING."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    # Ray Data's own progress bars would interleave with knd's lines.
    ctx.enable_progress_bars = verbose
    if hasattr(ctx, "print_on_execution_start"):
        ctx.print_on_execution_start = verbose
    quiet_ray_loggers(verbose)
    if not verbose:
        for name, value in QUIET_TUNE_ENV.items():
            os.environ.setdefault(name, value)


# ----------------------------------------------------------------------------------------------
# Header and summary


def _value(cfg: Any, key: str) -> Any:
    return getattr(cfg, key, None)


def header(command: str, description: str, cfg: Any) -> list[str]:
    """The lines printed before a command runs: what it does, reads and writes."""
    lines = [f"knd {command}: {description}"]
    entry = COMMANDS[command]
    reads = [f"{k}={_value(cfg, k)}" for k in entry.reads if _value(cfg, k)]
    if reads:
        lines.append(f"  reads   {' '.join(reads)}")
    writes = [str(_value(cfg, k)) for k in entry.writes if _value(cfg, k)]
    if entry.output and not writes:
        writes = [entry.output(cfg)]
    if writes:
        lines.append(f"  writes  {' '.join(writes)}")
    ray_cfg = getattr(cfg, "ray", None)
    if ray_cfg is not None and not (ray_cfg.address or os.environ.get("RAY_ADDRESS")):
        lines.append("  ray     a local Ray; its logs in /tmp/ray/session_latest/logs")
    return lines


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def metrics_headline(part: dict | None) -> str | None:
    """One split's figures in one line (``None`` without them): the summary's and the figures'."""
    if not part or "uar" not in part:
        return None
    return (
        f"UAR {part['uar']:.3f}, accuracy {part['accuracy']:.3f}, "
        f"macro-F1 {part['macro_f1']:.3f} (n={part.get('n', '?')})"
    )


def summary(command: str, result: Any, seconds: float) -> list[str]:
    """The lines printed after a command: its figures and every output path."""
    lines = [f"knd {command} done in {seconds:.0f} s"]
    if result is None or not dataclasses.is_dataclass(result):
        return lines
    fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(result) if f.repr}
    rows: list[tuple[str, str]] = []
    metrics = fields.get("metrics") or {}
    for name in ("val", "test"):
        text = metrics_headline(metrics.get(name) if isinstance(metrics, dict) else None)
        if text:
            rows.append((name, text))
    test = fields.get("test")
    if isinstance(test, dict) and metrics_headline(test):
        rows.append(("test", metrics_headline(test)))
    best = fields.get("best")
    if isinstance(best, dict) and best.get("trial_id"):
        rows.append(("best", f"trial {best['trial_id']}"))
    for key, value in fields.items():
        if key in ("metrics", "history", "test", "best", "manifest", "exit_code", "seconds"):
            continue
        if value is False or value in ("", None):
            continue
        if isinstance(value, bool | int | float | str):
            rows.append((key.replace("_", " "), _fmt(value)))
    for path in fields.get("files") if isinstance(fields.get("files"), list) else []:
        rows.append(("wrote", path))
    folder = fields.get("run_dir") or fields.get("out")
    if COMMANDS[command].report and isinstance(folder, str):
        rows.append(("report", f"{folder.rstrip('/')}/report.md (and report.html)"))
    width = max((len(k) for k, _ in rows), default=0) + 2
    return lines + [f"  {k + ':':<{width}}{v}" for k, v in rows]


class LineProgress:
    """Progress over files as a few plain lines, for a log or a pipe: one at each quarter.

    A terminal redraws a bar in place; a log file would keep every redraw (one ``\\r``-joined
    line of kilobytes), so off a terminal progress is ``synth: 360/1440 files (25%), 12 s``.
    Same interface as the tqdm bar it stands in for: ``update(n)``, ``close()``, ``n``, a
    context manager.
    """

    STEPS = 4

    def __init__(self, total: int, desc: str, stream: TextIO | None):
        self.total, self.desc, self.stream = total, desc, stream
        self.n = 0.0
        self._printed = 0  # quarters printed so far
        self._started = time.monotonic()

    def update(self, n: float = 1) -> None:
        self.n += n
        reached = min(self.STEPS, int(self.n * self.STEPS / self.total)) if self.total else 0
        if reached > self._printed and self.stream is not None:
            self._printed = reached  # several quarters at once: one line, the latest
            seconds = time.monotonic() - self._started
            percent = 100 * reached // self.STEPS
            print(f"{self.desc}: {self.n:.0f}/{self.total} files ({percent}%), {seconds:.0f} s",
                  file=self.stream, flush=True)  # fmt: skip

    def close(self) -> None:
        """Nothing to tidy: the lines are already written."""

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def file_progress(
    total: int, desc: str, verbose: bool = False, stream: TextIO | None = None, show: bool = True
) -> Any:
    """Progress over files (``bar.update(n)``) on stderr, for stages that work file by file
    (synth, prepare, score): a bar on a terminal, a few plain lines (:class:`LineProgress`) in a
    log or a pipe, so ``make demo > demo.log 2>&1`` stays readable.

    Args:
        total: files to do.
        desc: the name the bar or lines start with.
        verbose: unused (logs get the same few lines either way); kept for its callers.
        stream: where to write (default: ``sys.stderr``).
        show: False writes nothing at all (tests and benchmarks).
    """
    del verbose
    stream = sys.stderr if stream is None else stream
    if show and stream.isatty():
        from tqdm import tqdm

        bar_format = (
            "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total} files [{elapsed}<{remaining}]"
        )
        return tqdm(total=total, desc=desc, bar_format=bar_format, file=stream)
    return LineProgress(total, desc, stream if show else None)


# ----------------------------------------------------------------------------------------------
# One line per epoch of knd train, printed on the driver by following history.jsonl


def epoch_line(record: dict, total: int, eta_s: float | None) -> str:
    """``epoch  3/30  train loss 1.234  val loss 1.111  val UAR 0.456  12.3 s  ETA 5m 40s``."""
    width = len(str(total))
    parts = [f"  epoch {int(record['epoch']):>{width}}/{total}"]
    for key, label in (("train_loss", "train loss"), ("val_loss", "val loss")):
        if record.get(key) is not None:
            parts.append(f"{label} {record[key]:.3f}")
    if record.get("val_uar") is not None:
        parts.append(f"val UAR {record['val_uar']:.3f}")
    if record.get("epoch_s") is not None:
        parts.append(f"{record['epoch_s']:.1f} s")
    if eta_s is not None:
        parts.append(f"ETA {_duration(eta_s)}")
    return "  ".join(parts)


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


class EpochPrinter:
    """Prints one line per new epoch record; ETA from the wall time of the epochs seen so far."""

    def __init__(self, total_epochs: int, emit: Callable[[str], None] = out) -> None:
        self.total = total_epochs
        self.emit = emit
        self.seen: set[int] = set()
        self.started = time.monotonic()
        self.done = 0

    def __call__(self, records: list[dict]) -> None:
        for record in records:
            epoch = int(record.get("epoch", 0))
            if epoch in self.seen:
                continue
            self.seen.add(epoch)
            self.done += 1
            left = self.total - epoch
            elapsed = time.monotonic() - self.started
            # Mean wall time per epoch seen by this process: it includes validation and the
            # checkpoint, and the first epoch's start-up, so the ETA errs on the long side.
            eta = elapsed / self.done * left if left > 0 else None
            self.emit(epoch_line(record, self.total, eta))


@contextmanager
def follow_epochs(
    read: Callable[[], list[dict]],
    total_epochs: int,
    interval_s: float = 1.0,
    emit: Callable[[str], None] = out,
) -> Iterator[EpochPrinter]:
    """While the block runs, print each new epoch record returned by ``read`` (polled).

    ``read`` returns every record so far (e.g. ``history.jsonl`` of the run); Ray Train's own
    callbacks run in its controller actor, whose prints would not reach this console.
    """
    printer = EpochPrinter(total_epochs, emit)
    stop = threading.Event()

    def poll() -> None:
        while not stop.wait(interval_s):
            try:
                printer(read())
            except Exception:  # a half-visible remote file: try again next time
                continue

    # Epochs already done (a resumed run) are not news.
    with suppress(Exception):
        printer.seen.update(int(r.get("epoch", 0)) for r in read())
    thread = threading.Thread(target=poll, name="knd-epochs", daemon=True)
    thread.start()
    try:
        yield printer
    finally:
        stop.set()
        thread.join(timeout=5)
        with suppress(Exception):
            printer(read())  # the last epoch, reported just before fit() returned


# ----------------------------------------------------------------------------------------------
# One line per trial report of knd tune (Tune's controller runs in the driver process)


def trial_line(trial_id: str, result: dict, metric: str, max_epochs: int) -> str:
    """``trial 1a2b_00003  epoch 2/12  uar 0.412 ± 0.031  (3 folds)  14.2 s``."""
    epoch = result.get("epoch", result.get("training_iteration", "?"))
    parts = [f"  trial {trial_id}", f"epoch {epoch}/{max_epochs}"]
    if result.get(metric) is not None:
        score = f"{metric} {result[metric]:.3f}"
        if result.get(f"{metric}_std") is not None:
            score += f" ± {result[f'{metric}_std']:.3f}"
        parts.append(score)
    if result.get("time_this_iter_s") is not None:
        parts.append(f"{result['time_this_iter_s']:.1f} s")
    return "  ".join(parts)


def _trial_lines_class() -> type:
    """The Tune callback class, made on first use so that importing knd does not import Ray."""
    from ray.tune import Callback

    class TrialLines(Callback):
        """Prints a line per trial report and per finished or failed trial (on the driver)."""

        def __init__(self, metric: str, max_epochs: int, emit: Callable[[str], None] = out):
            self.metric, self.max_epochs, self.emit = metric, max_epochs, emit

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.emit(trial_line(trial.trial_id, result, self.metric, self.max_epochs))

        def on_trial_complete(self, iteration, trials, trial, **info):
            epoch = (trial.last_result or {}).get("epoch", "?")
            early = isinstance(epoch, int) and epoch < self.max_epochs
            note = " (stopped early by ASHA)" if early else ""
            self.emit(f"  trial {trial.trial_id} finished after epoch {epoch}{note}")

        def on_trial_error(self, iteration, trials, trial, **info):
            self.emit(f"  trial {trial.trial_id} failed; its error is in {trial.path}")

    # Picklable by reference (Tune saves its callbacks with the experiment):
    # knd.runtime.console.TrialLines
    TrialLines.__module__, TrialLines.__qualname__ = __name__, "TrialLines"
    return TrialLines


def __getattr__(name: str) -> Any:
    if name == "TrialLines":
        cls = _trial_lines_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def tune_callback(metric: str, max_epochs: int, emit: Callable[[str], None] = out) -> Any:
    """A Ray Tune callback that prints a line per trial report and per finished trial."""
    return __getattr__("TrialLines")(metric, max_epochs, emit)
