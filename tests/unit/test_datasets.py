"""Several prepared feature sets read as one: the merged manifest and the renumbering."""

from __future__ import annotations

import json

import numpy as np
import pytest

from knd.data.datasets import (
    SPEAKER_STRIDE,
    data_text,
    merged_manifest,
    read_manifest,
    speaker_keys,
    union_parts,
)


def manifest(corpus: str, emotions, speakers: dict, logmel_hash: str = "h") -> dict:
    return {
        "version": 2,
        "corpus": corpus,
        "feature_params": {"n_mels": 64},
        "feature_groups": {"logmel": {"hash": logmel_hash, "shape": [64, 301], "dtype": "float16"}},
        "emotions": list(emotions),
        "speakers": {str(n): s for n, s in speakers.items()},
        "speaker_genders": {str(n): "female" for n in speakers},
        "rows_per_actor": {str(n): 10 for n in speakers},
        "rows_per_emotion": {e: 5 for e in emotions},
        "num_rows": 10 * len(speakers),
        "corpus_checksum": corpus,
        "shards": ["shards/p"],
    }


EMODB = manifest("emodb", ["neutral", "happy", "boredom"], {3: "03", 8: "08"})
TESS = manifest("tess", ["neutral", "happy", "surprised"], {1: "OAF", 2: "YAF"})


def test_speakers_are_namespaced_and_labels_are_the_union_in_vocabulary_order():
    merged = merged_manifest(["/f/emodb", "/f/tess"], [EMODB, TESS])
    assert merged["emotions"] == ["neutral", "happy", "surprised", "boredom"]
    assert merged["speakers"] == {
        "3": "emodb/03", "8": "emodb/08",
        str(SPEAKER_STRIDE + 1): "tess/OAF", str(SPEAKER_STRIDE + 2): "tess/YAF",
    }  # fmt: skip
    assert merged["rows_per_emotion"]["neutral"] == 10 and merged["num_rows"] == 40
    assert [c["name"] for c in merged["corpora"]] == ["emodb", "tess"]
    assert data_text(["/f/emodb", "/f/tess"]) == "[/f/emodb,/f/tess]" and data_text("/f") == "/f"


def test_a_speaker_has_one_key_alone_and_in_a_union_and_none_without_a_checksum():
    merged = merged_manifest(["/f/emodb", "/f/tess"], [EMODB, TESS])
    alone, union = speaker_keys(EMODB), speaker_keys(merged)
    assert alone == {3: "emodb:03", 8: "emodb:08"}  # the sample's checksums are the names
    assert union[3] == alone[3] and union[SPEAKER_STRIDE + 2] == speaker_keys(TESS)[2] == "tess:YAF"
    assert speaker_keys({**EMODB, "corpus_checksum": None}) is None


def test_two_tables_are_told_apart_by_their_folders():
    a, b = manifest("table", ["happy", "sad"], {1: "001"}), manifest("table", ["sad"], {1: "9"})
    merged = merged_manifest(["/x/mine", "/y/theirs"], [a, b])
    assert sorted(merged["speakers"].values()) == ["mine/001", "theirs/9"]


def test_feature_sets_made_with_other_parameters_are_refused():
    other = manifest("tess", ["happy"], {1: "OAF"}, logmel_hash="other")
    with pytest.raises(ValueError, match="made with other parameters than /f/emodb"):
        merged_manifest(["/f/emodb", "/f/tess"], [EMODB, other])


def test_each_part_reads_only_its_speakers_and_labels_renumbered(tmp_path):
    paths = []
    for name, m in (("emodb", EMODB), ("tess", TESS)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text(json.dumps(m))
        paths.append(str(tmp_path / name))
    merged = read_manifest(paths)
    surprised = merged["emotions"].index("surprised") + 1
    parts = union_parts(paths, merged, [SPEAKER_STRIDE + 2], [surprised])
    assert [(p.path, p.actors, p.emotions) for p in parts] == [(paths[1], [2], [3])]
    actor, emotion = parts[0].renumber(np.array([2, 2]), np.array([1, 3]))
    assert actor.tolist() == [SPEAKER_STRIDE + 2] * 2
    assert [merged["emotions"][c - 1] for c in emotion] == ["neutral", "surprised"]


def test_a_search_over_two_corpora_folds_over_every_speaker_of_both():
    from knd.config.loading import load_config
    from knd.learning.experiment import experiment_meta, trial_train_config

    five = {n: f"s{n}" for n in range(1, 6)}
    merged = merged_manifest(
        ["/f/a", "/f/b"],
        [manifest("emodb", ["happy", "sad"], five), manifest("tess", ["sad", "angry"], five)],
    )
    cfg = load_config("tune", ["data=[/f/a,/f/b]", "folds=2", "space=configs/tune/cpu_small.yaml"])
    meta = experiment_meta(cfg, merged)
    assert all("/" in s for s in meta["test_speakers"])
    held = {a for fold in meta["folds"] for a in fold}
    assert held | set(meta["test_actors"]) == {int(a) for a in merged["rows_per_actor"]}
    trial = trial_train_config({}, meta)
    assert trial.data == ("/f/a", "/f/b") and meta["labels"] == ["happy", "sad", "angry"]
