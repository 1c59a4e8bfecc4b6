"""Label sets over a dataset's own labels: all, the RAVDESS presets, subsets, merges."""

from __future__ import annotations

import numpy as np
import pytest

from knd.config.loading import load_config
from knd.config.schema import ConfigError
from knd.data.label_sets import DROPPED, checkpoint_label_set, label_set
from knd.data.ravdess import EMOTIONS

EMODB = ("neutral", "happy", "sad", "angry", "fearful", "disgust", "boredom")


def test_all_is_the_datasets_labels_and_ravdess_presets_keep_their_codes():
    assert label_set("all", EMOTIONS).names == EMOTIONS
    assert label_set("ravdess8", EMOTIONS).code_table(EMOTIONS) == [DROPPED, *range(8)]
    seven = label_set("ravdess7", EMOTIONS)
    assert len(seven.names) == 7 and "calm" not in seven.names
    table = seven.code_table(EMOTIONS)
    assert table[2] == table[1] == seven.names.index("neutral")
    assert table[8] == seven.names.index("surprised")
    assert label_set("all", EMODB).names == EMODB


def test_a_subset_keeps_the_datasets_order_and_drops_the_other_clips():
    subset = label_set(["angry", "happy", "sad"], EMODB)
    assert subset.names == ("happy", "sad", "angry")
    codes = np.array([1, 2, 4, 7, 0, 99])
    assert subset.targets(codes, EMODB).tolist() == [DROPPED, 0, 2, DROPPED, DROPPED, DROPPED]
    assert subset.kept_codes(EMODB) == [2, 3, 4]


@pytest.mark.parametrize(
    "labels,reason",
    [
        (["contempt", "happy"], "not among the dataset's labels"),
        ("ravdess8", "the dataset has no"),  # EmoDB lacks calm and surprised
        (["happy"], "at least two labels"),
    ],
)
def test_label_sets_the_dataset_cannot_give_are_refused(labels, reason):
    with pytest.raises(ValueError, match=reason):
        label_set(labels, EMODB)


def test_a_checkpoint_maps_another_corpus_by_name_with_its_merges():
    meta = {"label_set": "ravdess7", "labels": list(label_set("ravdess7", EMOTIONS).names)}
    old = checkpoint_label_set(meta)  # written before merges were recorded
    assert dict(old.merges) == {"calm": "neutral"}
    targets = old.targets(np.arange(1, 8), EMODB)
    assert [old.names[t] if t >= 0 else None for t in targets] == [
        "neutral", "happy", "sad", "angry", "fearful", "disgust", None
    ]  # fmt: skip


@pytest.mark.parametrize("value", ["[all,happy]", "[happy,happy]", "[]"])
def test_config_refuses_labels_that_cannot_be_a_label_set(value):
    with pytest.raises(ConfigError, match="labels"):
        load_config("train", ["data=/x", f"labels={value}"])
    assert load_config("train", ["data=/x", "labels=[happy,sad]"]).labels == ("happy", "sad")
