"""No function in ``knd/`` is longer than a screen: a long function is several steps unnamed."""

from __future__ import annotations

import ast
from pathlib import Path

import knd

PACKAGE = Path(knd.__file__).parent
MAX_LINES = 60


def function_lengths() -> dict[str, int]:
    """``{"module.py:function": lines}`` of every function and method in ``knd/``."""
    lengths = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                name = path.relative_to(PACKAGE).as_posix()
                key, lines = f"{name}:{node.name}", node.end_lineno - node.lineno + 1
                lengths[key] = max(lengths.get(key, 0), lines)  # same-named methods: the longest
    return lengths


def test_no_function_is_over_sixty_lines():
    long = {name for name, lines in function_lengths().items() if lines > MAX_LINES}
    assert long == set(), f"over {MAX_LINES} lines: {sorted(long)}"
