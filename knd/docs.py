"""Pages of the documentation site generated at build time, so they cannot drift from the code.

``docs/hooks.py`` (an MkDocs hook) replaces two markers in the Markdown of the site:

- ``<!-- knd:cli-reference -->`` with :func:`cli_reference`: every command, and every key by its
  full dotted name as typed on the command line, with its type, default and help text, read from
  the config schemas (:data:`knd.config.SCHEMAS`) and the shipped YAML defaults;
- ``<!-- knd:benchmarks -->`` with :func:`benchmarks_markdown`: every ``bench/results/*.json``
  as tables, with the machine it was measured on.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

CLI_MARKER = "<!-- knd:cli-reference -->"
BENCH_MARKER = "<!-- knd:benchmarks -->"


@dataclasses.dataclass(frozen=True)
class Key:
    """One ``key=value`` a command takes."""

    name: str  # full dotted name, e.g. ``optim.lr``
    type: str
    default: Any
    required: bool
    help: str


def type_name(kind: Any) -> str:
    """A short, readable name of an annotated config type (``int | None`` -> ``int or none``)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        inner = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(inner) + (" or none" if type(None) in args else "")
    if origin is Literal:
        return " \\| ".join(str(a) for a in args)
    if origin is tuple:
        return f"list of {type_name(args[0])}"
    return getattr(kind, "__name__", str(kind))


def command_keys(command: str) -> list[Key]:
    """Every key of ``command``, sections flattened to dotted names, in schema order."""
    from knd.config import SCHEMAS, config_dir, load_yaml

    schema = SCHEMAS[command]
    defaults = load_yaml(config_dir() / f"{command}.yaml")
    keys: list[Key] = []

    def walk(kind: type, tree: dict, prefix: str) -> None:
        hints = typing.get_type_hints(kind)
        for f in dataclasses.fields(kind):
            hint = hints[f.name]
            if dataclasses.is_dataclass(hint):
                walk(hint, tree.get(f.name) or {}, prefix + f.name + ".")
                continue
            value = tree.get(f.name)
            required = f.name in getattr(kind, "required", ()) and value is None
            keys.append(Key(prefix + f.name, type_name(hint), value, required,
                            f.metadata.get("help", "")))  # fmt: skip

    walk(schema, defaults, "")
    return keys


def _default(key: Key) -> str:
    if key.required:
        return "**required**"
    text = yaml.safe_dump(key.default, default_flow_style=True).strip()
    return f"`{text.removesuffix('...').strip()}`"


def cli_reference() -> str:
    """Markdown: one section per command, one table row per key."""
    from knd.cli import COMMANDS
    from knd.config import SCHEMAS

    out = []
    for command, (_, summary) in COMMANDS.items():
        schema = SCHEMAS[command]
        out += [f"## `knd {command}`", "", summary[0].upper() + summary[1:] + ".", ""]
        out += [f"Defaults: `configs/{command}.yaml`."]
        if getattr(schema, "applies_recipe", False):
            out[-1] += " A recipe (`configs/recipes/<recipe>.yaml`) is applied over them."
        required = [k.name for k in command_keys(command) if k.required]
        example = " ".join(f"{k}=..." for k in required)
        out += ["", "```bash", f"knd {command} {example}".rstrip(), "```", ""]
        out += ["| key | type | default | help |", "|---|---|---|---|"]
        for key in command_keys(command):
            out.append(f"| `{key.name}` | {key.type} | {_default(key)} | {key.help} |")
        out.append("")
    return "\n".join(out)


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
