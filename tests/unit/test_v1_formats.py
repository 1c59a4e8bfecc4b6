"""Features and checkpoints written by the v1 code (tests/fixtures/v1) still read the same."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from knd.data.shards import load_features
from knd.learning.checkpoint import load_model
from knd.learning.inference import score_actors

V1 = Path(__file__).resolve().parents[1] / "fixtures" / "v1"
FEATURES, CHECKPOINT = str(V1 / "features"), str(V1 / "checkpoint")


@pytest.fixture(scope="module")
def expected() -> dict:
    return json.loads((V1 / "expected.json").read_text())


def test_v1_features_load_the_values_that_were_written(expected):
    table = load_features(FEATURES, groups=["prosody", "egemaps"])
    groups = table.inputs()
    assert len(table) == 6
    assert groups["logmel"].shape == (6, 8, 21)
    assert groups["prosody"].shape == (6, 4, 21) and groups["egemaps"].shape == (6, 88)
    for group in ("logmel", "prosody", "egemaps"):
        assert groups[group].astype(np.float64).sum() == expected[f"{group}_sum"]
    np.testing.assert_array_equal(groups["logmel"][0], np.float32(expected["logmel_first"]))


def test_v1_checkpoint_scores_v1_features_as_it_did(expected):
    model, meta = load_model(CHECKPOINT)
    scores = score_actors(model, meta, FEATURES, [1, 2])
    assert list(scores.table.path) == expected["path"]
    np.testing.assert_allclose(scores.probs, np.float32(expected["probs"]), rtol=0, atol=1e-6)


def test_v1_checkpoint_evaluates_on_v1_features(tmp_path):
    from knd.config.loading import load_config
    from knd.stages import evaluate

    cfg = load_config("evaluate", checkpoint=CHECKPOINT, data=FEATURES, out=str(tmp_path))
    result = evaluate.run(cfg)
    assert result.metrics["test"]["n"] == 3
    rows = (tmp_path / evaluate.PER_ACTOR_FILE).read_text().splitlines()
    assert rows[0].startswith("actor,speaker,n,") and rows[1].startswith("2,2,3,")


def test_v1_manifest_and_meta_read_as_version_2_with_their_hashes():
    from knd.learning.checkpoint import load_meta

    written = json.loads((V1 / "features" / "manifest.json").read_text())
    table = load_features(FEATURES)
    assert table.manifest["version"] == 2 and "feature_hash" not in table.manifest
    logmel = table.manifest["feature_groups"]["logmel"]
    assert logmel["hash"] == written["feature_hash"] and logmel["column"] == "features"
    assert list(table.groups) == ["logmel"]
    meta = load_meta(CHECKPOINT)
    old = json.loads((V1 / "checkpoint" / "meta.json").read_text())
    assert meta["version"] == 2 and "norm" not in meta and "feature_hash" not in meta
    assert meta["groups"] == old["groups"] | {"logmel": old["feature_hash"]}
    assert meta["group_norm"] == {"logmel": old["norm"], **old["group_norm"]}


def test_parts_a_v1_run_staged_are_not_resumed_under_a_v2_manifest(tmp_path):
    """A v1 run killed mid-prepare left parts whose log-mel column is ``features``; the v2 run
    must stage elsewhere (v1 named the folder by a key without the format's version)."""
    from knd.audio.features import feature_hash, group_specs
    from knd.config.loading import load_config
    from knd.data.staging import staging_key
    from knd.stages.prepare import staging_folders

    cfg = load_config("prepare", [f"input={tmp_path}", f"output={tmp_path / 'out'}"])
    logmel = feature_hash(cfg.features)
    groups = {g: spec["hash"] for g, spec in group_specs(cfg.features).items()}
    v1_key = staging_key(["listing", logmel, groups, cfg.require_labels])
    staging, folder = staging_folders(cfg, "listing")
    assert folder.startswith(f"shards-{logmel[:8]}-")
    assert folder != f"shards-{logmel[:8]}-{v1_key[:8]}"
    assert staging_folders(cfg, "listing") == (staging, folder)  # and stable across reruns
