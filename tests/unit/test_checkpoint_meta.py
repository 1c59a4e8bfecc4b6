"""A hostile or broken ``meta.json`` is one ValueError naming the file, before a model is built."""

from __future__ import annotations

import json

import pytest
from samples import checkpoint_meta

from knd.learning.checkpoint import MAX_META_BYTES, load_meta, load_model, save_checkpoint
from knd.learning.models import build_model


def _with(path: list[str], value) -> dict:
    meta = checkpoint_meta()
    node = meta
    for part in path[:-1]:
        node = node[part]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return meta


HOSTILE = [
    ("a list", [1, 2, 3], "expected an object, got list"),
    ("a string", "meta", "expected an object, got str"),
    ("no model", _with(["model"], KeyError), "missing key 'model'"),
    ("no labels", _with(["labels"], KeyError), "missing key 'labels'"),
    ("model a list", _with(["model"], ["cpu_small"]), "model: expected dict, got list"),
    ("huge width", _with(["model", "width"], 10**6), "model.width: expected an integer"),
    ("width a string", _with(["model", "width"], "8"), "model.width: expected an integer"),
    ("dropout 5", _with(["model", "dropout"], 5), "model.dropout"),
    ("unknown model", _with(["model", "name"], "gpt5"), "unknown model 'gpt5'"),
    ("one label", _with(["labels"], ["x"]), "labels: expected 2..64 names"),
    ("10k labels", _with(["labels"], [f"l{i}" for i in range(10_000)]), "labels: expected"),
    ("label not text", _with(["labels"], [1, 2]), "labels: expected"),
    ("NaN in norm", _with(["norm", "std"], [float("nan")] * 64), "norm.std: expected finite"),
    ("norm lengths", _with(["norm", "std"], [1.0] * 3), "mean and std differ"),
    ("huge norm", _with(["norm", "mean"], [0.0] * 100_000), "norm.mean: expected a list"),
    ("bad shape", _with(["feature_shape"], [64]), "feature_shape: expected"),
    ("split text", _with(["split", "test"], "1,2"), "split.test: expected a list"),
]


@pytest.mark.parametrize(("meta", "match"), [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE])
def test_hostile_meta_is_one_line_naming_the_file(tmp_path, meta, match):
    save_checkpoint(str(tmp_path), build_model("cpu_small", 8, width=8), checkpoint_meta())
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=match) as err:
        load_model(str(tmp_path))
    assert str(tmp_path / "meta.json") in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\xff\xfe not utf-8", "not valid JSON"),
        (b"[" * 100_000, "not valid JSON"),  # nesting deep enough to exhaust the recursion
        (b" " * (MAX_META_BYTES + 1), "over the"),
    ],
    ids=["not utf-8", "deep nesting", "too big"],
)
def test_unreadable_meta_is_one_line_naming_the_file(tmp_path, data, match):
    (tmp_path / "meta.json").write_bytes(data)
    with pytest.raises(ValueError, match=match) as err:
        load_meta(str(tmp_path))
    assert str(tmp_path / "meta.json") in str(err.value)


def test_a_good_meta_with_extra_keys_loads(tmp_path):
    meta = checkpoint_meta() | {"note": "extra keys are kept", "epoch": 3}
    save_checkpoint(str(tmp_path), build_model("cpu_small", 8, width=8), meta)
    model, loaded = load_model(str(tmp_path))
    assert loaded == meta
