"""The keys of a command, as ``knd <command> --help`` and the docs' Command line page show them."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from knd.config.commands import COMMANDS
from knd.config.loading import config_dir, load_recipe, load_yaml, merge


@dataclass(frozen=True)
class Key:
    """One ``key=value`` a command takes, with the default a plain run uses."""

    name: str  # full dotted name as typed on the command line, e.g. ``optim.lr``
    type: str  # readable type: ``int``, ``list of int``, ``cosine | onecycle``, ``str or none``
    default: Any  # the effective default (for ``knd train``: the default recipe applied)
    required: bool  # no default: the command needs ``key=...``
    bounds: str  # allowed range in words (``1 <= x <= 24``), or ""
    help: str

    @property
    def default_text(self) -> str:
        """The default as it is typed on the command line (YAML flow), or ``required``."""
        if self.required:
            return "required"
        text = yaml.safe_dump(self.default, default_flow_style=True).strip()
        return text.removesuffix("...").strip()


def type_name(kind: Any) -> str:
    """A short, readable name of an annotated config type (``int | None`` -> ``int or none``)."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        inner = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(inner) + (" or none" if type(None) in args else "")
    if origin is Literal:
        return " | ".join(str(a) for a in args)
    if origin is tuple:
        return f"list of {type_name(args[0])}"
    return getattr(kind, "__name__", str(kind))


def bounds_text(rules: Any) -> str:
    """A field's checks in words: ``1 <= x <= 24``, ``x > 0``, ``a plain name`` or ""."""

    def number(value: float) -> str:
        return str(value) if isinstance(value, int) else f"{value:g}"

    low = next(((rules[r], s) for r, s in (("ge", "<="), ("gt", "<")) if r in rules), None)
    high = next(((rules[r], s) for r, s in (("le", "<="), ("lt", "<")) if r in rules), None)
    if low and high:
        text = f"{number(low[0])} {low[1]} x {high[1]} {number(high[0])}"
    elif low:
        text = f"x {low[1].replace('<', '>')} {number(low[0])}"
    elif high:
        text = f"x {high[1]} {number(high[0])}"
    else:
        text = ""
    return "a plain name" if rules.get("plain_name") else text


def effective_defaults(command: str) -> dict[str, Any]:
    """The values a plain ``knd <command>`` starts from: its YAML, then for ``train`` the recipe."""
    schema = COMMANDS[command].schema
    defaults = load_yaml(config_dir() / f"{command}.yaml")
    if getattr(schema, "applies_recipe", False):  # what a plain run uses: the recipe's values
        defaults = merge(defaults, load_recipe(defaults["recipe"]))
    return defaults


def command_keys(command: str) -> list[Key]:
    """Every key of ``command``, sections flattened to dotted names, in schema order.

    The one description of a command's keys: ``knd <command> --help`` (:func:`describe`) and the
    docs' Command line page (:func:`knd.docs.cli_reference`) both render it.
    """
    keys: list[Key] = []

    def walk(kind: type, tree: dict[str, Any], prefix: str) -> None:
        hints = typing.get_type_hints(kind)
        for f in dataclasses.fields(kind):
            hint = hints[f.name]
            if dataclasses.is_dataclass(hint):
                walk(hint, tree.get(f.name) or {}, prefix + f.name + ".")
                continue
            value = tree.get(f.name)
            required = f.name in getattr(kind, "required", ()) and value is None
            keys.append(Key(prefix + f.name, type_name(hint), value, required,
                            bounds_text(f.metadata), f.metadata.get("help", "")))  # fmt: skip

    walk(COMMANDS[command].schema, effective_defaults(command), "")
    return keys


def describe(command: str) -> str:
    """``key  default  help [type; bounds]`` lines for ``knd <command> --help``.

    Columns are separated by at least two spaces (no default or help text holds two in a row),
    so a script can split a line on them.
    """
    keys = command_keys(command)
    name_width = max(len(k.name) for k in keys)
    default_width = min(22, max(len(k.default_text) for k in keys))
    lines = []
    for key in keys:
        shown = "(required)" if key.required else key.default_text
        kind = "; ".join(part for part in (key.type, key.bounds) if part)
        lines.append(f"  {key.name:<{name_width}}  {shown:<{default_width}}  {key.help} [{kind}]")
    return "\n".join(lines)
