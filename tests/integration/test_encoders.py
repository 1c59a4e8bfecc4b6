"""Pretrained encoders end to end on real local Ray, with tiny random encoders of two real
architectures (wav2vec 2.0 frozen, HuBERT fine-tuned): prepare the embedding and waveform groups,
train a head on the embeddings, evaluate, score a folder from audio, refuse an encoder whose files
differ, fine-tune an encoder one epoch and evaluate with the checkpoint alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_tiny_encoder

from knd.config.loading import load_config
from knd.data.ravdess import EMOTIONS

pytestmark = pytest.mark.ray

GROUPS = "[logmel,embedding,waveform]"
P_COLUMNS = [f"p_{name}" for name in EMOTIONS]
CLIPS = 36
"""A fifth of the 60 clips of each of the three actors."""


@pytest.fixture(scope="module")
def encoder_features(tiny_corpus, tiny_encoders, ray_session, tmp_path_factory):
    """A fifth of the clips of three actors, prepared with the embedding and waveform groups."""
    from knd.stages.prepare import run

    corpus = tmp_path_factory.mktemp("encoder_corpus")
    for actor in ("Actor_01", "Actor_02", "Actor_03"):
        (corpus / actor).mkdir()
        for path in sorted((Path(tiny_corpus) / actor).iterdir())[::5]:
            shutil.copyfile(path, corpus / actor / path.name)
    out = tmp_path_factory.mktemp("encoder_features")
    args = [f"input={corpus}", f"output={out}", f"features.groups={GROUPS}"]
    cfg = load_config("prepare", [*args, f"features.encoder={tiny_encoders['wav2vec2']}"])
    result = run(cfg)
    assert result.exit_code == 0 and result.num_rejected == 0, result
    return str(corpus), str(out)


def _train(features: str, run_dir, name: str, *overrides: str):
    from knd.stages.train import run

    args = [
        f"data={features}",
        "optim.epochs=2",
        "optim.batch_size=16",
        "optim.warmup_epochs=0",
        "split.test_speakers=[3]",
        "split.val_speakers=[]",
        "train.num_workers=1",
        f"run_dir={run_dir}",
        f"name={name}",
        "wandb.enabled=false",
        *overrides,
    ]
    return run(load_config("train", args))


def test_prepare_stores_the_encoder_statistics_and_the_waveform(encoder_features, tiny_encoders):
    from knd.audio.encoder import folder_hash
    from knd.audio.features import group_hash, stored_params
    from knd.data.shards import load_features, read_manifest

    _, features = encoder_features
    manifest = read_manifest(features)
    specs = manifest["feature_groups"]
    assert specs["embedding"]["shape"] == [3, 64] and specs["waveform"]["shape"] == [1, 48_000]
    params = stored_params(manifest["feature_params"])
    assert folder_hash(params.encoder) == folder_hash(tiny_encoders["wav2vec2"])
    assert specs["embedding"]["hash"] == group_hash("embedding", params)
    table = load_features(features, groups=["embedding", "waveform"])
    assert table.groups["embedding"].shape == (CLIPS, 3, 64)
    assert np.isfinite(table.groups["embedding"]).all()
    # Different clips give different statistics (the encoder saw the audio, not padding).
    assert np.std(table.groups["embedding"][:, 2, :32], axis=0).mean() > 1e-3
    assert np.abs(table.groups["waveform"]).max() > 0.01


@pytest.fixture(scope="module")
def head_run(encoder_features, tmp_path_factory):
    _, features = encoder_features
    return _train(
        features,
        tmp_path_factory.mktemp("head_runs"),
        "head",
        "recipe=wav2vec2_frozen",
        "optim.epochs=4",
    )


def test_a_head_on_embeddings_trains_evaluates_and_scores_audio_alike(
    encoder_features, head_run, tmp_path
):
    from knd.data.shards import load_features
    from knd.learning.checkpoint import load_meta, load_model
    from knd.learning.inference import predict
    from knd.stages.evaluate import run as evaluate
    from knd.stages.score import run as score

    corpus, features = encoder_features
    meta = load_meta(head_run.checkpoint)
    assert meta["model"]["name"] == "embedding_head" and meta["model"]["groups"] == ["embedding"]
    assert np.shape(meta["group_norm"]["embedding"]["mean"]) == (3, 64)
    assert head_run.metrics["test"]["n"] == CLIPS // 3
    evaluated = evaluate(
        load_config("evaluate", [f"checkpoint={head_run.checkpoint}", f"data={features}"])
    )
    assert evaluated.metrics["test"] == head_run.metrics["test"]

    # Score the test actor's files from audio: the actors run the encoder themselves.
    folder = tmp_path / "audio"
    shutil.copytree(Path(corpus) / "Actor_03", folder / "Actor_03")
    output = tmp_path / "scores.parquet"
    args = [f"checkpoint={head_run.checkpoint}", f"input={folder}", f"output={output}"]
    result = score(load_config("score", [*args, "per_window=true"]))
    assert result.exit_code == 0 and result.failed == 0 and result.num_files == CLIPS // 3
    scored = pd.read_parquet(output)
    assert scored["path"].nunique() == CLIPS // 3

    # A file of one window (no longer than a clip after trimming) took prepare's exact steps.
    windows = scored["path"].map(scored["path"].value_counts())
    single = scored[windows == 1]
    assert len(single) >= 3
    table = load_features(features, actors=[3], groups=["embedding"])
    model, meta = load_model(head_run.checkpoint)
    _, expected = predict(model, meta, table.inputs())
    rows = pd.Series(np.arange(len(table.path)), index=table.path)
    relative = [Path(p).relative_to(folder).as_posix() for p in single["path"]]
    np.testing.assert_allclose(
        single[P_COLUMNS].to_numpy(), expected[rows.loc[relative].to_numpy()], atol=1e-4
    )


def test_an_encoder_whose_files_differ_is_refused(encoder_features, head_run, tmp_path):
    from knd.stages.evaluate import run as evaluate
    from knd.stages.prepare import run as prepare
    from knd.stages.score import run as score

    corpus, _ = encoder_features
    other = write_tiny_encoder(tmp_path / "reseeded", "wav2vec2", seed=7)
    args = [
        f"checkpoint={head_run.checkpoint}",
        f"input={corpus}",
        f"output={tmp_path / 's.csv'}",
        f"encoder={other}",
    ]
    with pytest.raises(ValueError, match=r"encoder whose files differ.*encoder=DIR"):
        score(load_config("score", args))
    # Features embedded with the other encoder are refused by the checkpoint too.
    refeatured = tmp_path / "other_features"
    args = [f"input={corpus}", f"output={refeatured}", "features.groups=[logmel,embedding]"]
    assert prepare(load_config("prepare", [*args, f"features.encoder={other}"])).exit_code == 0
    cfg = load_config("evaluate", [f"checkpoint={head_run.checkpoint}", f"data={refeatured}"])
    with pytest.raises(ValueError, match=r"embedding features were made with other parameters"):
        evaluate(cfg)


def test_fine_tuning_trains_one_epoch_and_evaluates_without_the_encoder_folder(
    encoder_features, tiny_encoders, tmp_path
):
    from knd.learning.checkpoint import load_meta
    from knd.stages.evaluate import run as evaluate

    _, features = encoder_features
    folder = shutil.copytree(tiny_encoders["hubert"], tmp_path / "hubert")
    result = _train(
        features,
        tmp_path / "runs",
        "finetune",
        "recipe=hubert_finetune",
        f"model.encoder={folder}",
        "optim.epochs=1",
    )
    metrics = json.loads((Path(result.run_dir) / "metrics.json").read_text())
    assert metrics["test"]["n"] == CLIPS // 3
    meta = load_meta(result.checkpoint)
    assert meta["model"]["encoder_config"]["model_type"] == "hubert"
    shutil.rmtree(folder)  # the checkpoint carries the encoder's config and weights
    evaluated = evaluate(
        load_config("evaluate", [f"checkpoint={result.checkpoint}", f"data={features}"])
    )
    assert evaluated.metrics["test"] == metrics["test"]
