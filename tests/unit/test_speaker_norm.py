"""Per-speaker standardisation: statistics over real frames only, without labels, shrunk sanely."""

from __future__ import annotations

import numpy as np
import pytest

from knd.audio.features import LOG_FLOOR_DB, log_mel
from knd.audio.prosody import ENERGY_FLOOR_DB
from knd.config.loading import load_config
from knd.data.shards import FeatureTable
from knd.learning.speaker_norm import (
    batch_moments,
    pooled_stats,
    shrunk_stats,
    speaker_moments,
    speaker_normalised,
)

RNG = np.random.default_rng(0)
PRIOR = {"mean": [0.0, 0.0], "std": [1.0, 1.0]}


def test_padding_frames_are_not_counted_in_a_speakers_statistics():
    params = load_config("prepare", ["input=a", "output=b"]).features
    speech = (RNG.standard_normal(16000) * 0.1).astype(np.float32)
    padded = np.zeros(3 * 16000, np.float32)
    padded[16000:32000] = speech  # one second of speech centred in three: padding both sides
    features = log_mel(padded, params)[None]
    moments = batch_moments("logmel", features)
    assert moments.count.min() >= 100 and moments.count.max() <= 106  # 101 frames + the edges
    own = log_mel(speech, params)
    mean, _ = moments.mean_std()
    np.testing.assert_allclose(mean, own.mean(axis=1), atol=1.5)  # a few edge frames differ
    # Counting the padding would drag every band's mean most of the way to the floor.
    assert np.all(features[0].mean(axis=1) < mean - 30)


def test_prosody_and_waveform_padding_is_skipped_too():
    prosody = np.zeros((1, 4, 10), np.float32)
    prosody[0, 3] = ENERGY_FLOOR_DB
    prosody[0, :, 2:5] = [[5.0], [1.0], [0.5], [-30.0]]
    assert batch_moments("prosody", prosody).count.tolist() == [3, 3, 3, 3]
    np.testing.assert_allclose(batch_moments("prosody", prosody).mean_std()[0], [5, 1, 0.5, -30])
    wave = np.zeros((1, 1, 100), np.float32)
    wave[0, 0, 40:60] = 0.5
    assert batch_moments("waveform", wave).count.tolist() == [20]


def _table(values: np.ndarray, speakers, emotions) -> FeatureTable:
    n = len(values)
    return FeatureTable(
        groups={"egemaps": values},
        label=np.asarray(emotions) - 1,
        actor=np.asarray(speakers),
        emotion=np.asarray(emotions),
        path=np.array([f"c{i}.wav" for i in range(n)], dtype=object),
        duration=np.ones(n, np.float32),
        manifest={},
    )


def test_statistics_use_no_labels_and_every_clip_of_the_speaker():
    values = RNG.standard_normal((40, 88)).astype(np.float32) + np.repeat([0.0, 5.0], 20)[:, None]
    speakers = np.repeat([1, 2], 20)
    emotions = np.tile([1, 2, 3, 4], 10)
    normed, prior = speaker_normalised(_table(values, speakers, emotions), ["egemaps"], None, 4.0)
    relabelled, _ = speaker_normalised(
        _table(values, speakers, emotions[::-1]), ["egemaps"], None, 4.0
    )
    np.testing.assert_array_equal(normed.groups["egemaps"], relabelled.groups["egemaps"])
    # Each speaker is centred near itself (5 apart before; 20 clips give it 20/24 of the weight).
    means = [normed.groups["egemaps"][speakers == s].mean() for s in (1, 2)]
    assert all(abs(m) < 0.3 for m in means) and abs(means[1] - means[0]) < 0.6
    assert np.mean(prior["egemaps"]["mean"]) == pytest.approx(2.5, abs=0.1)


def test_one_clip_takes_mostly_the_prior_and_never_blows_up():
    one = batch_moments("egemaps", np.array([[3.0, -2.0]]))
    mean, std = shrunk_stats(one, PRIOR, prior_clips=4.0)
    w = 1 / 5
    np.testing.assert_allclose(mean, [3.0 * w, -2.0 * w])
    assert np.all(std >= np.sqrt(1 - w))  # at least (1 - w) of the prior's variance
    assert np.all(np.abs((np.array([3.0, -2.0]) - mean) / std) < 3)  # a sane z-score


def test_two_clips_lean_further_towards_the_speaker_and_many_become_its_own():
    clips = np.array([[3.0, -2.0], [3.5, -2.5]])
    mean_1, _ = shrunk_stats(batch_moments("egemaps", clips[:1]), PRIOR, 4.0)
    mean_2, std_2 = shrunk_stats(batch_moments("egemaps", clips), PRIOR, 4.0)
    assert np.all(np.abs(mean_2 - clips.mean(axis=0)) < np.abs(mean_1 - clips.mean(axis=0)))
    assert np.all(np.isfinite(std_2)) and np.all(std_2 > 0.5)
    many = RNG.normal([3.0, -2.0], [0.2, 0.3], size=(4000, 2))
    mean_n, std_n = shrunk_stats(batch_moments("egemaps", many), PRIOR, 4.0)
    np.testing.assert_allclose(mean_n, [3.0, -2.0], atol=0.02)
    np.testing.assert_allclose(std_n, [0.2, 0.3], rtol=0.15)  # the far prior adds a little


def test_a_channel_the_speaker_never_reached_takes_the_prior():
    silent = np.full((1, 64, 5), LOG_FLOOR_DB, np.float32)  # nothing but padding
    prior = {"mean": [-40.0] * 64, "std": [10.0] * 64}
    mean, std = shrunk_stats(batch_moments("logmel", silent), prior, 4.0)
    np.testing.assert_allclose(mean, -40.0) and np.testing.assert_allclose(std, 10.0)


def test_pooled_statistics_are_every_speakers_clips_together():
    values = RNG.standard_normal((30, 2))
    speakers = np.repeat([1, 2, 3], 10)
    pooled = pooled_stats(speaker_moments({"egemaps": values}, speakers))["egemaps"]
    np.testing.assert_allclose(pooled["mean"], values.mean(axis=0))
    np.testing.assert_allclose(pooled["std"], values.std(axis=0))


def test_tune_trials_read_the_speaker_columns_when_their_config_says_so():
    from pathlib import Path

    from knd.data.label_sets import label_set
    from knd.stages.tune import load_columns, trial_tensors

    features = str(Path(__file__).parents[1] / "fixtures" / "v1" / "features")
    labels = label_set("all", ("neutral", "happy", "angry"))
    groups = {"logmel": None}
    plain = load_columns(features, [1, 2], groups, labels)
    both = load_columns(features, [1, 2], groups, labels, prior_clips=4.0)
    assert "speaker:logmel" not in plain and "speaker:logmel" in both
    np.testing.assert_array_equal(both["logmel"], plain["logmel"])
    by_speaker = load_config("train", ["data=x", "recipe=cpu_small", "normalise=speaker"])
    tensors = trial_tensors(both, by_speaker, "cpu")
    np.testing.assert_allclose(tensors["logmel"].numpy(), both["speaker:logmel"])
    assert not np.allclose(both["speaker:logmel"], both["logmel"])
