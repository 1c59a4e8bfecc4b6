"""Feature groups end to end on real local Ray: prepare -> train -> evaluate -> score with the
log-mel, prosody and eGeMAPS groups, and a checkpoint that refuses features lacking its groups."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from knd.config.loading import load_config
from knd.data import storage
from knd.data.ravdess import EMOTIONS

pytestmark = pytest.mark.ray

GROUPS = "[logmel,prosody,egemaps]"
P_COLUMNS = [f"p_{name}" for name in EMOTIONS]
CLIP_STEP = 5
CLIPS = 3 * 60 // CLIP_STEP
"""Every 5th of the 60 clips of each of the three actors: eGeMAPS and pitch tracking cost most of
this module's time, per clip; 11 of actor 3's 12 clips fit one clip (the scoring check needs 10)."""


@pytest.fixture(scope="module")
def grouped_features(tiny_corpus, ray_session, tmp_path_factory):
    """A slice of three actors of the tiny corpus, prepared with every feature group."""
    from knd.stages.prepare import run

    corpus = tmp_path_factory.mktemp("three_actors")
    for actor in ("Actor_01", "Actor_02", "Actor_03"):
        (corpus / actor).mkdir()
        for path in sorted((Path(tiny_corpus) / actor).iterdir())[::CLIP_STEP]:
            shutil.copyfile(path, corpus / actor / path.name)
    out = tmp_path_factory.mktemp("grouped_features")
    cfg = load_config("prepare", [f"input={corpus}", f"output={out}", f"features.groups={GROUPS}"])
    result = run(cfg)
    assert result.exit_code == 0 and result.num_rejected == 0, result
    return str(corpus), str(out)


@pytest.fixture(scope="module")
def fused_run(grouped_features, tmp_path_factory):
    from knd.stages.train import run

    _, features = grouped_features
    cfg = load_config(
        "train",
        [
            f"data={features}",
            "model.name=fused_cnn",
            f"model.groups={GROUPS}",
            "model.width=8",
            "model.fusion_width=8",
            "optim.epochs=2",
            "split.test_speakers=[3]",
            "split.val_speakers=[]",
            "train.num_workers=1",
            f"run_dir={tmp_path_factory.mktemp('runs')}",
            "name=fused",
            "wandb.enabled=false",
        ],
    )
    return run(cfg)


def test_prepare_writes_every_group_finite_into_the_shards(grouped_features):
    from knd.data.shards import load_features, manifest_groups

    _, features = grouped_features
    manifest = json.loads(storage.read_text(storage.join(features, "manifest.json")))
    specs = manifest_groups(manifest)
    assert list(specs) == ["logmel", "prosody", "egemaps"]
    assert specs["prosody"]["shape"] == [4, manifest["feature_groups"]["logmel"]["shape"][1]]
    table = load_features(features, groups=["prosody", "egemaps"])
    assert table.groups["prosody"].shape == (
        CLIPS,
        4,
        manifest["feature_groups"]["logmel"]["shape"][1],
    )
    assert table.groups["egemaps"].shape == (CLIPS, 88)
    for values in table.groups.values():
        assert np.isfinite(values).all()
    # Speech-like clips are voiced for a good part of their frames, and F0 moves within a clip.
    voiced = table.groups["prosody"][:, 1]
    assert 0.2 < voiced.mean() < 0.95
    assert np.median(table.groups["prosody"][:, 0].std(axis=1)) > 0.3


def test_fused_model_trains_evaluates_and_scores_with_one_front_end(
    grouped_features, fused_run, tmp_path
):
    from knd.audio.features import clip_samples, mono_at_feature_rate, stored_params
    from knd.audio.waveform import decode_audio, trim_silence
    from knd.data.shards import load_features
    from knd.learning.checkpoint import load_meta, load_model
    from knd.learning.inference import predict
    from knd.stages.evaluate import run as evaluate
    from knd.stages.score import run as score

    corpus, features = grouped_features
    meta = load_meta(fused_run.checkpoint)
    assert meta["model"]["groups"] == ["logmel", "prosody", "egemaps"]
    assert set(meta["groups"]) == {"logmel", "prosody", "egemaps"}
    assert len(meta["group_norm"]["egemaps"]["mean"]) == 88
    assert fused_run.metrics["test"]["n"] == CLIPS // 3

    evaluated = evaluate(
        load_config("evaluate", [f"checkpoint={fused_run.checkpoint}", f"data={features}"])
    )
    assert evaluated.metrics["test"]["n"] == CLIPS // 3

    # Score a dozen files of the test actor from audio: score computes the groups itself. Files
    # no longer than one clip, so score takes exactly prepare's steps (a longer one is windowed).
    table = load_features(features, actors=[3], groups=["prosody", "egemaps"])
    params = stored_params(meta["feature_params"])

    def one_clip(path: str) -> bool:
        samples, rate = decode_audio(storage.read_bytes(str(Path(corpus) / path)))
        wave = trim_silence(mono_at_feature_rate(samples, rate, params), params.trim_db)
        return len(wave) <= clip_samples(params)

    short = sorted(p for p in table.path if one_clip(p))
    assert len(short) >= 10
    folder = tmp_path / "clips"
    chosen = [str(Path(corpus) / p) for p in short[:: len(short) // 10][:10]]
    for path in chosen:
        target = folder / "Actor_03" / Path(path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    output = tmp_path / "scores.parquet"
    args = [f"checkpoint={fused_run.checkpoint}", f"input={folder}", f"output={output}"]
    result = score(load_config("score", args))
    assert result.exit_code == 0 and result.failed == 0
    scored = pd.read_parquet(output)

    model, meta = load_model(fused_run.checkpoint)
    _, expected = predict(model, meta, table.inputs())
    rows = pd.Series(np.arange(len(table.path)), index=table.path)
    relative = [Path(p).relative_to(folder).as_posix() for p in scored["path"]]
    np.testing.assert_allclose(
        scored[P_COLUMNS].to_numpy(), expected[rows.loc[relative].to_numpy()], atol=1e-4
    )
    # Without the prosody and eGeMAPS inputs the probabilities would differ by far more.
    plain = dict(table.inputs(), prosody=np.zeros_like(table.groups["prosody"]))
    _, without = predict(model, meta, plain)
    assert np.abs(without - expected).max() > 100 * 1e-4


def test_a_checkpoint_refuses_features_that_lack_its_groups(grouped_features, fused_run, tmp_path):
    from knd.stages.evaluate import run as evaluate
    from knd.stages.prepare import run as prepare

    corpus, _ = grouped_features
    logmel_only = str(tmp_path / "logmel_only")
    args = [f"input={corpus}", f"output={logmel_only}", "features.groups=[logmel]"]
    assert prepare(load_config("prepare", args)).exit_code == 0
    cfg = load_config("evaluate", [f"checkpoint={fused_run.checkpoint}", f"data={logmel_only}"])
    with pytest.raises(ValueError, match=r"no 'prosody' group.*features\.groups=\[logmel"):
        evaluate(cfg)


def test_tune_searches_feature_groups_and_refits_with_the_winners(grouped_features, tmp_path):
    import yaml

    from knd.learning.checkpoint import load_meta
    from knd.stages.tune import run

    _, features = grouped_features
    space = tmp_path / "space.yaml"
    space.write_text(
        yaml.safe_dump(
            {
                "model.name": "fused_cnn",
                "model.width": 8,
                "model.fusion_width": 8,
                "optim.batch_size": 16,
                "optim.warmup_epochs": 0,
                "model.groups": {"grid": [["logmel", "prosody"], ["logmel", "egemaps"]]},
            }
        )
    )
    args = [
        f"data={features}",
        f"space={space}",
        "test_speakers=[3]",
        "folds=2",
        "num_samples=1",
        "max_epochs=1",
        "grace_epochs=1",
        f"storage_path={tmp_path / 'runs'}",
        "name=groups",
        "max_concurrent=1",
    ]
    result = run(load_config("tune", args))
    assert result.exit_code == 0 and result.num_trials == 2
    # Every trial trained and was scored on the groups it drew.
    trials = [
        json.loads(p.read_text()) for p in Path(result.experiment).glob("trial_*/params.json")
    ]
    searched = sorted(tuple(t["model.groups"]) for t in trials)
    assert searched == [("logmel", "egemaps"), ("logmel", "prosody")]
    scores = [json.loads(line) for p in Path(result.experiment).glob("trial_*/result.json")
              for line in p.read_text().splitlines() if line.strip()]  # fmt: skip
    assert len(scores) == 2 and all(0.0 <= r["uar"] <= 1.0 for r in scores)
    best = load_meta(str(Path(result.experiment) / "best" / "checkpoint"))
    assert best["model"]["name"] == "fused_cnn"
    assert best["model"]["groups"] in (["logmel", "prosody"], ["logmel", "egemaps"])
    side = [g for g in best["model"]["groups"] if g != "logmel"][0]
    assert set(best["group_norm"]) == set(best["groups"]) == {"logmel", side}
    assert result.test["n"] == CLIPS // 3
