"""``knd analyse``: tables, plots and the best configuration of a ``knd tune`` experiment.

Reads the experiment with Ray Tune's ``ExperimentAnalysis`` (no Ray session is started; the
experiment folder must be trusted, since Tune's state files are pickles) and writes into ``out``
(default ``<experiment>/analysis``):

- ``trials.csv``: one row per configuration: status, epochs run, whether ASHA stopped it early,
  mean and standard deviation of the fold scores, every fold's UAR, and the parameters;
- ``summary.md``: the top configurations, trial counts, early stops and wall time;
- ``score_vs_params.png``, ``learning_curves.png``, ``fold_spread.png``;
- ``best_config.yaml``: the best configuration as a file ``knd train config=...`` accepts as is.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from knd.config.schema import AnalyseConfig
from knd.data import storage
from knd.learning.experiment import (
    BEST_CONFIG_FILE,
    BEST_RESULT_FILE,
    SCORES,
    best_config_text,
    best_row,
    load_experiment,
    number,
    read_meta,
    trial_rows,
)
from knd.learning.report import figure, png, write_analysis_report

log = logging.getLogger(__name__)

TRIALS_FILE = "trials.csv"
SUMMARY_FILE = "summary.md"
PARAMS_PLOT = "score_vs_params.png"
CURVES_PLOT = "learning_curves.png"
SPREAD_PLOT = "fold_spread.png"


@dataclass(frozen=True)
class AnalyseResult:
    out: str
    files: list[str]
    num_trials: int
    best: dict | None
    exit_code: int = 0


def ranked(rows: list[dict], metric: str) -> list[dict]:
    """Rows by decreasing ``metric``; trials without a score last."""
    return sorted(rows, key=lambda r: -(number(r.get(metric)) if r.get(metric) is not None
                                        else -math.inf))  # fmt: skip


def param_keys(rows: list[dict]) -> list[str]:
    return sorted({key for row in rows for key in row["params"]})


def trials_csv(rows: list[dict], metric: str) -> str:
    """``trials.csv``: one row per configuration, best first."""
    folds = sorted(
        {k for r in rows for k in r if k.startswith("uar_fold_")}, key=lambda k: int(k[9:])
    )
    params = param_keys(rows)
    head = ["rank", "trial_id", "status", "stopped_early", "epochs", "epochs_planned"]
    columns = [*head, *SCORES, *folds, "time_s", *params]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for rank, row in enumerate(ranked(rows, metric), start=1):
        writer.writerow({"rank": rank, **row, **row["params"]})
    return buf.getvalue()


def wall_time(rows: list[dict]) -> float | None:
    """Seconds from the first trial's first epoch starting to the last report of any trial."""
    starts, ends = [], []
    for row in rows:
        for i, h in enumerate(row["history"]):
            if number(h.get("timestamp")) is None:
                continue
            ends.append(h["timestamp"])
            if i == 0:
                starts.append(h["timestamp"] - (number(h.get("time_this_iter_s")) or 0.0))
    return float(max(ends) - min(starts)) if starts and ends else None


def _fmt(value: Any) -> str:
    x = number(value) if not isinstance(value, bool) else None
    if x is None:
        return str(value)
    if x != 0 and (abs(x) < 1e-2 or abs(x) >= 1e4):
        return f"{x:.2e}"
    return f"{x:.4g}"


def summary_md(
    experiment: str, rows: list[dict], meta: dict | None, best_result: dict | None, top: int
) -> str:
    """``summary.md``: counts, wall time, the top configurations and the test result."""
    metric = (meta or {}).get("metric", "uar")
    statuses: dict[str, int] = {}
    for row in rows:
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
    stopped = sum(r["stopped_early"] for r in rows)
    complete = sum(r["status"] == "TERMINATED" and not r["stopped_early"] for r in rows)
    wall = (best_result or {}).get("search_s") or wall_time(rows)
    summed = sum(number(r.get("time_s")) or 0.0 for r in rows)
    lines = [f"# Tune experiment `{experiment.rstrip('/').rsplit('/', 1)[-1]}`", ""]
    lines.append(f"- experiment: `{experiment}`")
    status_text = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
    lines.append(f"- trials: {len(rows)} ({status_text})")
    lines.append(f"- stopped early by ASHA: {stopped}; ran every planned epoch: {complete}")
    if wall is not None:
        lines.append(f"- wall time of the search: {wall:.1f} s; summed trial time: {summed:.1f} s")
    if meta:
        folds = " ".join("{" + ",".join(map(str, f)) + "}" for f in meta["folds"])
        lines.append(
            f"- score: mean validation {metric} over {len(meta['folds'])} actor folds {folds} "
            f"(± is the standard deviation over folds); test actors {meta['test_actors']} "
            "were never seen by a trial"
        )
        lines.append(f"- search space: `{meta['space_file']}`, base recipe `{meta['recipe']}`")
    params = [k for k in param_keys(rows) if len({_fmt(r["params"].get(k)) for r in rows}) > 1]
    lines += ["", f"## Top {min(top, len(rows))} configurations", ""]
    head = ["rank", "trial", metric, "± std", "folds", "epochs", "status", *params]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for rank, row in enumerate(ranked(rows, metric)[:top], start=1):
        folds = sorted((k for k in row if k.startswith("uar_fold_")), key=lambda k: int(k[9:]))
        cells = [
            str(rank),
            row["trial_id"],
            _fmt(row.get(metric)),
            _fmt(row.get(f"{metric}_std")),
            " ".join(_fmt(row[k]) for k in folds),
            f"{row['epochs']}/{row['epochs_planned']}",
            row["status"] + (" (stopped early)" if row["stopped_early"] else ""),
            *(_fmt(row["params"].get(k)) for k in params),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if best_result and best_result.get("test"):
        test, cv = best_result["test"], best_result["cv"]
        lines += [
            "",
            "## Best configuration, retrained on all non-test actors",
            "",
            f"- trial {best_result['trial_id']}: fold {metric} "
            f"{_fmt(cv.get(metric))} ± {_fmt(cv.get(metric + '_std'))}",
            f"- test actors {best_result['test_actors']}: UAR {_fmt(test['uar'])}, accuracy "
            f"{_fmt(test['accuracy'])}, macro-F1 {_fmt(test['macro_f1'])} (n={test['n']})",
            f"- checkpoint: `{test.get('checkpoint')}`",
        ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# Plots (matplotlib's Agg canvas, no pyplot state)


def params_plot(rows: list[dict], metric: str, space: dict | None) -> bytes:
    """The score of every trial against each hyperparameter that varied (error bar: fold std)."""
    scored = [r for r in rows if number(r.get(metric)) is not None]
    keys = [k for k in param_keys(scored) if len({str(r["params"].get(k)) for r in scored}) > 1]
    keys = keys or ["trial"]
    cols = min(3, len(keys))
    nrows = math.ceil(len(keys) / cols)
    fig = figure(4.2 * cols, 3.2 * nrows, dpi=110)
    for i, key in enumerate(keys):
        ax = fig.add_subplot(nrows, cols, i + 1)
        y = np.array([r[metric] for r in scored], dtype=float)
        err = np.array([number(r.get(f"{metric}_std")) or 0.0 for r in scored])
        values = [r["trial_id"] if key == "trial" else r["params"].get(key) for r in scored]
        if all(number(v) is not None and not isinstance(v, bool) for v in values):
            x = np.array(values, dtype=float)
            spec = (space or {}).get(key)
            if isinstance(spec, dict) and spec.get("type") == "loguniform":
                from matplotlib.ticker import NullFormatter

                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap otherwise
        else:
            labels = sorted({str(v) for v in values})
            x = np.array([labels.index(str(v)) for v in values], dtype=float)
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        early = np.array([r["stopped_early"] for r in scored], dtype=bool)
        for mask, colour, name in ((~early, "tab:blue", "ran all epochs"), (early, "tab:orange",
                                   "stopped early")):  # fmt: skip
            if mask.any():
                ax.errorbar(x[mask], y[mask], yerr=err[mask], fmt="o", color=colour, label=name,
                            capsize=3, alpha=0.8)  # fmt: skip
        ax.set_xlabel(key)
        ax.set_ylabel(f"mean fold {metric}")
        if i == 0:
            ax.legend(fontsize=7)
    return png(fig)


def curves_plot(rows: list[dict], metric: str, top: int) -> bytes:
    """Mean fold UAR against epoch for the top trials, shaded by the fold standard deviation."""
    fig = figure(6.5, 4.2, dpi=110)
    ax = fig.add_subplot()
    for row in ranked(rows, metric)[:top]:
        history = [h for h in row["history"] if number(h.get("uar")) is not None]
        if not history:
            continue
        epoch = np.array([h["epoch"] for h in history], dtype=float)
        uar = np.array([h["uar"] for h in history], dtype=float)
        std = np.array([number(h.get("uar_std")) or 0.0 for h in history])
        (line,) = ax.plot(epoch, uar, marker="o", label=f"{row['trial_id']} ({_fmt(row[metric])})")
        ax.fill_between(epoch, uar - std, uar + std, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean validation UAR over folds")
    ax.set_title(f"learning curves of the top {top} trials", fontsize=10)
    ax.legend(fontsize=7)
    return png(fig)


def spread_plot(rows: list[dict], metric: str, limit: int = 20) -> bytes:
    """Every fold's UAR of each trial (best first): how much the score depends on the actors."""
    shown = [r for r in ranked(rows, metric) if any(k.startswith("uar_fold_") for k in r)][:limit]
    fig = figure(max(5.0, 0.5 * len(shown) + 2), 4.0, dpi=110)
    ax = fig.add_subplot()
    for i, row in enumerate(shown):
        folds = [row[k] for k in row if k.startswith("uar_fold_")]
        ax.scatter(np.full(len(folds), i), folds, color="tab:gray", s=18)
        ax.scatter([i], [row["uar"]], color="tab:red", marker="_", s=300)
    ax.set_xticks(range(len(shown)), [r["trial_id"] for r in shown], rotation=60, ha="right",
                  fontsize=7)  # fmt: skip
    ax.set_ylabel("validation UAR (grey: folds, red: mean)")
    ax.set_title("fold spread per trial, best first", fontsize=10)
    return png(fig)


# ----------------------------------------------------------------------------------------------


def run(cfg: AnalyseConfig) -> AnalyseResult:
    """Write the tables, plots and best configuration of ``cfg.experiment``.

    Raises:
        FileNotFoundError: no experiment folder.
        ValueError: the folder holds no Tune experiment.
    """

    experiment = cfg.experiment.rstrip("/")
    meta = read_meta(experiment)
    metric = (meta or {}).get("metric", "uar")
    rows = trial_rows(load_experiment(experiment), meta)
    out = cfg.out or storage.join(experiment, "analysis")
    best_uri = storage.join(experiment, BEST_RESULT_FILE)
    best_result = json.loads(storage.read_text(best_uri)) if storage.exists(best_uri) else None

    files = {
        TRIALS_FILE: trials_csv(rows, metric).encode(),
        SUMMARY_FILE: summary_md(experiment, rows, meta, best_result, cfg.top).encode(),
        PARAMS_PLOT: params_plot(rows, metric, (meta or {}).get("space")),
        CURVES_PLOT: curves_plot(rows, metric, cfg.top),
        SPREAD_PLOT: spread_plot(rows, metric),
    }
    best = best_row(rows, metric)
    if best is not None and meta is not None:
        text = best_config_text(best["params"], meta, meta["tune"]["data"])
        files[BEST_CONFIG_FILE] = text.encode()
    elif meta is None:
        log.warning("%s was not made by knd tune: no %s written", experiment, BEST_CONFIG_FILE)
    for name, data in files.items():
        storage.write_bytes(storage.join(out, name), data)
    reports = write_analysis_report(out, files, SUMMARY_FILE)
    log.info(
        "%d trials, %d stopped early; best %s: %s %s -> %s",
        len(rows), sum(r["stopped_early"] for r in rows),
        best["trial_id"] if best else None, metric, _fmt(best[metric]) if best else "-", out,
    )  # fmt: skip
    return AnalyseResult(
        out=out,
        files=[storage.join(out, name) for name in files] + reports,
        num_trials=len(rows),
        best=best,
        exit_code=0 if best is not None else 1,
    )
