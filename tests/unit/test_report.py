"""The run and analysis reports: what they contain and that the HTML stands alone."""

from __future__ import annotations

import base64
import json
import re

from knd.learning.metrics import metrics_report, split_metrics
from knd.learning.report import (
    CONFUSION_FILE,
    CURVES_FILE,
    METRICS_FILE,
    REPORT_HTML,
    REPORT_MD,
    confusion_figure,
    curves_figure,
    learning_curves,
    write_analysis_report,
    write_report,
)

LABELS = ["neutral", "happy", "sad"]
TARGETS = [0, 0, 0, 1, 1, 2]
PREDS = [0, 0, 1, 1, 1, 0]
ACTORS = [1, 1, 2, 2, 2, 1]
HISTORY = [
    {"epoch": 1, "train_loss": 1.1, "val_loss": 1.0, "val_uar": 0.40, "epoch_s": 3.0},
    {"epoch": 2, "train_loss": 0.8, "val_loss": 0.9, "val_uar": 0.55, "epoch_s": 2.5},
]


def _report():
    test = split_metrics(PREDS, TARGETS, 3, actors=ACTORS)
    return metrics_report(
        LABELS, test=test, val=test, test_actors=(1, 2), best_epoch=2, recipe="cpu_small"
    )


def test_run_report_files(tmp_path):
    report = _report()
    config = {"data": "/x/features", "optim": {"lr": 0.003}}
    written = write_report(str(tmp_path), report, config=config, history=HISTORY, title="t")
    names = [p.rsplit("/", 1)[-1] for p in written]
    assert names == [METRICS_FILE, CONFUSION_FILE, CURVES_FILE, REPORT_MD, REPORT_HTML]
    assert json.loads((tmp_path / METRICS_FILE).read_text()) == json.loads(json.dumps(report))
    for png in (CONFUSION_FILE, CURVES_FILE):
        assert (tmp_path / png).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    md = (tmp_path / REPORT_MD).read_text()
    assert "| test | 6 | 0.556 | 0.667 |" in md  # headline: clips, UAR, accuracy
    assert "| happy | 2 | 1.000 | 0.667 | 0.800 |" in md  # per emotion: recall, precision, F1
    assert "| 1 | 0.667 |" in md and "| 2 | 0.667 |" in md  # per actor
    assert f"]({CONFUSION_FILE})" in md and f"]({CURVES_FILE})" in md
    assert "lr: 0.003" in md  # the exact config

    page = (tmp_path / REPORT_HTML).read_text()
    # self-contained: every image is inline, nothing is fetched from elsewhere
    assert not re.search(r'src="(?!data:)', page) and "<link" not in page
    inline = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(inline) == 2
    assert base64.b64decode(inline[0]) == (tmp_path / CONFUSION_FILE).read_bytes()
    assert "<td>happy</td>" in page and "lr: 0.003" in page


def test_a_report_without_history_has_no_curves_and_escapes_html(tmp_path):
    report = _report() | {"checkpoint": "<script>x</script>"}
    write_report(str(tmp_path), report)
    assert not (tmp_path / CURVES_FILE).exists()
    page = (tmp_path / REPORT_HTML).read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_a_run_without_validation_has_no_empty_validation_panel():
    without = [{"epoch": e, "train_loss": 1.0 / e} for e in (1, 2, 3)]
    assert [ax.get_title() for ax in learning_curves(without, best_epoch=3).axes] == ["loss"]
    assert [ax.get_title() for ax in learning_curves(HISTORY).axes] == ["loss", "validation UAR"]


def test_figures_survive_a_class_with_no_clips_and_a_resumed_history():
    assert confusion_figure([[3, 0], [0, 0]], ["a", "b"], "empty row").startswith(b"\x89PNG")
    resumed = [*HISTORY, {"epoch": 2, "train_loss": 0.7}, {"epoch": 3, "val_uar": 0.6}]
    assert curves_figure(resumed, best_epoch=3).startswith(b"\x89PNG")


def test_analysis_report_shows_every_plot_and_links_the_rest(tmp_path):
    png = confusion_figure([[1]], ["a"], "x")
    summary = (
        "# Tune experiment `e`\n\n- trials: 2\n\n## Top\n\n| rank | uar |\n|---|---|\n| 1 | 0.5 |\n"
    )
    files = {"summary.md": summary.encode(), "a_plot.png": png, "trials.csv": b"x\n"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    written = write_analysis_report(str(tmp_path), files, "summary.md")
    assert [p.rsplit("/", 1)[-1] for p in written] == [REPORT_MD, REPORT_HTML]
    md = (tmp_path / REPORT_MD).read_text()
    assert md.startswith("# Tune experiment `e`") and "](a_plot.png)" in md and "`trials.csv`" in md
    page = (tmp_path / REPORT_HTML).read_text()
    assert page.count("data:image/png;base64,") == 1
    assert "<td>0.5</td>" in page and "<li>trials: 2</li>" in page
