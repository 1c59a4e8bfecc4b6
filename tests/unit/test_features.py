"""The feature function: fixed shape whatever the input, and a hash that tracks the parameters."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from knd.audio.features import (
    clip_features,
    feature_hash,
    feature_shape,
    group_specs,
    log_mel,
    normalise,
)
from knd.config.loading import load_config


@pytest.fixture(scope="module")
def params():
    return load_config("prepare", ["input=x", "output=y"]).features


def voice(seconds: float, sr: int, f0: float = 180.0) -> np.ndarray:
    """A harmonic tone with a slow amplitude envelope: enough structure for a spectrogram."""
    t = np.arange(int(seconds * sr)) / sr
    wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6))
    return (0.3 * wave * np.hanning(len(t))).astype(np.float32)


def test_stereo_44k_and_mono_16k_give_the_same_shape_and_similar_features(params):
    mono16 = voice(2.0, 16000)
    stereo44 = np.stack([voice(2.0, 44100)] * 2, axis=1)
    a, dur_a = clip_features(mono16, 16000, params)
    b, dur_b = clip_features(stereo44, 44100, params)
    assert a.shape == b.shape == feature_shape(params)
    assert a.dtype == b.dtype == np.float32
    assert dur_a == pytest.approx(2.0) and dur_b == pytest.approx(2.0)
    loud = a > a.max() - 30  # compare where there is energy, not the -100 dB floor
    assert np.median(np.abs(a[loud] - b[loud])) < 1.0


def test_long_and_short_clips_are_fitted(params):
    for seconds in (0.4, 7.5):
        feats, duration = clip_features(voice(seconds, 16000), 16000, params)
        assert feats.shape == feature_shape(params)
        assert duration == pytest.approx(seconds)
        assert np.isfinite(feats).all()


def test_leading_silence_is_trimmed_before_fitting(params):
    sr = params.sample_rate
    speech = voice(1.0, sr)
    delayed = np.concatenate([np.zeros(2 * sr, np.float32), speech])
    np.testing.assert_allclose(
        clip_features(delayed, sr, params)[0], clip_features(speech, sr, params)[0], atol=1e-3
    )


def test_log_mel_shape_and_floor(params):
    n = int(params.clip_seconds * params.sample_rate)
    feats = log_mel(np.zeros(n, np.float32), params)
    assert feats.shape == feature_shape(params)
    assert feats.max() == pytest.approx(-100.0)


def test_feature_hash_is_stable_and_tracks_every_parameter(params):
    assert feature_hash(params) == feature_hash(dataclasses.replace(params))
    assert len(feature_hash(params)) == 16
    logmel_fields = [f for f in dataclasses.fields(params) if f.name not in ("groups", "encoder")]
    changed = {
        feature_hash(dataclasses.replace(params, **{f.name: other}))
        for f, other in zip(
            logmel_fields,
            (8000, 2.0, 30.0, 1024, 320, 80, 40, 20.0, 7000.0, "float32"),
            strict=True,
        )
    }
    assert len(changed) == len(logmel_fields)
    assert feature_hash(params) not in changed
    assert feature_hash(dataclasses.replace(params, encoder="elsewhere")) == feature_hash(params)


def test_adding_groups_keeps_the_logmel_hash_and_each_group_has_its_own(params):
    every = dataclasses.replace(params, groups=("logmel", "prosody", "egemaps"))
    assert feature_hash(every) == feature_hash(params)  # old manifests and checkpoints still fit
    specs = group_specs(every)
    assert specs["logmel"]["hash"] == feature_hash(params)
    assert len({spec["hash"] for spec in specs.values()}) == 3
    # The prosody grid is the log-mel's: a new hop moves both hashes, a new n_mels only one.
    hop = group_specs(dataclasses.replace(every, hop_length=320))
    assert hop["prosody"]["hash"] != specs["prosody"]["hash"]
    assert hop["prosody"]["shape"][1] == hop["logmel"]["shape"][1]
    mels = group_specs(dataclasses.replace(every, n_mels=80))
    assert mels["prosody"]["hash"] == specs["prosody"]["hash"]
    assert mels["logmel"]["hash"] != specs["logmel"]["hash"]
    assert specs["egemaps"]["shape"] == [88]


def test_normalise_standardises_each_band_numpy_and_torch(params):
    import torch

    rng = np.random.default_rng(0)
    feats = rng.normal(5.0, 3.0, size=(10, 4, 20)).astype(np.float32)
    mean = feats.mean(axis=(0, 2))
    std = feats.std(axis=(0, 2))
    out = normalise(feats, mean, std)
    np.testing.assert_allclose(out.mean(axis=(0, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 2)), 1, atol=1e-5)
    out_t = normalise(torch.from_numpy(feats), mean, std)
    np.testing.assert_allclose(out_t.numpy(), out, atol=1e-5)
    assert np.isfinite(normalise(np.ones((4, 3), np.float32), np.ones(4), np.zeros(4))).all()


def test_the_group_table_has_every_configurable_group_and_keeps_the_v1_hashes():
    import json
    from pathlib import Path

    from knd.audio.features import GROUPS, group_hash, stored_params
    from knd.config.schema import FEATURE_GROUPS

    assert tuple(GROUPS) == FEATURE_GROUPS
    assert all(GROUPS[name].name == name for name in GROUPS)
    v1 = Path(__file__).resolve().parents[1] / "fixtures" / "v1" / "features" / "manifest.json"
    manifest = json.loads(v1.read_text())
    params = stored_params(manifest["feature_params"])
    for name, spec in manifest["feature_groups"].items():
        assert group_hash(name, params) == spec["hash"]
