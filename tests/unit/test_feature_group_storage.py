"""Feature groups without Ray: shards with every group, old manifests and checkpoints, refusals."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from samples import checkpoint_meta, checkpoint_meta_v1, encode, tone

from knd.audio.features import group_specs
from knd.config.loading import load_config
from knd.config.schema import ConfigError
from knd.data.labelling import label_files
from knd.data.shards import (
    check_groups,
    load_features,
    manifest_from_v1,
    manifest_groups,
    row_schema,
    shard_rows_table,
    write_shard,
)
from knd.data.storage import resolve
from knd.learning.checkpoint import meta_from_v1, meta_problem, model_groups
from knd.stages.prepare import process_files

EVERY = ("logmel", "prosody", "egemaps")


@pytest.fixture(scope="module")
def params():
    return load_config("prepare", ["input=x", "output=y"]).features


def _voice(seconds: float, sr: int, f0: float) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.1 * np.sin(2 * np.pi * 0.5 * t))) / sr
    return (0.3 * sum(np.sin(k * phase) / k for k in range(1, 6))).astype(np.float32)


def _files(tmp_path) -> dict[str, bytes]:
    sr = 16000
    clipped = np.clip(8 * tone(2.0, sr, 200.0), -0.9, 0.9)
    return {
        "Actor_01/03-01-01-01-01-01-01.wav": encode(_voice(2.5, sr, 120.0), sr),
        "Actor_02/03-01-05-02-01-01-02.wav": encode(_voice(4.0, 48000, 240.0), 48000),
        "Actor_02/03-01-03-01-02-01-02.wav": encode(clipped, sr),  # square-wave-like
        "Actor_03/03-01-04-01-01-02-03.wav": encode(
            0.05 * np.random.default_rng(0).standard_normal(sr * 2).astype(np.float32), sr
        ),  # noise: no pitch to track
    }


def _prepare(tmp_path, params, name: str) -> str:
    """A minimal prepared feature set (one shard), written as knd prepare writes it."""
    from knd.stages.prepare import build_manifest

    folder = tmp_path / name
    (folder / "shards").mkdir(parents=True)
    files = _files(tmp_path)
    uris = []
    for path, data in files.items():
        target = tmp_path / "audio" / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        uris.append(str(target))
    labelled = label_files("ravdess", str(tmp_path / "audio"), uris, list(files))
    table = process_files(uris, list(files), params, [labelled.fields[p] for p in files])
    assert table["error"].null_count == len(files), table["error"].to_pylist()
    fs, root = resolve(str(folder))
    write_shard(shard_rows_table(table.filter(pc.is_null(table["error"]))), fs, f"{root}/shards/p")
    rows = table.drop_columns([c for c in table.column_names if c in EVERY])
    kept = rows.to_pylist()
    cfg = load_config("prepare", [f"input={tmp_path}/audio", f"output={folder}"])
    cfg = dataclasses.replace(cfg, features=params)
    manifest = build_manifest(kept, ["shards/p"], [len(kept)], [], cfg, "listing")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return str(folder)


def test_every_group_is_stored_finite_even_for_noise_and_clipping(tmp_path, params):
    every = dataclasses.replace(params, groups=EVERY)
    assert [f.name for f in row_schema(group_specs(every))][-4:] == [
        "logmel",
        "prosody",
        "egemaps",
        "error",
    ]
    data = _prepare(tmp_path, every, "every")
    table = load_features(data, groups=["prosody", "egemaps"])
    assert table.groups["prosody"].shape == (4, 4, table.groups["logmel"].shape[2])
    assert table.groups["egemaps"].shape == (4, 88)
    assert all(np.isfinite(v).all() for v in table.groups.values())
    voiced = dict(zip(table.path, table.groups["prosody"][:, 1].mean(axis=1), strict=True))
    assert voiced["Actor_01/03-01-01-01-01-01-01.wav"] > 0.5  # a voice, 2.5 s of a 3 s clip
    assert voiced["Actor_03/03-01-04-01-01-02-03.wav"] == 0.0  # noise: the flag says untracked
    # The 240 Hz voice sits an octave above the 120 Hz one: 12 semitones on the F0 channel.
    f0 = dict(zip(table.path, np.median(table.groups["prosody"][:, 0], axis=1), strict=True))
    octave = f0["Actor_02/03-01-05-02-01-01-02.wav"] - f0["Actor_01/03-01-01-01-01-01-01.wav"]
    assert octave == pytest.approx(12.0, abs=0.5)


def test_an_old_manifest_reads_as_log_mel_only_and_names_the_command_for_more(tmp_path, params):
    data = _prepare(tmp_path, params, "old")
    manifest_path = tmp_path / "old" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    # As knd prepare wrote it before feature groups existed: the log-mel's keys at the top, its
    # values in the column "features", no other group.
    logmel = manifest.pop("feature_groups")["logmel"]
    del manifest["version"], manifest["feature_params"]["groups"]
    manifest |= {f"feature_{key}": logmel[key] for key in ("hash", "shape", "dtype")}
    manifest_path.write_text(json.dumps(manifest))
    shard = tmp_path / "old" / manifest["shards"][0]
    stored = pq.read_table(shard).drop_columns(["prosody", "egemaps"])
    pq.write_table(
        stored.rename_columns(["features" if c == "logmel" else c for c in stored.column_names]),
        shard,
    )
    assert list(manifest_groups(manifest_from_v1(manifest))) == ["logmel"]
    table = load_features(data)
    assert table.manifest["version"] == 2 and list(table.groups) == ["logmel"]
    assert table.groups["logmel"].shape[0] == 4
    with pytest.raises(ValueError) as refused:
        load_features(data, groups=["egemaps"])
    message = str(refused.value)
    assert "no 'egemaps' group" in message and "\n" not in message
    assert f"output={data} features.groups=[logmel,egemaps]" in message


def test_a_group_made_with_other_parameters_is_refused(tmp_path, params):
    every = dataclasses.replace(params, groups=EVERY)
    data = _prepare(tmp_path, every, "every")
    manifest = json.loads((tmp_path / "every" / "manifest.json").read_text())
    check_groups(data, manifest, {"prosody": manifest["feature_groups"]["prosody"]["hash"]})
    with pytest.raises(ValueError, match="prosody features .* other parameters"):
        check_groups(data, manifest, {"prosody": "0123456789abcdef"})


def test_old_checkpoint_meta_reads_the_log_mel_alone_and_bad_group_keys_are_refused():
    old = meta_from_v1(checkpoint_meta_v1())
    assert meta_problem(old) is None
    assert model_groups(old) == {"logmel": "abc123"}
    fused = checkpoint_meta() | {"groups": {"logmel": "abc123", "prosody": "feed"}}
    fused["model"] = {"name": "fused_cnn", "width": 8, "groups": ["logmel", "prosody"]}
    assert "group_norm" in meta_problem(fused)  # no statistics for a group the model reads
    fused["group_norm"]["prosody"] = {"mean": [0.0] * 4, "std": [1.0] * 4}
    assert meta_problem(fused) is None
    assert model_groups(fused) == {"logmel": "abc123", "prosody": "feed"}
    fused["group_norm"]["prosody"]["std"] = [1.0, float("nan"), 1.0, 1.0]
    assert "finite" in meta_problem(fused)
    fused["group_norm"]["prosody"]["std"] = [1.0] * 4
    fused["model"]["groups"] = ["logmel", "pitch"]
    assert "model.groups" in meta_problem(fused)


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        (["model.name=plain_cnn", "model.groups=[logmel,prosody]"], "plain_cnn reads [logmel]"),
        (["model.name=fused_cnn", "model.groups=[prosody]"], "fused_cnn needs logmel"),
        (["model.name=egemaps_mlp", "model.groups=[logmel,egemaps]"], "reads [egemaps] only"),
        (["model.groups=[logmel,logmel]"], "twice"),
        (["model.groups=[logmel,pitch]"], "model.groups"),
    ],
)
def test_a_model_that_cannot_read_its_groups_is_a_config_error(overrides, problem):
    with pytest.raises(ConfigError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        load_config("train", ["data=x", *overrides])


def test_prepare_refuses_groups_without_the_log_mel():
    with pytest.raises(ConfigError, match="features.groups: must include logmel"):
        load_config("prepare", ["input=x", "output=y", "features.groups=[prosody]"])


def test_score_refuses_to_compute_a_group_another_version_of_the_code_made(params):
    from knd.audio.features import check_computes, group_hash

    every = dataclasses.replace(params, groups=EVERY)
    current = {g: group_hash(g, every) for g in EVERY}
    check_computes(current, every, "ckpt")  # the same code: nothing to refuse
    check_computes({"logmel": None}, every, "ckpt")  # an old checkpoint records no group hash
    with pytest.raises(ValueError, match=r"ckpt: its prosody features have hash 00ff.*algorithm"):
        check_computes(current | {"prosody": "00ff"}, every, "ckpt")
