"""Pretrained speech encoders, on tiny random encoders of the real architectures (no downloads):
identity by the files' bytes, per-layer statistics, the two heads, what fine-tuning trains."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
import torch
from conftest import write_tiny_encoder

from knd.audio import encoder, features
from knd.config.loading import load_config
from knd.learning.checkpoint import make_meta, meta_problem
from knd.learning.engine import Learner, make_optimizer
from knd.learning.heads import EmbeddingHead, EncoderClassifier, LayerWeights

KINDS = ("wav2vec2", "hubert", "wavlm")


def _speechlike(seconds: float, rate: int = 16_000, f0: float = 140.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
    return (0.1 * wave + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def test_identity_is_the_files_bytes_not_the_folder(tmp_path, tiny_encoders):
    copy = shutil.copytree(tiny_encoders["wav2vec2"], tmp_path / "elsewhere")
    other = write_tiny_encoder(tmp_path / "reseeded", "wav2vec2", seed=1)
    same = encoder.folder_hash(tiny_encoders["wav2vec2"])
    assert encoder.folder_hash(str(copy)) == same
    assert encoder.folder_hash(other) != same
    assert encoder.folder_hash(tiny_encoders["hubert"]) != same


@pytest.mark.parametrize("kind", KINDS)
def test_layer_stats_are_per_state_mean_and_std(kind, tiny_encoders):
    folder = tiny_encoders[kind]
    wave = _speechlike(1.0)
    stats = encoder.layer_stats(wave, 16_000, folder)
    assert stats.shape == (3, 64) and stats.dtype == np.float32  # projection + 2 layers
    assert np.isfinite(stats).all()
    assert (stats[:, 32:] >= 0).all() and stats[:, 32:].max() > 0  # the std half
    np.testing.assert_array_equal(stats, encoder.layer_stats(wave, 16_000, folder))
    other = encoder.layer_stats(_speechlike(1.0, f0=220.0, seed=1), 16_000, folder)
    assert np.abs(other - stats).max() > 1e-3


def test_input_at_another_rate_is_resampled_and_a_click_still_gives_a_frame(tiny_encoders):
    folder = tiny_encoders["wavlm"]
    at_16k = encoder.layer_stats(_speechlike(1.0), 16_000, folder)
    at_48k = encoder.layer_stats(_speechlike(1.0, rate=48_000), 48_000, folder)
    assert np.abs(at_48k - at_16k).mean() < 0.1 * np.abs(at_16k).mean()
    click = encoder.layer_stats(np.ones(10, np.float32), 16_000, folder)
    assert click.shape == (3, 64) and np.isfinite(click).all()


def test_a_folder_that_is_not_an_encoder_is_one_line_naming_it(tmp_path):
    with pytest.raises(encoder.EncoderError, match=r"no config\.json") as info:
        (tmp_path / "model.safetensors").write_bytes(b"x")
        encoder.describe(str(tmp_path))
    assert str(tmp_path) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(encoder.EncoderError, match="no such folder"):
        encoder.describe(str(tmp_path / "missing" / "deeper"))


def test_the_embedding_group_hash_follows_the_encoder_and_leaves_the_logmel_alone(
    tmp_path, tiny_encoders
):
    base = load_config("prepare", ["input=a", "output=b"]).features
    first = dataclasses.replace(
        base, groups=("logmel", "embedding"), encoder=tiny_encoders["wav2vec2"]
    )
    second = dataclasses.replace(first, encoder=write_tiny_encoder(tmp_path / "b", seed=3))
    specs = features.group_specs(first)
    assert specs["embedding"]["shape"] == [3, 64]
    assert features.group_hash("embedding", second) != specs["embedding"]["hash"]
    assert features.feature_hash(second) == features.feature_hash(base)
    groups, _ = features.clip_groups(_speechlike(2.0, rate=22_050), 22_050, first)
    assert groups["embedding"].shape == (3, 64)


def test_the_waveform_group_is_the_fitted_clip(tiny_encoders):
    params = load_config("prepare", ["input=a", "output=b"]).features
    params = dataclasses.replace(params, groups=("logmel", "waveform"))
    groups, _ = features.clip_groups(_speechlike(1.0), 16_000, params)
    assert groups["waveform"].shape == (1, features.clip_samples(params))
    assert features.group_specs(params)["waveform"]["shape"] == [1, 48_000]


def test_layer_weights_are_a_convex_mix_or_one_fixed_layer():
    stacked = torch.randn(2, 3, 5, 10)  # [batch, layers, frames, hidden]
    mixed = LayerWeights(3)
    torch.testing.assert_close(mixed(stacked), stacked.mean(dim=1))  # zero logits: the mean
    assert float(mixed.weights().sum()) == pytest.approx(1.0)
    torch.testing.assert_close(LayerWeights(3, layer=2)(stacked), stacked[:, 2])
    with pytest.raises(ValueError, match="layer 3 does not exist"):
        LayerWeights(3, layer=3)


def _train_cfg(*overrides: str):
    return load_config("train", ["data=x", *overrides])


def test_an_embedding_head_learns_separable_classes():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    labels = torch.as_tensor(rng.integers(0, 4, 256))
    centres = rng.standard_normal((4, 3, 16)).astype(np.float32)
    embedding = torch.as_tensor(centres[labels] + 0.5 * rng.standard_normal((256, 3, 16)))
    embedding = embedding.float()
    cfg = _train_cfg(
        "model.name=embedding_head", "model.groups=[embedding]", "model.fusion_width=32"
    )
    inputs = {"logmel": torch.zeros(256, 2, 3), "embedding": embedding}
    norm = {
        "logmel": {"mean": [0.0, 0.0], "std": [1.0, 1.0]},
        "embedding": {"mean": np.zeros((3, 16)).tolist(), "std": np.ones((3, 16)).tolist()},
    }
    learner = Learner(cfg, 4, norm, steps_per_epoch=8, device=torch.device("cpu"))
    batches = [
        ({g: v[i : i + 32] for g, v in inputs.items()}, labels[i : i + 32])
        for i in range(0, 256, 32)
    ]
    before = learner.evaluate(batches)["accuracy"]
    for _ in range(10):
        learner.train_epoch(batches)
    after = learner.evaluate(batches)["accuracy"]
    assert after > 0.9 > before + 0.3


def test_fine_tuning_trains_the_top_layers_and_the_head_at_two_rates(tiny_encoders):
    folder = tiny_encoders["hubert"]
    cfg = _train_cfg(
        "model.name=encoder_finetune",
        "model.groups=[waveform]",
        f"model.encoder={folder}",
        "model.finetune_layers=1",
        "model.encoder_lr_scale=0.1",
    )
    model = EncoderClassifier(8, encoder.load_pretrained(folder), 1, 16, 0.0)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith("encoder.feature_extractor") for n in trainable)
    assert any(n.startswith("encoder.encoder.layers.1.") for n in trainable)
    assert not any(n.startswith("encoder.encoder.layers.0.") for n in trainable)
    rates = {g["lr_scale"] for g in make_optimizer(model, cfg).param_groups}
    assert rates == {1.0, 0.1}
    norm = {"logmel": {"mean": [0.0], "std": [1.0]}, "waveform": {"mean": [0.0], "std": [0.1]}}
    learner = Learner(cfg, 8, norm, steps_per_epoch=1, device=torch.device("cpu"))
    lower = learner.model.encoder.encoder.layers[0].attention.k_proj.weight.clone()
    upper = learner.model.encoder.encoder.layers[1].attention.k_proj.weight.clone()
    wave = torch.as_tensor(np.stack([_speechlike(0.5, seed=i) for i in range(4)]))[:, None]
    learner.train_step({"logmel": torch.zeros(4, 1, 2), "waveform": wave}, torch.arange(4))
    assert torch.equal(learner.model.encoder.encoder.layers[0].attention.k_proj.weight, lower)
    assert not torch.equal(learner.model.encoder.encoder.layers[1].attention.k_proj.weight, upper)


def test_a_checkpoint_meta_records_the_encoder_and_refuses_a_huge_one(tiny_encoders):
    cfg = _train_cfg(
        "model.name=encoder_finetune",
        "model.groups=[waveform]",
        f"model.encoder={tiny_encoders['wavlm']}",
    )
    manifest = {
        "feature_params": {},
        "feature_groups": {
            "logmel": {"hash": "abc", "shape": [64, 301], "dtype": "float16"},
            "waveform": {"hash": "w", "shape": [1, 48000], "dtype": "float16"},
        },
    }
    stats = {"mean": [0.0], "std": [1.0]}
    norm = {"logmel": {"mean": [0.0] * 64, "std": [1.0] * 64}, "waveform": stats}
    meta = make_meta(cfg, manifest, norm, {"train": [1], "test": [2]}, run="r")
    assert meta["model"]["encoder_hash"] == encoder.folder_hash(tiny_encoders["wavlm"])
    assert meta["model"]["encoder_config"]["model_type"] == "wavlm"
    assert meta_problem(meta) is None
    meta["model"]["encoder_config"]["hidden_size"] = 10**6
    assert "encoder_config.hidden_size" in meta_problem(meta)


def test_embedding_statistics_are_a_table_in_the_meta():
    cfg = _train_cfg("model.name=embedding_head", "model.groups=[embedding]")
    manifest = {
        "feature_params": {},
        "feature_groups": {"logmel": {"hash": "abc"}, "embedding": {"hash": "e"}},
    }
    table = {"mean": np.zeros((3, 8)).tolist(), "std": np.ones((3, 8)).tolist()}
    norm = {"logmel": {"mean": [0.0] * 64, "std": [1.0] * 64}, "embedding": table}
    meta = make_meta(cfg, manifest, norm, {"train": [1], "test": [2]}, run="r")
    assert meta_problem(meta) is None
    meta["group_norm"]["embedding"]["std"] = np.ones((3, 7)).tolist()
    assert "differ in shape" in meta_problem(meta)
    assert EmbeddingHead(8, (3, 8), -1, 16, 0.0)(None, torch.randn(2, 3, 8)).shape == (2, 8)


def test_prepare_refuses_an_unusable_encoder_before_any_work(tmp_path):
    from knd.stages.prepare import run

    args = [f"input={tmp_path}", f"output={tmp_path / 'out'}", "features.groups=[logmel,embedding]"]
    (tmp_path / "weightless").mkdir()
    for folder, reason in (("missing", "no such folder"), ("weightless", "no \\*.safetensors")):
        cfg = load_config("prepare", [*args, f"features.encoder={tmp_path / folder}"])
        with pytest.raises(encoder.EncoderError, match=reason):
            run(cfg)
    assert not (tmp_path / "out").exists()
