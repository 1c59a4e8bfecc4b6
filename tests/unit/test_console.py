"""The console: header, one line per epoch or trial, summary, and what is kept off it."""

from __future__ import annotations

import io
import json
import logging
import pickle
import time
from dataclasses import dataclass, field

from knd.cli import run_command
from knd.config.loading import load_config
from knd.runtime import console


def test_header_says_what_is_read_and_where_it_goes():
    cfg = load_config("train", ["data=/d/features", "run_dir=/r", "name=n"])
    lines = console.header("train", "train a model", cfg)
    assert lines[0] == "knd train: train a model"
    assert any("data=/d/features" in line for line in lines)
    assert any(line.strip() == "writes  /r/n" for line in lines)
    assert any("a local Ray" in line for line in lines)
    cfg = load_config("train", ["data=/d", "ray.address=auto"])
    assert not any("a local Ray" in line for line in console.header("train", "t", cfg))


@dataclass(frozen=True)
class _Result:
    run_dir: str
    checkpoint: str
    metrics: dict
    history: list = field(default_factory=list)
    best_epoch: int = 0
    exit_code: int = 0


def test_summary_has_the_headline_and_every_output_path():
    test = {"uar": 0.5, "accuracy": 0.6, "macro_f1": 0.4, "n": 10}
    result = _Result("/r/n", "/r/n/checkpoint", {"test": test, "val": None}, best_epoch=3)
    lines = console.summary("train", result, 12.3)
    text = "\n".join(lines)
    assert lines[0] == "knd train done in 12 s"
    assert "test:" in text and "UAR 0.500, accuracy 0.600" in text and "(n=10)" in text
    assert "/r/n/checkpoint" in text and "best epoch:" in text
    assert "/r/n/report.md" in text
    assert "exit code" not in text and "history" not in text


def test_epoch_lines_with_an_eta_and_each_epoch_once():
    lines: list[str] = []
    printer = console.EpochPrinter(4, lines.append)
    record = {"epoch": 1, "train_loss": 1.5, "val_loss": 1.25, "val_uar": 0.375, "epoch_s": 2.0}
    printer([record])
    printer([record, record | {"epoch": 2}])
    assert len(lines) == 2
    assert lines[0].split()[:2] == ["epoch", "1/4"]
    assert "train loss 1.500" in lines[0] and "val loss 1.250" in lines[0]
    assert "val UAR 0.375" in lines[0] and "2.0 s" in lines[0] and "ETA" in lines[0]
    printer([{"epoch": 4}])
    assert "ETA" not in lines[-1]  # nothing left


def test_follow_epochs_prints_records_as_a_file_grows(tmp_path):
    history = tmp_path / "history.jsonl"
    history.write_text(json.dumps({"epoch": 1}) + "\n")  # already there: a resumed run

    def read():
        return [json.loads(line) for line in history.read_text().splitlines()]

    lines: list[str] = []
    with console.follow_epochs(read, 3, interval_s=0.05, emit=lines.append):
        with history.open("a") as f:
            f.write(json.dumps({"epoch": 2, "val_uar": 0.5}) + "\n")
        deadline = time.monotonic() + 5
        while not lines and time.monotonic() < deadline:
            time.sleep(0.05)
        with history.open("a") as f:
            f.write(json.dumps({"epoch": 3, "val_uar": 0.6}) + "\n")
    assert [line.split()[1] for line in lines] == ["2/3", "3/3"]


def test_trial_lines_and_the_tune_callback_survives_pickling():
    line = console.trial_line("ab_00001", {"epoch": 2, "uar": 0.41, "uar_std": 0.03}, "uar", 12)
    assert line.split() == ["trial", "ab_00001", "epoch", "2/12", "uar", "0.410", "±", "0.030"]
    # Tune saves its callbacks with the experiment, and Tuner.restore unpickles them.
    callback = pickle.loads(pickle.dumps(console.tune_callback("uar", 12)))
    assert type(callback).__name__ == "TrialLines" and callback.max_epochs == 12


def test_quiet_logging_keeps_ray_info_off_and_actionable_warnings_on():
    try:
        console.configure_logging(verbose=False)
        assert not logging.getLogger("ray.data").isEnabledFor(logging.INFO)
        assert not logging.getLogger("ray.train").isEnabledFor(logging.INFO)
        ours = [h for h in logging.getLogger().handlers if getattr(h, "_knd", False)]
        assert len(ours) == 1 and ours[0].level == logging.WARNING
        dropped = logging.makeLogRecord({"msg": "Progress bars disabled. To enable, set ..."})
        kept = logging.makeLogRecord({"msg": "actors [3] were in this checkpoint's training set"})
        assert not ours[0].filter(dropped) and ours[0].filter(kept)
        console.configure_logging(verbose=True)
        assert ours[0].level == logging.INFO and ours[0].filter(dropped)
    finally:
        console.configure_logging(verbose=False)


def test_verbose_from_the_environment(monkeypatch):
    monkeypatch.delenv(console.VERBOSE_ENV, raising=False)
    assert not console.is_verbose() and console.is_verbose(True)
    monkeypatch.setenv(console.VERBOSE_ENV, "1")
    assert console.is_verbose()
    monkeypatch.setenv(console.VERBOSE_ENV, "0")
    assert not console.is_verbose()


def test_a_handled_error_is_one_line_without_traceback(tmp_path, capsys):
    code = run_command("evaluate", [f"checkpoint={tmp_path}/none", f"data={tmp_path}/none"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("knd evaluate: ") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_file_progress_is_a_bar_on_a_terminal_and_a_few_plain_lines_in_a_log():
    log = io.StringIO()
    with console.file_progress(1440, "synth", stream=log) as progress:
        for _ in range(1440):
            progress.update()
    lines = log.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == [
        "synth: 360/1440 files (25%)", "synth: 720/1440 files (50%)",
        "synth: 1080/1440 files (75%)", "synth: 1440/1440 files (100%)",
    ]  # fmt: skip
    assert "\r" not in log.getvalue()
    # Score counts a file's windows as fractions; a jump over quarters gives one line.
    log = io.StringIO()
    with console.file_progress(4, "score", stream=log) as progress:
        progress.update(0.5)
        progress.update(2.5)
        progress.update(1.0)
    assert log.getvalue().splitlines()[0].startswith("score: 3/4 files (75%)")
    assert len(log.getvalue().splitlines()) == 2 and progress.n == 4
    quiet = io.StringIO()
    with console.file_progress(4, "synth", stream=quiet, show=False) as progress:
        progress.update(4)
    assert quiet.getvalue() == ""
    terminal = Terminal()
    with console.file_progress(3, "score", stream=terminal) as bar:
        bar.update(1.5)
        bar.update(1.5)
        assert bar.n == 3 and bar.total == 3
    assert "\r" in terminal.getvalue() and "3/3 files" in terminal.getvalue()
