"""A hostile or broken ``meta.json`` is one ValueError naming the file, before a model is built."""

from __future__ import annotations

import json

import pytest
from samples import checkpoint_meta, checkpoint_meta_v1

from knd.learning.checkpoint import MAX_META_BYTES, load_meta, load_model, save_checkpoint
from knd.learning.models import build_model


def _with(path: list[str], value, v1: bool = False) -> dict:
    meta = checkpoint_meta_v1() if v1 else checkpoint_meta()
    node = meta
    for part in path[:-1]:
        node = node[part]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return meta


LOGMEL = ["group_norm", "logmel"]
EMBEDDING = ["group_norm", "embedding"]
NAN = float("nan")
STATS = {"mean": [0.0], "std": [1.0]}
RAGGED = [[0.0], [0.0, 1.0]]
HUGE = [[0.0] * 512] * 512  # 2^18 values, over MAX_GROUP_VALUES
MANY = {f"key{i}": i for i in range(1001)}

HOSTILE = [
    ("a list", [1, 2, 3], "expected an object, got list"),
    ("a string", "meta", "expected an object, got str"),
    ("no model", _with(["model"], KeyError), "key 'model' has no value"),
    ("no labels", _with(["labels"], KeyError), "key 'labels' has no value"),
    ("model a list", _with(["model"], ["cpu_small"]), "model: expected a section of keys"),
    ("huge width", _with(["model", "width"], 10**6), "model.width: must be <= 1024"),
    ("width a string", _with(["model", "width"], "8"), "model.width: expected int"),
    ("dropout 5", _with(["model", "dropout"], 5), "model.dropout"),
    ("unknown model", _with(["model", "name"], "gpt5"), "model.name: 'gpt5' is not one of"),
    ("one label", _with(["labels"], ["x"]), "labels: must hold >= 2 items"),
    ("10k labels", _with(["labels"], [f"l{i}" for i in range(10_000)]), "labels: must hold <= 64"),
    ("label not text", _with(["labels"], [1, 2]), "labels: expected"),
    ("NaN in norm", _with([*LOGMEL, "std"], [NAN] * 64), "logmel.std: must be a finite number"),
    ("norm lengths", _with([*LOGMEL, "std"], [1.0] * 3), "mean and std differ"),
    ("huge norm", _with([*LOGMEL, "mean"], [0.0] * 100_000), "logmel.mean: expected a list"),
    ("no norm", _with(LOGMEL, KeyError), "no statistics for the model's group 'logmel'"),
    ("no hash", _with(["groups", "logmel"], KeyError), "no hash for the model's group 'logmel'"),
    ("newer", _with(["version"], 3), r"version: 3 is not one of \[2\]"),
    ("split text", _with(["split", "test"], "1,2"), "split.test: expected a list"),
    ("actor a float", _with(["split", "train"], [5.5]), "split.train: expected int"),
    ("width a float", _with(["model", "width"], 8.0), "model.width: expected int"),
    ("empty label", _with(["labels"], ["", "calm"]), "labels: must hold >= 1 chars"),
    ("long hash", _with(["groups", "logmel"], "f" * 200), "groups.logmel: must hold <= 128 chars"),
    ("unknown group", _with(["group_norm", "pitch"], STATS), "group_norm: 'pitch' is not one of"),
    ("stats null", _with(["group_norm", "prosody"], None), "group_norm.prosody: expected a sec"),
    ("norm a table", _with([*LOGMEL, "mean"], [[0.0] * 64]), "logmel.mean: expected a list of"),
    ("ragged table", _with(EMBEDDING, {"mean": RAGGED, "std": RAGGED}), "rows of one length"),
    ("huge table", _with(EMBEDDING, {"mean": HUGE, "std": HUGE}), "embedding.mean: expected a"),
    ("many params", _with(["feature_params"], MANY), "feature_params: must hold <= 1000 items"),
    ("many groups", _with(["model", "groups"], ["logmel"] * 65), "model.groups: must hold <= 64"),
    ("speaker keys text", _with(["split_speakers"], "3"), "split_speakers: expected a section"),
    ("speaker key a number", _with(["split_speakers"], {"test": [3]}), "split_speakers.test: exp"),
    # The sections the loader reads whole take no other key.
    ("unknown stats key", _with([*LOGMEL, "median"], [0.0]), "unknown key 'group_norm.logmel.m"),
    ("unknown split key", _with(["split", "holdout"], [7]), "unknown key 'split.holdout'"),
    # Version 1: the log-mel's keys apart, read as version 2.
    ("v1 NaN in norm", _with(["norm", "std"], [NAN] * 64, v1=True), "logmel.std: must be a finite"),
    ("v1 norm lengths", _with(["norm", "std"], [1.0] * 3, v1=True), "mean and std differ"),
    ("v1 huge norm", _with(["norm", "mean"], [0.0] * 10**5, v1=True), "logmel.mean: expected a"),
    ("v1 no norm", _with(["norm"], KeyError, v1=True), "key 'norm' has no value"),
    ("v1 bad shape", _with(["feature_shape"], [64], v1=True), "feature_shape: must hold >= 2"),
    ("v1 groups a list", _with(["groups"], ["prosody"], v1=True), "groups: expected a section"),
    ("v1 hash a number", _with(["feature_hash"], 7, v1=True), "feature_hash: expected str"),
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
        (b'{"version": ' + b"9" * 5000 + b"}", "not valid JSON"),  # over Python's int digits
    ],
    ids=["not utf-8", "deep nesting", "too big", "5000 digits"],
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


def test_optional_model_keys_may_be_absent_and_unread_keys_pass(tmp_path):
    meta = checkpoint_meta() | {"recipe": "cpu_small", "run": "r", "metrics": {"uar": 0.5}}
    meta["model"] = {"name": "cpu_small", "encoder_hash": "an architecture's own key"}
    meta["feature_params"] |= {"whatever": [1, "x", None]}
    save_checkpoint(str(tmp_path), build_model("cpu_small", 8, width=32), meta)
    model, loaded = load_model(str(tmp_path))  # the default width, as the builder's
    assert loaded == meta


def test_a_v1_meta_reads_as_version_2(tmp_path):
    save_checkpoint(str(tmp_path), build_model("cpu_small", 8, width=8), checkpoint_meta_v1())
    assert load_meta(str(tmp_path)) == checkpoint_meta()
