"""MkDocs hook: fill the generated parts of the site from the code (see knd/docs.py)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the knd of this tree, also without an editable install
    sys.path.insert(0, str(REPO))


def on_page_markdown(markdown: str, page, config, files) -> str:
    from knd.docs import BENCH_MARKER, CLI_MARKER, benchmarks_markdown, cli_reference, fill_defaults

    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    if BENCH_MARKER in markdown:
        markdown = markdown.replace(BENCH_MARKER, benchmarks_markdown(REPO / "bench" / "results"))
    return fill_defaults(markdown)
