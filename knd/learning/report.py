"""The files a person reads after a run: metrics.json, figures, report.md and report.html.

:mod:`knd.learning.metrics` computes numbers; this module turns them into files. ``knd train`` and
``knd evaluate`` call :func:`write_report`, which writes beside ``metrics.json``:

- ``confusion.png``: the confusion matrix, rows normalised to recall, counts in each cell;
- ``curves.png``: train and validation loss and validation UAR per epoch (from ``history.jsonl``);
- ``report.md``: headline metrics, the confusion matrix, per-emotion and per-actor tables, the
  learning curves and the exact config, with the figures linked as files beside it;
- ``report.html``: the same report in one self-contained file (figures inlined as base64), to
  open in a browser or attach to a message.

``knd analyse`` calls :func:`write_analysis_report`, which wraps its ``summary.md`` and plots the
same way. Both documents are built from one list of blocks, so they never say different things.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import yaml

from knd.data import storage
from knd.learning.metrics import per_class_metrics
from knd.runtime.console import metrics_headline

if TYPE_CHECKING:  # matplotlib is imported where a figure is drawn, not with the module
    from matplotlib.figure import Figure

METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion.png"
CURVES_FILE = "curves.png"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
HISTORY_FILE = "history.jsonl"


# ----------------------------------------------------------------------------------------------
# Figures (matplotlib's Agg canvas, without pyplot's global backend state)


def figure(width: float, height: float, dpi: int = 120):
    """A Matplotlib figure on the Agg canvas (no display, no global pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def png(fig) -> bytes:
    """The PNG bytes of ``fig``, laid out tight."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def confusion_figure(
    confusion: Sequence[Sequence[int]], labels: Sequence[str], title: str
) -> bytes:
    """A PNG of the confusion matrix with rows normalised to recall and counts in each cell."""
    counts = np.asarray(confusion, dtype=np.int64)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    k = len(labels)
    fig = figure(1.0 + 0.85 * k, 0.6 + 0.75 * k)
    ax = fig.add_subplot()
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(k):
        for j in range(k):
            colour = "white" if rates[i, j] > 0.55 else "black"
            text = f"{rates[i, j]:.2f}\n({counts[i, j]})"
            ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=8)
    ax.set_xticks(range(k), labels, rotation=45, ha="right")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (row-normalised)")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return png(fig)


def curves_figure(history: Sequence[dict], best_epoch: int | None = None) -> bytes:
    """A PNG of :func:`learning_curves`."""
    return png(learning_curves(history, best_epoch))


def learning_curves(history: Sequence[dict], best_epoch: int | None = None) -> Figure:
    """Learning curves: train/val loss (left) and validation UAR (right) per epoch.

    A run without validation actors has no validation UAR: it gets the loss panel alone, not an
    empty second one.

    Args:
        history: one record per epoch (``history.jsonl``), with ``epoch`` and any of
            ``train_loss``, ``val_loss``, ``val_uar``. A resumed run can report an epoch twice;
            the later record wins.
        best_epoch: marked with a dashed line (the epoch whose checkpoint was kept).

    Returns:
        The figure, one panel per kind of curve.
    """
    from matplotlib.ticker import MaxNLocator

    by_epoch = {int(h["epoch"]): h for h in history if "epoch" in h}
    epochs = sorted(by_epoch)
    panels = [(("train_loss", "val_loss"), "loss")]
    if any(by_epoch[e].get("val_uar") is not None for e in epochs):
        panels.append((("val_uar",), "validation UAR"))
    fig = figure(4.5 * len(panels), 3.4, dpi=110)
    for i, (keys, title) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, len(panels), i)
        for key in keys:
            points = [(e, by_epoch[e][key]) for e in epochs if by_epoch[e].get(key) is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                label = key.replace("_", " ").replace("uar", "UAR")
                ax.plot(xs, ys, marker="o", markersize=3, label=label)
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1, label="kept epoch")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return fig


# ----------------------------------------------------------------------------------------------
# One document, two renderings


@dataclass(frozen=True)
class Block:
    """A piece of a report: ``kind`` is heading, text, bullets, table, image, code or markdown
    (Markdown text put in as it is)."""

    kind: str
    text: str = ""
    rows: tuple = ()
    data: bytes = b""


def heading(text: str) -> Block:
    return Block("heading", text)


def text(value: str) -> Block:
    return Block("text", value)


def bullets(*items: str) -> Block:
    return Block("bullets", rows=tuple(items))


def table(head: Sequence[str], rows: Sequence[Sequence]) -> Block:
    return Block("table", rows=(tuple(head), *(tuple(_cell(c) for c in r) for r in rows)))


def image(name: str, png: bytes, caption: str) -> Block:
    return Block("image", name, rows=(caption,), data=png)


def code(value: str, language: str = "") -> Block:
    return Block("code", value, rows=(language,))


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)


def render_markdown(title: str, blocks: Sequence[Block]) -> str:
    """Markdown with images linked as files beside the report (``![caption](name)``)."""
    out = [f"# {title}", ""]
    for b in blocks:
        if b.kind == "heading":
            out += [f"## {b.text}", ""]
        elif b.kind == "text":
            out += [b.text, ""]
        elif b.kind == "bullets":
            out += [f"- {item}" for item in b.rows] + [""]
        elif b.kind == "table":
            head, *rows = b.rows
            out.append("| " + " | ".join(head) + " |")
            out.append("|" + "---|" * len(head))
            out += ["| " + " | ".join(r) + " |" for r in rows]
            out.append("")
        elif b.kind == "image":
            out += [f"![{b.rows[0]}]({b.text})", ""]
        elif b.kind == "code":
            out += [f"```{b.rows[0]}", b.text.rstrip("\n"), "```", ""]
        elif b.kind == "markdown":
            out += [b.text.rstrip("\n"), ""]
    return "\n".join(out)


_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;"
    "color:#222}table{border-collapse:collapse;margin:.5rem 0}th,td{border:1px solid #ccc;"
    "padding:.2rem .6rem;text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}"
    "pre{background:#f6f6f6;padding:.8rem;overflow-x:auto}img{max-width:100%}"
)


def _inline_md(value: str) -> str:
    """Escape for HTML, then the one inline markup the reports use: `code` spans."""
    parts = html.escape(value).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def render_html(title: str, blocks: Sequence[Block]) -> str:
    """One self-contained HTML page: images inlined as base64 data URIs, no external file."""
    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{_inline_md(title)}</h1>",
    ]
    for b in blocks:
        if b.kind == "heading":
            out.append(f"<h2>{_inline_md(b.text)}</h2>")
        elif b.kind == "text":
            out.append(f"<p>{_inline_md(b.text)}</p>")
        elif b.kind == "bullets":
            out.append("<ul>" + "".join(f"<li>{_inline_md(i)}</li>" for i in b.rows) + "</ul>")
        elif b.kind == "table":
            head, *rows = b.rows
            out.append("<table><tr>" + "".join(f"<th>{_inline_md(h)}</th>" for h in head))
            for r in rows:
                out.append("<tr>" + "".join(f"<td>{_inline_md(c)}</td>" for c in r) + "</tr>")
            out.append("</table>")
        elif b.kind == "image":
            data = base64.b64encode(b.data).decode("ascii")
            caption = html.escape(b.rows[0])
            out.append(
                f'<figure><img alt="{caption}" src="data:image/png;base64,{data}">'
                f"<figcaption>{caption} (<code>{html.escape(b.text)}</code>)</figcaption></figure>"
            )
        elif b.kind == "code":
            out.append(f"<pre><code>{html.escape(b.text)}</code></pre>")
        elif b.kind == "markdown":
            out.append(_markdown_to_html(b.text))
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _markdown_to_html(source: str) -> str:
    """The Markdown subset of ``knd analyse``'s ``summary.md``: headings, lists, tables."""
    out: list[str] = []
    lines = source.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 1, 6)  # the page title is the h1
            out.append(f"<h{level}>{_inline_md(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline_md(lines[i][2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(set(c) <= {"-", ":"} for c in cells):
                    tag = "th" if not rows else "td"
                    rows.append(
                        "<tr>" + "".join(f"<{tag}>{_inline_md(c)}</{tag}>" for c in cells) + "</tr>"
                    )
                i += 1
            out.append("<table>" + "".join(rows) + "</table>")
            continue
        elif line.strip():
            out.append(f"<p>{_inline_md(line)}</p>")
        i += 1
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------
# The run report (train, evaluate)


def run_blocks(
    report: dict,
    split: str = "test",
    config: dict | None = None,
    history: Sequence[dict] | None = None,
) -> tuple[list[Block], dict[str, bytes]]:
    """The blocks of a run's report and the figures it links, ``{file name: png}``.

    Args:
        report: the ``metrics.json`` document (:func:`knd.learning.metrics.metrics_report`).
        split: the part whose confusion matrix and tables are shown (the other is summarised).
        config: the exact config of the run, shown as YAML.
        history: one record per epoch; gives ``curves.png`` when it has any.
    """
    blocks = _headline_blocks(report)
    figures: dict[str, bytes] = {}
    part = report.get(split)
    if part:
        title = f"{split}: {metrics_headline(part)}"
        picture = confusion_figure(part["confusion"], report["labels"], title)
        figures[CONFUSION_FILE] = picture
        alt = f"{split} confusion"
        blocks += [heading("Confusion matrix"), image(CONFUSION_FILE, picture, alt)]
        blocks += _breakdown_blocks(part, report["labels"])
    if history:
        picture = curves_figure(history, report.get("best_epoch"))
        figures[CURVES_FILE] = picture
        blocks += [heading("Learning curves"), image(CURVES_FILE, picture, "loss and val UAR")]
        blocks.append(
            table(
                ["epoch", "train loss", "val loss", "val UAR", "epoch s"],
                [[h.get("epoch"), h.get("train_loss"), h.get("val_loss"), h.get("val_uar"),
                  h.get("epoch_s")] for h in history],
            )
        )  # fmt: skip
    if config is not None:
        blocks += [heading("Config"), code(yaml.safe_dump(config, sort_keys=False), "yaml")]
    return blocks, figures


def _headline_blocks(report: dict) -> list[Block]:
    """The headline table of every split, the run's facts and what UAR means."""
    blocks: list[Block] = [heading("Headline metrics")]
    rows = []
    for name in ("test", "val"):
        part = report.get(name)
        if part:
            actors = report.get(f"{name}_actors")
            rows.append([name, part["n"], part["uar"], part["accuracy"], part["macro_f1"],
                         " ".join(map(str, actors)) if actors else ""])  # fmt: skip
    blocks.append(table(["split", "clips", "UAR", "accuracy", "macro-F1", "actors"], rows))
    facts = [
        f"{key.replace('_', ' ')}: `{report[key]}`"
        for key in ("recipe", "label_set", "best_epoch", "epoch", "checkpoint", "data")
        if report.get(key) is not None
    ]
    if report.get("feature_groups"):
        facts.append(f"feature groups: `{', '.join(report['feature_groups'])}`")
    if facts:
        blocks.append(bullets(*facts))
    blocks.append(
        text(
            "UAR (unweighted average recall) is the headline: the mean of the per-emotion "
            "recalls, so a model that favours the larger classes gains nothing from it."
        )
    )
    return blocks


def _breakdown_blocks(part: dict, labels: Sequence[str]) -> list[Block]:
    """Per-emotion and per-actor tables of one split."""
    per_class = per_class_metrics(part["confusion"])
    blocks = [
        heading("Per emotion"),
        table(
            ["emotion", "clips", "recall", "precision", "F1"],
            [[lab, c["n"], c["recall"], c["precision"], c["f1"]]
             for lab, c in zip(labels, per_class, strict=True)],
        ),
    ]  # fmt: skip
    if part.get("per_corpus"):
        blocks.append(heading("Per corpus"))
        rows = [[name, c["n"], c["accuracy"], c["uar"], c["macro_f1"]]
                for name, c in part["per_corpus"].items()]  # fmt: skip
        blocks.append(table(["corpus", "clips", "accuracy", "UAR", "macro-F1"], rows))
    if part.get("per_actor"):
        blocks.append(heading("Per actor"))
        per_actor = sorted(part["per_actor"].items(), key=lambda kv: int(kv[0]))
        blocks.append(table(["actor", "accuracy"], [[a, acc] for a, acc in per_actor]))
    return blocks


def write_report(
    folder: str,
    report: dict,
    split: str = "test",
    *,
    config: dict | None = None,
    history: Sequence[dict] | None = None,
    title: str | None = None,
) -> list[str]:
    """Write ``metrics.json``, the figures, ``report.md`` and ``report.html`` into ``folder``.

    Returns:
        The written files' paths (``metrics.json`` first, ``report.html`` last).
    """
    title = title or f"knd report: {report.get('recipe') or report.get('checkpoint') or folder}"
    blocks, figures = run_blocks(report, split, config, history)
    files = {METRICS_FILE: (json.dumps(report, indent=2) + "\n").encode()}
    files |= figures
    files[REPORT_MD] = render_markdown(title, blocks).encode()
    files[REPORT_HTML] = render_html(title, blocks).encode()
    written = []
    for name, data in files.items():
        uri = storage.join(folder, name)
        storage.write_bytes(uri, data)
        written.append(uri)
    return written


def read_history(run_path: str) -> list[dict]:
    """The epoch records of ``<run_path>/history.jsonl`` (none if the file does not exist)."""
    uri = storage.join(run_path, HISTORY_FILE)
    if not storage.exists(uri):
        return []
    return [json.loads(line) for line in storage.read_text(uri).splitlines() if line.strip()]


def append_history(run_path: str, record: dict) -> None:
    """Add one epoch's record (with its ``epoch``) to ``<run_path>/history.jsonl``.

    After a recovery from a checkpoint the epochs after it run again: their new records replace
    the old ones (every record from ``record["epoch"]`` on is dropped), so every epoch appears
    once, in order.
    """
    kept = [h for h in read_history(run_path) if h.get("epoch", -1) < record["epoch"]]
    text = "".join(json.dumps(h) + "\n" for h in [*kept, record])
    storage.write_text(storage.join(run_path, HISTORY_FILE), text)


# ----------------------------------------------------------------------------------------------
# The analysis report (knd analyse)


def write_analysis_report(folder: str, files: dict[str, bytes], summary_file: str) -> list[str]:
    """``report.md`` and ``report.html`` of ``knd analyse``: its summary with every plot shown.

    Args:
        folder: the analysis folder (the plots are already there).
        files: what ``knd analyse`` wrote, ``{name: bytes}``; PNGs are shown, the rest linked.
        summary_file: the name of the Markdown summary in ``files``, the report's body.
    """
    summary = files[summary_file].decode()
    first, _, body = summary.partition("\n")
    title = first.lstrip("# ").strip() or "knd analysis"
    blocks = [Block("markdown", body.strip("\n"))]
    pngs = {n: d for n, d in files.items() if n.endswith(".png")}
    if pngs:
        blocks.append(heading("Plots"))
        blocks += [image(n, d, n.removesuffix(".png").replace("_", " ")) for n, d in pngs.items()]
    others = [n for n in files if not n.endswith(".png")]
    blocks += [heading("Files"), bullets(*(f"`{n}`" for n in others))]
    written = []
    for name, doc in ((REPORT_MD, render_markdown(title, blocks)),
                      (REPORT_HTML, render_html(title, blocks))):  # fmt: skip
        uri = storage.join(folder, name)
        storage.write_text(uri, doc)
        written.append(uri)
    return written
