"""Loading a command's config: its YAML, a recipe, a config file and key=value overrides,
layered and checked against the schema (an unknown key or a bad value names the key)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from knd.config.commands import COMMANDS
from knd.config.schema import ConfigError

log = logging.getLogger(__name__)


def config_dir() -> Path:
    """The folder of shipped YAML configs (``KND_CONFIG_DIR`` overrides it).

    The configs ship inside the package (``knd/configs``, in the clone a link to the top-level
    ``configs/``), so an installed knd finds them anywhere; a copy of the clone that lost the
    link (e.g. an archive that drops symlinks) still finds ``configs/`` beside ``knd/``.
    """
    if os.environ.get("KND_CONFIG_DIR"):
        return Path(os.environ["KND_CONFIG_DIR"])
    package = Path(__file__).resolve().parent.parent
    inside = package / "configs"
    return inside if inside.is_dir() else package.parent / "configs"


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; an empty file is an empty mapping."""
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys, got {type(data).__name__}")
    return data


class _Typed(str):
    """A ``key=value`` value as typed, with its YAML reading in ``parsed``.

    A field declared as a string takes the text as typed (``name=no`` is "no", not False;
    ``md5=0123...`` keeps its leading zero); any other field takes the YAML reading.
    """

    parsed: Any


def _typed(raw: str, parsed: Any) -> _Typed:
    out = _Typed(raw)
    out.parsed = parsed
    return out


def parse_overrides(overrides: list[str], keep_text: bool = False) -> dict[str, Any]:
    """``["a.b=1", "c=[1,2]"]`` -> ``{"a": {"b": 1}, "c": [1, 2]}`` (values parsed as YAML).

    With ``keep_text`` each value also keeps the text as typed, for fields declared as strings.
    """
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected key=value, got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        if keep_text and not isinstance(value, dict):
            value = _typed(raw, value)
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {part} is both a value and a section")
        node[parts[-1]] = value
    return tree


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``update`` wins."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(command: str, overrides: list[str] | None = None, **values: Any):
    """Build the frozen config of ``command`` from its YAML, recipe, config file and overrides.

    Args:
        command: one of ``COMMANDS``.
        overrides: ``key=value`` strings as typed on the command line.
        **values: overrides given as Python values (nested sections as dicts), applied last.

    Raises:
        ConfigError: an unknown key, a value of the wrong type or a missing required key.
    """
    if command not in COMMANDS:
        raise ConfigError(f"unknown command {command!r}; expected one of {sorted(COMMANDS)}")
    schema = COMMANDS[command].schema
    tree = load_yaml(config_dir() / f"{command}.yaml")
    cli = merge(parse_overrides(list(overrides or []), keep_text=True), values)
    config_file = cli.pop("config", None)
    from_file = load_yaml(config_file) if config_file else {}
    cli, from_file = (renamed(schema, layer) for layer in (cli, from_file))
    if getattr(schema, "applies_recipe", False):
        recipe = cli.get("recipe", from_file.get("recipe", tree.get("recipe")))
        tree = merge(tree, {"recipe": recipe})
        tree = merge(tree, load_recipe(recipe))
    tree = merge(merge(tree, from_file), cli)
    cfg = build(schema, tree)
    missing = [k for k in schema.required if getattr(cfg, k) in (None, "")]
    if missing:
        example = " ".join(f"{k}=..." for k in missing)
        raise ConfigError(f"missing required key {missing[0]!r} (knd {command} {example})")
    return cfg


def renamed(schema: type, tree: dict[str, Any]) -> dict[str, Any]:
    """``tree`` with the keys ``schema`` renamed (``renamed_keys``: old dotted key -> new) under
    their new names, each with a one-line notice: the old names work for one more release."""
    out = tree
    for old, new in getattr(schema, "renamed_keys", {}).items():
        *path, leaf = old.split(".")
        node = out
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            continue
        log.warning("%s is now %s; the old key works until the next release", old, new)
        value = node[leaf]
        out = merge(_without(out, old), _nest(new, value))
    return out


def _without(tree: dict[str, Any], dotted: str) -> dict[str, Any]:
    head, _, rest = dotted.partition(".")
    if not rest:
        return {k: v for k, v in tree.items() if k != head}
    return {**tree, head: _without(tree[head], rest)}


def load_recipe(name: str) -> dict[str, Any]:
    """The YAML of ``configs/recipes/<name>.yaml``."""
    path = config_dir() / "recipes" / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ConfigError(f"unknown recipe {name!r}; expected one of {known}")
    return load_yaml(path)


def build(schema: type, tree: dict[str, Any], prefix: str = "", exact: bool = False):
    """Instantiate ``schema`` from a nested dict, checking every key and coercing every value
    (a field with a default may be left out; a schema with ``accepts_other_keys`` takes keys it
    does not declare, unchecked; ``exact``: JSON a program wrote, see :func:`coerce`)."""
    if not isinstance(tree, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a section of keys")
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    unknown = [key for key in tree if key not in fields]
    if unknown and not getattr(schema, "accepts_other_keys", False):
        close = [n for n in fields if n.startswith(unknown[0][:3])]
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown key {prefix + unknown[0]!r}{hint}")
    kwargs = {}
    for name, f in fields.items():
        if name in tree:
            _check_size(tree[name], f.metadata, prefix + name)  # before a huge one is coerced
            kwargs[name] = coerce(tree[name], hints[name], prefix + name, exact)
            check_value(kwargs[name], f.metadata, prefix + name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            hint = "" if exact else " (add it to the YAML)"
            raise ConfigError(f"key {prefix + name!r} has no value{hint}")
    cfg = schema(**kwargs)
    for name, problem in getattr(schema, "cross_checks", lambda c: [])(cfg):
        raise ConfigError(f"{prefix + name}: {problem}")
    return cfg


_BOUNDS = {
    "ge": (lambda v, b: v >= b, ">="),
    "gt": (lambda v, b: v > b, ">"),
    "le": (lambda v, b: v <= b, "<="),
    "lt": (lambda v, b: v < b, "<"),
}
_JSON_TYPES = {int: (int,), float: (int, float), str: (str,)}  # what an exact value may be


def check_value(value: Any, rules: Any, key: str) -> None:
    """Check a coerced value (each element of a tuple, each value of a dict too) against its
    field's rules (``_help`` in :mod:`knd.config.schema`); raise a ConfigError naming ``key``."""
    if value is None:
        return
    if isinstance(value, tuple) and value and all(type(v) is float for v in value):
        # 10^5 statistics: the first non-finite, or else the extremes, fail as any other would
        value = tuple(v for v in value if not math.isfinite(v))[:1] or (min(value), max(value))
    if isinstance(value, tuple | dict):
        named = value.items() if isinstance(value, dict) else ((None, v) for v in value)
        for name, v in named:
            check_value(v, rules, key if name is None else f"{key}.{name}")
        return
    if isinstance(value, str):  # a tuple's or a dict's size was checked by build, before coercion
        _check_size(value, rules, key)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: must be a finite number, got {value!r}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        for rule, (ok, sign) in _BOUNDS.items():
            if rule in rules and not ok(value, rules[rule]):
                raise ConfigError(f"{key}: must be {sign} {rules[rule]:g}, got {value!r}")
    if rules.get("plain_name") and not _is_plain_name(str(value)):
        raise ConfigError(
            f"{key}: must be a plain name (no '/', '\\', '..', not empty), got {value!r}"
        )


def _check_size(value: Any, rules: Any, key: str) -> None:
    sized = {str: "chars", tuple: "items", list: "items", dict: "items"}.get(type(value), "")
    for rule, (ok, sign) in _BOUNDS.items():
        bound = rules.get(f"{sized}_{rule}")
        if sized and bound is not None and not ok(len(value), bound):
            raise ConfigError(f"{key}: must hold {sign} {bound} {sized}, got {len(value)}")


def _is_plain_name(value: str) -> bool:
    return value not in ("", ".", "..") and not any(c in value for c in "/\\\0")


def coerce(value: Any, kind: Any, key: str, exact: bool = False) -> Any:
    """Convert a YAML value to the annotated type, or raise a ConfigError naming ``key``
    (``exact``: a JSON value, already of its type: no number from text nor text from a number)."""
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if isinstance(value, _Typed):
        if kind is str:
            return str(value)  # the text as typed: ``name=no`` stays "no"
        typed_text = value.parsed is not None and not isinstance(value.parsed, list)
        if origin in (typing.Union, types.UnionType) and str in args and typed_text:
            return str(value)  # a list typed (``data=[a,b]``) is the union's list, not text
        value = value.parsed
    if exact and kind in _JSON_TYPES and type(value) not in _JSON_TYPES[kind]:
        raise ConfigError(f"{key}: expected {kind.__name__}, got {value!r}")
    if dataclasses.is_dataclass(kind):
        return build(kind, value, key + ".", exact)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, args, key, exact)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if origin is tuple:
        if not exact and isinstance(value, int | str) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list like [1,2], got {value!r}")
        if exact and all(type(v) in _JSON_TYPES.get(args[0], ()) for v in value):
            with contextlib.suppress(OverflowError):  # an integer past float's range: one by one
                return tuple(map(args[0], value))  # at once: a meta's statistics hold 10^5 numbers
        return tuple(coerce(v, args[0], key, exact) for v in value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a section of keys, got {value!r}")
        return {
            coerce(k, args[0], key, exact): coerce(v, args[1], f"{key}.{k}", exact)
            for k, v in value.items()
        }
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if kind in (int, float):
        return _coerce_number(value, kind, key)
    if kind is str:
        if isinstance(value, dict | list | tuple):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        if isinstance(value, bool):  # YAML read yes/no/on/off as a boolean
            raise ConfigError(f"{key}: expected a string, got {value!r} (quote it)")
        return str(value)
    return value


def _coerce_number(value: Any, kind: type, key: str) -> int | float:
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    try:
        number = kind(value) if not isinstance(value, str) else kind(float(value))
        if kind is int and float(value) != number:
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
    except (TypeError, ValueError, OverflowError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{key}: expected {kind.__name__}, got {value!r}") from None
    return number


def _coerce_union(value: Any, kinds: tuple[Any, ...], key: str, exact: bool) -> Any:
    """The value as the first of the union's types it fits (or the first type's complaint)."""
    if value is None and type(None) in kinds:
        return None
    complaints = []
    for kind in (k for k in kinds if k is not type(None)):
        try:
            return coerce(value, kind, key, exact)
        except ConfigError as e:
            complaints.append(e)
    raise complaints[0]


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config as plain nested dicts and lists (for YAML, JSON and Ray's ``train_loop_config``)."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(dataclasses.asdict(cfg))


def replace(cfg: Any, **values: Any):
    """A copy of ``cfg`` with dotted keys replaced and re-validated: ``**{"optim.lr": 1e-3}``."""
    tree = to_dict(cfg)
    for dotted, value in values.items():
        tree = merge(tree, _nest(dotted, value))
    return build(type(cfg), tree)


def _nest(dotted: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out
