"""The floors of ``knd/``, read from the imports (imports inside functions count too).

- ``knd/stages/`` holds the commands' stages (the command table names them) and nothing else;
  a stage never imports another stage, and nothing below the stages imports one.
- ``knd/audio/``, ``knd/data/`` and ``knd/config/`` never import Ray: they are the pure core
  that Ray maps over data.
- No module imports itself back through others.
"""

from __future__ import annotations

import ast
from pathlib import Path

import knd
from knd.config.commands import COMMANDS

PACKAGE = Path(knd.__file__).parent
STAGES = {command.stage for command in COMMANDS.values()}
ENTRY_POINTS = {"knd.cli", "knd.docs"}
RAY_FREE = ("knd.audio.", "knd.data.", "knd.config.")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path) -> set[str]:
    """Every dotted name one source file imports (``from a import b`` names ``a`` and ``a.b``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def module_imports(path: Path, modules: set[str]) -> set[str]:
    """The ``knd`` modules that one source file imports (``from knd import x`` names ``knd.x``)."""
    return imported_names(path) & modules


def sources() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def import_graph() -> dict[str, set[str]]:
    paths = sources()
    packages = {name for name, path in paths.items() if path.name == "__init__.py"}
    modules = set(paths) - packages
    return {name: module_imports(paths[name], modules) - {name} for name in modules}


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


def test_the_stages_folder_holds_exactly_the_commands_stages():
    in_folder = {name for name in import_graph() if name.startswith("knd.stages.")}
    assert in_folder == STAGES, (sorted(in_folder - STAGES), sorted(STAGES - in_folder))


def test_no_stage_imports_another_stage():
    graph = import_graph()
    bad = sorted(f"{m} -> {d}" for m in STAGES for d in graph[m] if d in STAGES)
    assert not bad, f"stages import stages (share through the library layer): {bad}"


def test_nothing_below_the_stages_imports_a_stage():
    graph = import_graph()
    library = set(graph) - STAGES - ENTRY_POINTS
    bad = sorted(f"{m} -> {d}" for m in library for d in graph[m] if d in STAGES)
    assert not bad, f"library modules import stages: {bad}"


def test_the_pure_core_never_imports_ray():
    paths = sources()
    bad = sorted(
        f"{name} -> {imported}"
        for name, path in paths.items()
        if name.startswith(RAY_FREE) or f"{name}." in RAY_FREE
        for imported in imported_names(path)
        if imported == "ray" or imported.startswith("ray.")
    )
    assert not bad, f"audio/, data/ and config/ import Ray: {bad}"


def test_no_import_cycles():
    assert find_cycle(import_graph()) is None, find_cycle(import_graph())


def test_the_checks_catch_what_they_look_for(tmp_path):
    """The rule is only as good as its parser: a stage import, a Ray import and a cycle must be
    found, and a module's name must follow its folder."""
    source = tmp_path / "x.py"
    source.write_text(
        "import knd.stages.train\nfrom knd.stages import score\n\n"
        "def f():\n    from knd.stages.tune import run\n    from ray import data\n"
    )
    stages = {"knd.stages.train", "knd.stages.score", "knd.stages.tune", "knd.config"}
    assert module_imports(source, stages) == stages - {"knd.config"}
    assert {"ray", "ray.data"} <= imported_names(source)
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert module_name(PACKAGE / "audio" / "features.py") == "knd.audio.features"
    assert module_name(PACKAGE / "audio" / "__init__.py") == "knd.audio"


def test_the_score_driver_and_the_retry_ledger_import_no_torch():
    """Importing torch costs about 3 s on 2 cores: ``knd score``'s driver (which reads a
    checkpoint's ``meta.json`` and aggregates rows) and the ledger actor's process need none of it;
    only the scoring actors do. A module-level ``import torch`` on their path puts it back."""
    import subprocess
    import sys

    code = (
        "import sys, knd.cli, knd.stages.score, knd.learning.checkpoint, knd.runtime.tasks\n"
        "print(sorted(m for m in ('torch', 'torchaudio', 'torchvision') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout

    # The ledger actor's process imports the retry module alone: no pandas, no feature code.
    code = (
        "import sys, knd.runtime.tasks\n"
        "print(sorted(m for m in sys.modules if m in ('pandas', 'pyarrow', 'soundfile', 'torch')"
        " or m.startswith(('knd.audio', 'knd.data', 'knd.stages'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout
