"""RAVDESS names and speaker-independent splits."""

from __future__ import annotations

import itertools

import pytest

from knd.data.ravdess import (
    ACTORS,
    EMOBOX_FOLDS,
    actor_folds,
    parse_name,
    split_actors,
)


def test_parse_a_real_ravdess_name():
    clip = parse_name("Actor_03/03-01-05-02-01-02-03.wav")
    assert (clip.modality, clip.vocal_channel, clip.emotion) == (3, 1, 5)
    assert (clip.intensity, clip.statement, clip.repetition, clip.actor) == (2, 1, 2, 3)
    assert clip.emotion_name == "angry"
    assert clip.gender == "male"
    assert parse_name("x/03-01-01-01-01-01-24.flac").gender == "female"
    assert clip.file_name() == "03-01-05-02-01-02-03.wav"


@pytest.mark.parametrize(
    "name,reason",
    [
        ("hello.wav", "expected MM-VV-EE-II-SS-RR-AA"),
        ("03-01-09-01-01-01-01.wav", "emotion 09"),
        ("03-01-01-02-01-01-01.wav", "neutral has no strong intensity"),
        ("03-01-05-01-01-01-25.wav", "actor 25"),
        ("03-03-05-01-01-01-01.wav", "vocal channel 03"),
        ("03-01-05-01-01-01.wav", "expected"),
    ],
)
def test_malformed_names_are_rejected_with_the_reason(name, reason):
    with pytest.raises(ValueError, match=reason):
        parse_name(name)


def test_split_is_disjoint_and_covers_every_actor():
    split = split_actors(test_actors=EMOBOX_FOLDS[0], val_actors=EMOBOX_FOLDS[1])
    parts = [set(split.train), set(split.val), set(split.test)]
    for a, b in itertools.combinations(parts, 2):
        assert not a & b
    assert set().union(*parts) == set(ACTORS)


def test_split_refuses_overlap_and_unknown_actors():
    with pytest.raises(ValueError, match="both"):
        split_actors(test_actors=[1, 2], val_actors=[2, 3])
    with pytest.raises(ValueError, match="not in the corpus"):
        split_actors(test_actors=[30], val_actors=[2])


def test_emobox_folds_partition_the_24_actors():
    flat = [a for fold in EMOBOX_FOLDS for a in fold]
    assert sorted(flat) == list(ACTORS)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_actor_folds_are_disjoint_and_exclude_the_test_group(k):
    test = EMOBOX_FOLDS[0]
    folds = actor_folds(ACTORS, k, exclude=test)
    assert len(folds) == k
    seen = [a for f in folds for a in f]
    assert len(seen) == len(set(seen))
    assert not set(seen) & set(test)
    assert set(seen) == set(ACTORS) - set(test)


def test_actor_folds_on_a_small_corpus_fall_back_to_round_robin():
    folds = actor_folds(range(1, 9), 3, exclude=[1, 2])
    assert sorted(a for f in folds for a in f) == [3, 4, 5, 6, 7, 8]
    with pytest.raises(ValueError, match="cannot make"):
        actor_folds([1, 2], 3)
