"""Speakers by the corpus's own ids, and each corpus's default folds."""

from __future__ import annotations

import pytest

from knd.config.loading import load_config
from knd.data.speakers import default_split, speaker_folds, speaker_names, speaker_numbers

MALE = ("03", "10", "11", "12", "15")
EMODB_GENDERS = {
    s: "male" if s in MALE else "female"
    for s in ("03", "08", "09", "10", "11", "12", "13", "14", "15", "16")
}


def emodb_manifest() -> dict:
    ids = sorted(EMODB_GENDERS)
    return {
        "corpus": "emodb",
        "rows_per_actor": {str(i): 50 for i in range(1, len(ids) + 1)},
        "speakers": {str(i): name for i, name in enumerate(ids, start=1)},
        "speaker_genders": {str(i): EMODB_GENDERS[n] for i, n in enumerate(ids, start=1)},
    }


def test_speakers_are_named_as_the_corpus_writes_them():
    manifest = emodb_manifest()
    assert speaker_numbers(["03", "16"], manifest, "test_speakers") == (1, 10)
    assert speaker_names((1, 10), manifest) == ["03", "16"]
    ravdess = {"rows_per_actor": {str(a): 60 for a in range(1, 25)}}
    assert speaker_numbers(["01", 11, "20"], ravdess, "split.test_speakers") == (1, 11, 20)
    with pytest.raises(ValueError, match=r"test_speakers: \['99'\] are not speakers"):
        speaker_numbers(["03", "99"], manifest, "test_speakers")


def test_a_corpus_without_published_folds_gets_gender_balanced_disjoint_folds():
    manifest = emodb_manifest()
    test, val = default_split(manifest, None, None)
    names = {int(k): v for k, v in manifest["speakers"].items()}
    genders = {int(k): v for k, v in manifest["speaker_genders"].items()}
    folds = speaker_folds(list(range(1, 11)), names, genders)
    assert len(folds) == 5 and sorted(n for f in folds for n in f) == list(range(1, 11))
    for fold in folds:
        genders = sorted(manifest["speaker_genders"][str(n)] for n in fold)
        assert genders == ["female", "male"]
    assert test == folds[0] and val == folds[1] and not set(test) & set(val)
    assert default_split(manifest, None, None) == (test, val)  # deterministic


def test_few_speakers_give_fewer_folds_and_no_validation_group():
    manifest = {"corpus": "tess", "rows_per_actor": {"1": 200, "2": 200},
                "speakers": {"1": "OAF", "2": "YAF"}}  # fmt: skip
    test, val = default_split(manifest, None, None)
    assert len(test) == 1 and val == ()
    assert default_split(manifest, ["YAF"], []) == ((2,), ())


def test_the_old_split_keys_still_work_with_a_notice(caplog):
    cfg = load_config("train", ["data=/x", "split.test_actors=[1,2]", "split.val_actors=[]"])
    assert cfg.split.test_speakers == ("1", "2") and cfg.split.val_speakers == ()
    assert "split.test_actors is now split.test_speakers" in caplog.text
    assert load_config("tune", ["data=/x", "test_actors=[3]"]).test_speakers == ("3",)
    assert load_config("evaluate", ["checkpoint=c", "data=d", "actors=[3]"]).speakers == ("3",)
