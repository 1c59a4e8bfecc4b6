"""The two floors of ``knd/``: stages never import stages, the library never imports a stage, and
no module imports itself back through others. Imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

import knd
from knd.cli import COMMANDS

PACKAGE = Path(knd.__file__).parent
STAGES = {module for module, _ in COMMANDS.values()}


def module_imports(path: Path, modules: set[str]) -> set[str]:
    """The ``knd`` modules that one source file imports (``from knd import x`` names ``knd.x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found & modules


def import_graph() -> dict[str, set[str]]:
    paths = {f"knd.{p.stem}": p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    return {name: module_imports(path, set(paths)) - {name} for name, path in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path of modules, or None."""
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return [*trail[trail.index(nxt) :], nxt] if nxt in trail else [node, nxt]
            if nxt not in state and (cycle := visit(nxt, [*trail, nxt])):
                return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_every_cli_command_is_a_module_of_the_package():
    graph = import_graph()
    assert set(graph) >= STAGES, sorted(STAGES - set(graph))


def test_no_stage_imports_another_stage():
    graph = import_graph()
    bad = sorted(f"{m} -> {d}" for m in STAGES for d in graph[m] if d in STAGES)
    assert not bad, f"stages import stages (share through the library layer): {bad}"


def test_the_library_layer_never_imports_a_stage():
    graph = import_graph()
    library = set(graph) - STAGES - {"knd.cli"}
    bad = sorted(f"{m} -> {d}" for m in library for d in graph[m] if d in STAGES)
    assert not bad, f"library modules import stages: {bad}"


def test_no_import_cycles():
    assert find_cycle(import_graph()) is None, find_cycle(import_graph())


def test_the_checks_catch_what_they_look_for(tmp_path):
    """The rule is only as good as its parser: a stage import and a cycle must be found."""
    source = tmp_path / "x.py"
    source.write_text(
        "import knd.train\nfrom knd import score\n\ndef f():\n    from knd.tune import run\n"
    )
    found = module_imports(source, {"knd.train", "knd.score", "knd.tune", "knd.config"})
    assert found == {"knd.train", "knd.score", "knd.tune"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_score_driver_and_the_retry_ledger_import_no_torch():
    """Importing torch costs about 3 s on 2 cores: ``knd score``'s driver (which reads a
    checkpoint's ``meta.json`` and aggregates rows) and the ledger actor's process need none of it;
    only the scoring actors do. A module-level ``import torch`` on their path puts it back."""
    import subprocess
    import sys

    code = (
        "import sys, knd.cli, knd.score, knd.checkpoint, knd.retry\n"
        "print(sorted(m for m in ('torch', 'torchaudio', 'torchvision') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout
