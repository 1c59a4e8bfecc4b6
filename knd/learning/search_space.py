"""Search spaces of ``knd tune``: YAML of ``knd train`` keys, checked and turned into Tune domains.

A space file (``configs/tune/*.yaml``) maps dotted train keys to a fixed value, ``{choice: [..]}``,
``{grid: [..]}`` or ``{type: uniform|loguniform|randint, low: A, high: B}``. Every key and value is
checked against the train schema before a trial starts, so a typo fails the command, not a trial.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from knd.config.loading import config_dir, replace
from knd.config.schema import FEATURE_GROUPS, ConfigError, TrainConfig

SPACE_SECTIONS = ("model.", "optim.", "augment.")
SPACE_KEYS = ("recipe", "train.seed", "normalise")


def space_path(space: str) -> str:
    """``space`` as given, else relative to the project (``configs/tune/x.yaml``), else a name."""
    candidates = [Path(space), config_dir().parent / space, config_dir() / "tune" / f"{space}.yaml"]
    for path in candidates:
        if path.is_file():
            return str(path)
    known = sorted(p.stem for p in (config_dir() / "tune").glob("*.yaml"))
    raise ConfigError(f"space: search space {space!r} not found (shipped: {known})")


def _typed(base: TrainConfig, key: str, value: Any, where: str) -> Any:
    """``value`` coerced by the train schema at ``key`` (so ``1e-3`` strings become floats)."""
    try:
        cfg = replace(base, **{key: value})
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def param_space(space: dict, bases: dict[str, TrainConfig], recipe: str, where: str) -> dict:
    """Ray Tune's ``param_space`` from a space mapping, every key and value checked.

    Args:
        space: ``{dotted train key: value | {type: loguniform|uniform|randint, low, high} |
            {choice: [...]} | {grid: [...]}}``.
        bases: the base train config of every recipe the space may pick.
        recipe: the recipe of trials whose space does not pick one.
        where: the space file, for error messages.

    Raises:
        ConfigError: a key outside ``recipe``/``train.seed``/``normalise``/``model.*``/``optim.*``/
            ``augment.*``,
            a value the train schema rejects, or a malformed distribution.
    """
    from ray import tune

    out: dict[str, Any] = {}
    base = _with_fixed_values(space, bases[recipe], where)
    for key, spec in space.items():
        here = f"{where}: {key}"
        if key not in SPACE_KEYS and not key.startswith(SPACE_SECTIONS):
            raise ConfigError(f"{here}: not searchable (allowed: recipe, train.seed, normalise, "
                              "model.*, optim.*, augment.*)")  # fmt: skip

        def check(value: Any, key: str = key, here: str = here) -> Any:
            if key == "recipe":
                if value not in bases:
                    raise ConfigError(f"{here}: unknown recipe {value!r}")
                return value
            return _typed(base, key, value, here)

        if not isinstance(spec, dict):
            out[key] = check(spec)
            continue
        if set(spec) in ({"choice"}, {"grid"}):
            (kind, values), = spec.items()  # fmt: skip
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{here}: {kind} needs a non-empty list")
            values = [check(v) for v in values]
            out[key] = tune.choice(values) if kind == "choice" else tune.grid_search(values)
            continue
        out[key] = _distribution(spec, check, here)
    return out


def _with_fixed_values(space: dict, base: TrainConfig, where: str) -> TrainConfig:
    """``base`` with the space's fixed values, which hold for every trial: the other keys are
    checked against it (model.groups is only valid once model.name says which architecture
    reads the groups)."""
    fixed = {
        k: v
        for k, v in space.items()
        if k != "recipe"
        and not isinstance(v, dict)
        and (k in SPACE_KEYS or k.startswith(SPACE_SECTIONS))
    }
    try:
        return replace(base, **fixed)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def space_groups(space: dict, bases) -> list[str]:
    """Every feature group a trial of ``space`` (on one of the ``bases``) may read."""
    groups = {g for base in bases for g in base.model.groups}
    spec = space.get("model.groups")
    values = next(iter(spec.values())) if isinstance(spec, dict) else [spec] if spec else []
    for value in values:
        groups.update(value if isinstance(value, list | tuple) else [value])
    return sorted(groups, key=FEATURE_GROUPS.index)


def _distribution(spec: dict, check: Any, here: str) -> Any:
    """The Tune domain of ``{type: uniform|loguniform|randint, low: A, high: B}``."""
    from ray import tune

    kind = spec.get("type")
    if kind not in ("uniform", "loguniform", "randint") or set(spec) != {"type", "low", "high"}:
        raise ConfigError(
            f"{here}: expected a value, {{choice: [..]}}, {{grid: [..]}} or "
            f"{{type: uniform|loguniform|randint, low: A, high: B}}, got {spec!r}"
        )
    low, high = check(spec["low"]), check(spec["high"])
    if not low < high or (kind == "loguniform" and low <= 0):
        raise ConfigError(f"{here}: need 0 < low < high for {kind}, got {low}, {high}")
    if kind == "randint":
        return tune.randint(int(low), int(high))
    return getattr(tune, kind)(float(low), float(high))


def space_recipes(space: dict, recipe: str) -> list[str]:
    """Every recipe a trial of ``space`` may build on."""
    spec = space.get("recipe", recipe)
    if isinstance(spec, dict):
        values = next(iter(spec.values()))
        return sorted({str(v) for v in values}) if isinstance(values, list) else [recipe]
    return [str(spec)]


def check_search(search: str, param_space: dict, where: str) -> None:
    """Fail now on a space the search algorithm cannot run.

    Raises:
        ConfigError: grid keys with ``search=optuna`` (TPE samples; it cannot enumerate a grid).
    """
    if search == "optuna" and any(
        isinstance(v, dict) and "grid_search" in v for v in param_space.values()
    ):
        raise ConfigError(f"{where}: grid keys need search=random")
