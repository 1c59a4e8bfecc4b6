"""Pages of the documentation site generated at build time, so they cannot drift from the code.

``docs/hooks.py`` (an MkDocs hook) replaces three kinds of marker in the Markdown of the site:

- ``<!-- knd:cli-reference -->`` with :func:`cli_reference`: every command, and every key by its
  full dotted name as typed on the command line, with its type, range, default and help text, from
  :func:`knd.config.keys.command_keys` (what ``knd <command> --help`` prints);
- ``<!-- knd:benchmarks -->`` with :func:`benchmarks_markdown`: every ``bench/results/*.json``
  as tables, with the machine it was measured on;
- ``<!-- knd:default COMMAND KEY -->`` (e.g. ``<!-- knd:default train split.val_speakers -->``)
  with that key's default as ``knd COMMAND --help`` shows it (:func:`fill_defaults`), so prose
  that states a default never types it by hand.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from knd.config.commands import COMMANDS
from knd.config.keys import Key, command_keys

CLI_MARKER = "<!-- knd:cli-reference -->"
BENCH_MARKER = "<!-- knd:benchmarks -->"
DEFAULT_MARKER = re.compile(r"<!-- knd:default (\w+) ([\w.]+) -->")


def _cell(text: str) -> str:
    """``text`` safe inside a Markdown table cell (a ``|`` would start a new column)."""
    return text.replace("|", "\\|")


def _default(key: Key) -> str:
    return "**required**" if key.required else f"`{key.default_text}`"  # a `|` inside code is text


def _type(key: Key) -> str:
    return _cell(key.type) + (f" (`{key.bounds}`)" if key.bounds else "")


def cli_reference() -> str:
    """Markdown: one section per command, one table row per key
    (:func:`knd.config.keys.command_keys`, the same keys and defaults as ``knd <command> --help``).
    """
    out = []
    for command, entry in COMMANDS.items():
        keys = command_keys(command)
        out += [f"## `knd {command}`", "", entry.help[0].upper() + entry.help[1:] + ".", ""]
        out += [f"Defaults: `configs/{command}.yaml`."]
        if getattr(entry.schema, "applies_recipe", False):
            recipe = next(k.default for k in keys if k.name == "recipe")
            out[-1] += (
                " A recipe (`configs/recipes/<recipe>.yaml`) is applied over them; the defaults"
                f" below are a plain run's, with the default recipe `{recipe}` applied."
            )
        example = " ".join(f"{k.name}=..." for k in keys if k.required)
        out += ["", "```bash", f"knd {command} {example}".rstrip(), "```", ""]
        out += ["| key | type | default | help |", "|---|---|---|---|"]
        for key in keys:
            out.append(f"| `{key.name}` | {_type(key)} | {_default(key)} | {_cell(key.help)} |")
        out.append("")
    return "\n".join(out)


def default_text(command: str, key: str) -> str:
    """The default of ``knd <command> <key>=...`` as ``--help`` shows it.

    Raises:
        KeyError: no such command or key (a page that names a removed key fails the build).
    """
    if command not in COMMANDS:
        raise KeyError(f"docs: no command {command!r}")
    keys = {k.name: k for k in command_keys(command)}
    if key not in keys:
        raise KeyError(f"docs: knd {command} has no key {key!r}")
    return keys[key].default_text


def fill_defaults(markdown: str) -> str:
    """Every ``<!-- knd:default COMMAND KEY -->`` of ``markdown`` replaced by `` `default` ``."""
    return DEFAULT_MARKER.sub(lambda m: f"`{default_text(m[1], m[2])}`", markdown)


# ----------------------------------------------------------------------------------------------
# Benchmarks


def _leaves(tree: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(tree, dict):
        rows: list[tuple[str, Any]] = []
        for key, value in tree.items():
            rows += _leaves(value, f"{prefix}{key}.")
        return rows
    return [(prefix[:-1], tree)]


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        if len(value) > 8:
            return f"{len(value)} values"
        return ", ".join(_value(v) for v in value)
    return "—" if value is None else str(value)


MACHINE_KEYS = ("machine", "machine_cpus", "num_cpus", "device", "threads", "load_average")


def benchmark_section(name: str, result: dict) -> str:
    """One result file as Markdown: its command, its machine, then every figure in a table."""
    out = [f"### `{name}`", ""]
    if result.get("command"):
        out += ["```bash", str(result["command"]), "```", ""]
    rows = [(k, v) for k, v in _leaves(result) if k != "command" and not k.startswith("config.")]
    machine = [(k, v) for k, v in rows if k.split(".")[0].startswith(MACHINE_KEYS)]
    figures = [(k, v) for k, v in rows if (k, v) not in machine]
    if machine:
        out.append("Machine: " + "; ".join(f"{k} {_value(v)}" for k, v in machine) + ".")
        out.append("")
    out += ["| figure | value |", "|---|---|"]
    out += [f"| `{k}` | {_value(v)} |" for k, v in figures]
    out.append("")
    return "\n".join(out)


def benchmarks_markdown(results_dir: str | Path) -> str:
    """Every ``*.json`` of ``results_dir`` (``bench/results``), sorted by name."""
    files = sorted(Path(results_dir).glob("*.json"))
    if not files:
        return "No benchmark results yet: run `make bench`.\n"
    return "\n".join(benchmark_section(f.name, json.loads(f.read_text())) for f in files)
