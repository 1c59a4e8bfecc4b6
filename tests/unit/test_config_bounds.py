"""Config values out of range fail at load time, in one line naming the key; strings stay text."""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from samples import REQUIRED

from knd.config.commands import COMMANDS
from knd.config.loading import load_config
from knd.config.schema import ConfigError

# The values of the hardening report, each of which used to be accepted and fail later.
REPORTED = [
    ("prepare", "features.hop_length=0", "features.hop_length: must be >= 1"),
    ("prepare", "features.n_mels=-3", "features.n_mels: must be >= 1"),
    ("prepare", "features.sample_rate=0", "features.sample_rate: must be >= 1000"),
    ("prepare", "features.clip_seconds=.nan", "features.clip_seconds: must be a finite number"),
    ("prepare", "rows_per_shard=0", "rows_per_shard: must be >= 1"),
    ("prepare", "batch_size=-5", "batch_size: must be >= 1"),
    ("train", "train.num_workers=0", "train.num_workers: must be >= 1"),
    ("train", "optim.lr=.nan", "optim.lr: must be a finite number"),
    ("train", "optim.lr=.inf", "optim.lr: must be a finite number"),
    ("download", "chunk_bytes=0", "chunk_bytes: must be >= 1"),
    ("download", "timeout_s=-1", "timeout_s: must be > 0"),
    ("score", "window_hop_seconds=.nan", "window_hop_seconds: must be a finite number"),
    ("score", "num_actors=0", "num_actors: must be >= 1"),
    ("train", "name=../x", "name: must be a plain name"),
    ("train", "name=a/b", "name: must be a plain name"),
    ("train", "name=", "name: must be a plain name"),
    ("tune", "name=..", "name: must be a plain name"),
    ("download", "archive_name=/abs/path.zip", "archive_name: must be a plain name"),
    ("download", "archive_name=../x.zip", "archive_name: must be a plain name"),
    ("train", "recipe=../train", "recipe: must be a plain name"),
    ("prepare", "features.win_length=1024", r"features.win_length: must be <= n_fft \(512\)"),
    ("prepare", "features.f_max=9000", r"features.f_max: must be <= sample_rate / 2"),
    ("prepare", "features.f_min=9000", r"features.f_min: must be < f_max"),
    ("tune", "reduction_factor=1", "reduction_factor: must be > 1"),
    ("train", "model.dropout=1.0", "model.dropout: must be < 1"),
]


@pytest.mark.parametrize(("command", "override", "match"), REPORTED)
def test_out_of_range_values_fail_in_one_line_naming_the_key(command, override, match):
    with pytest.raises(ConfigError, match=match) as info:
        load_config(command, [*REQUIRED[command], override])
    assert "\n" not in str(info.value)


def test_string_fields_keep_the_text_as_typed():
    assert load_config("train", ["data=/tmp/f", "name=no"]).name == "no"
    assert load_config("train", ["data=/tmp/f", "name=on"]).name == "on"
    assert load_config("train", ["data=/tmp/f", "name=007"]).name == "007"
    assert load_config("train", ["data=/tmp/f", "name=null"]).name is None
    assert load_config("train", ["data=/tmp/f", "wandb.project=1e3"]).wandb.project == "1e3"
    md5 = "0" * 31 + "1"  # digits only: YAML would read an integer and drop the zeros
    assert load_config("download", ["out=/tmp/x", f"md5={md5}"]).md5 == md5
    # Non-string fields still take the YAML reading.
    assert load_config("train", ["data=/tmp/f", "train.use_gpu=no"]).train.use_gpu is False


def test_a_yaml_boolean_for_a_string_field_asks_for_quotes(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: no\n")
    with pytest.raises(ConfigError, match=r"name: expected a string, got False \(quote it\)"):
        load_config("train", ["data=/tmp/f", f"config={path}"])


def _numeric_fields(schema, prefix=""):
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            yield from _numeric_fields(kind, prefix + f.name + ".")
            continue
        args = [a for a in typing.get_args(kind) if a is not type(None)] or [kind]
        inner = typing.get_args(args[0]) if typing.get_origin(args[0]) is tuple else args
        if inner[0] in (int, float):
            yield prefix + f.name, inner[0], f.metadata


def test_every_numeric_field_has_a_bound():
    unbounded = [
        f"{command}:{key}"
        for command, schema in ((c, k.schema) for c, k in COMMANDS.items())
        for key, _, meta in _numeric_fields(schema)
        if not {"ge", "gt", "le", "lt"} & set(meta)
    ]
    assert unbounded == []


NUMERIC = sorted(
    {(command, key, kind) for command, schema in ((c, k.schema) for c, k in COMMANDS.items())
     for key, kind, _ in _numeric_fields(schema) if command in ("prepare", "train", "score")}
)  # fmt: skip

NUMBERS = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from([".nan", ".inf", "-.inf", "0", "-0", "1e400", "0x10", "true", "", "[1]"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(NUMERIC), raw=NUMBERS)
def test_generated_numbers_load_in_range_or_fail_in_one_line(field, raw):
    command, key, kind = field
    try:
        cfg = load_config(command, [*REQUIRED[command], f"{key}={raw}"])
    except ConfigError as e:
        assert "\n" not in str(e) and key.split(".")[-1] in str(e)
        return
    value = cfg
    for part in key.split("."):
        value = getattr(value, part)
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if v is None:
            continue
        assert isinstance(v, kind) and not isinstance(v, bool)
        assert math.isfinite(v)
        meta = dict(_bounds_of(command, key))
        assert v >= meta.get("ge", -math.inf) and v > meta.get("gt", -math.inf)
        assert v <= meta.get("le", math.inf) and v < meta.get("lt", math.inf)


def _bounds_of(command, key):
    for k, _, meta in _numeric_fields(COMMANDS[command].schema):
        if k == key:
            return {r: meta[r] for r in ("ge", "gt", "le", "lt") if r in meta}
    raise KeyError(key)


@settings(max_examples=100, deadline=None)
@given(text=st.text(min_size=1, max_size=30).filter(lambda t: "\n" not in t and "\r" not in t))
def test_generated_text_for_a_string_field_is_kept_verbatim_or_refused(text):
    try:
        cfg = load_config("train", ["data=/tmp/f", f"wandb.project={text}"])
    except ConfigError as e:  # a YAML mapping such as "{a: 1}" is a section, not a value
        assert "\n" not in str(e)
        return
    assert cfg.wandb.project == text
