"""Labelled corpora: the vocabulary, each built-in layout's names, label tables and matching."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from knd.data import corpora, ravdess, storage
from knd.data.corpora import (
    LAYOUTS,
    TABLE_FORMATS,
    VOCABULARY,
    ClipLabels,
    Entry,
    TableMatch,
    TableRow,
    labels_in_order,
    layout,
    match_table,
    read_label_table,
)


def test_the_vocabulary_starts_with_ravdess_codes_in_order():
    assert VOCABULARY[: len(ravdess.EMOTIONS)] == ravdess.EMOTIONS
    assert len(set(VOCABULARY)) == len(VOCABULARY)
    assert VOCABULARY[8] == "boredom"


def test_labels_in_order_puts_the_vocabulary_first_then_the_rest_sorted():
    assert labels_in_order(["sad", "contempt", "angry", "sad", "amused", "neutral"]) == (
        "neutral", "sad", "angry", "amused", "contempt",
    )  # fmt: skip
    assert labels_in_order([]) == ()


def test_every_layout_lists_its_labels_in_vocabulary_order():
    assert sorted(LAYOUTS) == ["crema_d", "emodb", "ravdess", "savee", "tess"]
    for name, corpus in LAYOUTS.items():
        assert corpus.name == name
        assert corpus.labels == labels_in_order(corpus.labels)
        assert set(corpus.labels) <= set(VOCABULARY)
    assert LAYOUTS["ravdess"].labels == ravdess.EMOTIONS
    assert LAYOUTS["emodb"].labels[-1] == "boredom"
    assert "calm" not in LAYOUTS["crema_d"].labels and "surprised" not in LAYOUTS["crema_d"].labels
    assert layout("tess") is LAYOUTS["tess"]
    with pytest.raises(ValueError, match=r"unknown corpus layout 'iemocap'.*'crema_d'"):
        layout("iemocap")


PARSED = [
    # (layout, path as the corpus ships it, label, speaker, gender, sentence, intensity)
    ("ravdess", "Actor_03/03-01-05-02-01-02-03.wav", "angry", "3", "male", "1", "strong"),
    ("ravdess", "Actor_24/03-01-01-01-02-01-24.wav", "neutral", "24", "female", "2", "normal"),
    ("ravdess", "x\\Actor_08\\03-01-08-01-01-01-08.flac", "surprised", "8", "female", "1",
     "normal"),
    ("crema_d", "AudioWAV/1001_DFA_ANG_XX.wav", "angry", "1001", "unknown", "DFA", "XX"),
    ("crema_d", "AudioWAV/1091_WSI_HAP_HI.wav", "happy", "1091", "unknown", "WSI", "HI"),
    ("crema_d", "1045_IEO_FEA_LO.mp3", "fearful", "1045", "unknown", "IEO", "LO"),
    ("crema_d", "s3://b/c/AudioWAV/1002_ITS_DIS_MD.wav", "disgust", "1002", "unknown", "ITS", "MD"),
    ("crema_d", "AudioWAV/1076_MTI_NEU_XX.wav", "neutral", "1076", "unknown", "MTI", "XX"),
    ("crema_d", "AudioWAV/1012_TSI_SAD_MD.wav", "sad", "1012", "unknown", "TSI", "MD"),
    ("emodb", "wav/03a01Fa.wav", "happy", "03", "male", "a01", None),
    ("emodb", "wav/08b10Lb.wav", "boredom", "08", "female", "b10", None),
    ("emodb", "16a07Wc.ogg", "angry", "16", "female", "a07", None),
    ("emodb", "wav/13b09Ea.wav", "disgust", "13", "female", "b09", None),
    ("emodb", "wav/11a02Ad.wav", "fearful", "11", "male", "a02", None),
    ("emodb", "wav/14b03Ta.wav", "sad", "14", "female", "b03", None),
    ("emodb", "wav/15a05Nc.wav", "neutral", "15", "male", "a05", None),
    ("tess", "OAF_angry/OAF_back_angry.wav", "angry", "OAF", "female", "back", None),
    ("tess", "YAF_pleasant_surprised/YAF_back_ps.wav", "surprised", "YAF", "female", "back", None),
    ("tess", "OAF_Fear/OAF_bean_Fear.wav", "fearful", "OAF", "female", "bean", None),
    ("tess", "OAF_Pleasant_surprise/OAF_chain_pleasant_surprise.wav", "surprised", "OAF",
     "female", "chain", None),
    ("tess", "YAF_disgust/yaf_Youth_disgust.WAV", "disgust", "YAF", "female", "youth", None),
    ("tess", "TESS\\YAF_sad\\YAF_dog_sad.wav", "sad", "YAF", "female", "dog", None),
    ("tess", "OAF_happy/OAF_youth_happy.wav", "happy", "OAF", "female", "youth", None),
    ("tess", "YAF_neutral/YAF_bite_neutral.wav", "neutral", "YAF", "female", "bite", None),
    ("savee", "ALL/DC_sa03.wav", "sad", "DC", "male", "sa03", None),
    ("savee", "JK_n21.wav", "neutral", "JK", "male", "n21", None),
    ("savee", "KL_su15.flac", "surprised", "KL", "male", "su15", None),
    ("savee", "AudioData/DC/sa03.wav", "sad", "DC", "male", "sa03", None),
    ("savee", "AudioData\\JE\\a01.wav", "angry", "JE", "male", "a01", None),
    ("savee", "AudioData/KL/n30.wav", "neutral", "KL", "male", "n30", None),
    ("savee", "DC_d01.wav", "disgust", "DC", "male", "d01", None),
    ("savee", "JE_f15.wav", "fearful", "JE", "male", "f15", None),
    ("savee", "JK_h07.wav", "happy", "JK", "male", "h07", None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("corpus", "path", "label", "speaker", "gender", "sentence", "intensity"), PARSED
)
def test_a_real_shaped_name_parses_to_its_labels(
    corpus, path, label, speaker, gender, sentence, intensity
):
    labels = LAYOUTS[corpus].parse(path)
    assert labels == ClipLabels(label, speaker, gender, sentence, intensity, corpus=corpus)
    assert label in LAYOUTS[corpus].labels


def test_every_code_of_every_layout_is_exercised():
    """Each layout's every label comes out of at least one of the names above."""
    for name, corpus in LAYOUTS.items():
        seen = {label for c, _, label, *_ in PARSED if c == name}
        if name != "ravdess":  # RAVDESS's codes are parse_name's and tested with it
            assert seen == set(corpus.labels), name


REJECTED = [
    # (layout, path, what the reason says)
    ("ravdess", "Actor_01/03-01-09-01-01-01-01.wav", r"not a RAVDESS name \(emotion 09"),
    ("ravdess", "Actor_01/03-01-05-01-01-01-25.wav", "actor 25 is not 01..24"),
    ("ravdess", "03-01-05-01-01-01.wav", "expected MM-VV-EE-II-SS-RR-AA"),
    ("ravdess", "03-01-05-01-01-01-01", "not a RAVDESS name .*extension '' is not one of"),
    ("ravdess", "03-01-05-01-01-01-01.txt", r"extension '\.txt'"),
    ("crema_d", "AudioWAV/1001_DFA_ANG.wav", r"not a CREMA-D name \(3 fields, expected AAAA_SSS"),
    ("crema_d", "1001_DFA_ANG_XX_2.wav", "5 fields"),
    ("crema_d", "1092_DFA_ANG_XX.wav", "actor '1092' is not 1001..1091"),
    ("crema_d", "1000_DFA_ANG_XX.wav", "actor '1000'"),
    ("crema_d", "101_DFA_ANG_XX.wav", "actor '101'"),
    ("crema_d", "1001_ABC_ANG_XX.wav", "sentence 'ABC' is not one of IEO"),
    ("crema_d", "1001_DFA_CAL_XX.wav", "emotion 'CAL' is not one of ANG DIS FEA HAP NEU SAD"),
    ("crema_d", "1001_DFA_ANG_ZZ.wav", "level 'ZZ' is not one of LO MD HI XX"),
    ("crema_d", "1001_DFA_ang_XX.wav", "emotion 'ang'"),
    ("emodb", "wav/04a01Fa.wav", r"not an EmoDB name \(speaker '04' is not one of 03 08"),
    ("emodb", "wav/03a03Fa.wav", "text 'a03' is not one of a01"),
    ("emodb", "wav/03a01Xa.wav", "emotion 'X' is not one of W L E A F T N"),
    ("emodb", "wav/03a01Fab.wav", "expected SSTTTEV"),
    ("emodb", "wav/03a01F.wav", "expected SSTTTEV"),
    ("emodb", "wav/03a01FA.wav", "expected SSTTTEV"),
    ("tess", "OAF_angry/OAF_back.wav", r"not a TESS name \(expected <speaker>_<word>_<emotion>"),
    ("tess", "XAF_angry/XAF_back_angry.wav", "speaker 'XAF' is not one of OAF YAF"),
    ("tess", "OAF_calm/OAF_back_calm.wav", "emotion 'calm' is not one of angry"),
    ("tess", "OAF_back_angry.txt", "extension"),
    ("savee", "DC_x03.wav", r"not a SAVEE name \(emotion code 'x' is not one of a d f h n sa su"),
    ("savee", "XX_sa03.wav", "speaker 'XX' is not one of DC JE JK KL"),
    ("savee", "AudioData/ZZ/sa03.wav", "speaker 'ZZ'"),
    ("savee", "sa03.wav", "no speaker"),
    ("savee", "DC_sa3.wav", "expected <speaker>_<code><nn>"),
    ("savee", "DC_sa03_b.wav", "expected"),
    ("savee", "DC_a16.wav", "sentence 16 is not 01..15 for code 'a'"),
    ("savee", "DC_n31.wav", "sentence 31 is not 01..30"),
    ("savee", "DC_n00.wav", "sentence 00"),
]


@pytest.mark.parametrize(("corpus", "path", "reason"), REJECTED)
def test_a_malformed_name_is_rejected_with_the_reason_and_the_stem(corpus, path, reason):
    with pytest.raises(ValueError, match=reason) as raised:
        LAYOUTS[corpus].parse(path)
    stem = PurePosixPath(path.replace("\\", "/")).stem
    assert str(raised.value).endswith(f": {stem!r}"), raised.value
    assert LAYOUTS[corpus].title in str(raised.value)


@pytest.mark.parametrize("junk", ["", "hello.wav", "notes.txt", "README", "Actor_01/", ".wav"])
def test_junk_is_rejected_by_every_layout(junk):
    for corpus in LAYOUTS.values():
        with pytest.raises(ValueError, match=f"not an? {corpus.title} name"):
            corpus.parse(junk)


def test_the_ravdess_layout_agrees_with_parse_name_on_every_clip():
    for actor in (1, 2, 23, 24):
        for clip in ravdess.actor_clips(actor):
            labels = LAYOUTS["ravdess"].parse(f"Actor_{actor:02d}/{clip.file_name()}")
            assert labels.label == clip.emotion_name and labels.gender == clip.gender
            assert labels.speaker == str(actor) and labels.sentence == str(clip.statement)


# --- Label tables ---------------------------------------------------------------------------

TABLE = pd.DataFrame(
    {
        "path": ["a/one.wav", "b/two.flac", " spaced.wav ", "s3://bucket/x/three.wav"],
        "label": ["angry", "contempt", "NA", "sad"],
        "speaker": ["007", "12", "x-1", "007"],
        "gender": ["female", "", "male", "unknown"],
        "split": ["train", "", "test", ""],
    }
)
ROWS = [
    TableRow(1, "a/one.wav", "angry", "007", "female", None, "train"),
    TableRow(2, "b/two.flac", "contempt", "12", "unknown", None, None),
    TableRow(3, "spaced.wav", "NA", "x-1", "male", None, "test"),
    TableRow(4, "s3://bucket/x/three.wav", "sad", "007", "unknown", None, None),
]


def write_table(frame: pd.DataFrame, path) -> str:
    """``frame`` as the table format ``path``'s suffix names, the way pandas writes each."""
    suffix = str(path).rsplit(".", 1)[-1]
    if suffix in ("csv", "tsv"):
        frame.to_csv(path, index=False, sep="," if suffix == "csv" else "\t")
    elif suffix == "jsonl":
        frame.to_json(path, orient="records", lines=True)
    else:
        frame.to_parquet(path, index=False)
    return str(path)


@pytest.mark.parametrize("suffix", TABLE_FORMATS)
def test_a_table_reads_to_the_same_rows_in_every_format(tmp_path, suffix):
    rows = read_label_table(write_table(TABLE, tmp_path / f"labels{suffix}"))
    assert rows == ROWS
    assert isinstance(rows[0].speaker, str) and rows[0].speaker == "007"


def test_a_hand_written_csv_keeps_ids_as_written(tmp_path):
    (tmp_path / "t.csv").write_text(
        "\ufeff Path ,LABEL,speaker,corpus\r\n"  # a spreadsheet's BOM, spaces, upper case
        'a.wav,angry,007,mine\r\n\r\n"b, with comma.wav", neutral ,0012,\r\n'
    )
    assert read_label_table(str(tmp_path / "t.csv")) == [
        TableRow(1, "a.wav", "angry", "007", corpus="mine"),
        TableRow(2, "b, with comma.wav", "neutral", "0012"),
    ]


def test_a_spreadsheets_empty_trailing_columns_are_ignored(tmp_path):
    (tmp_path / "t.csv").write_text("path,label,speaker,,\na.wav,sad,1,,\nb.wav,sad,2,,,\n")
    rows = read_label_table(str(tmp_path / "t.csv"))
    assert rows == [TableRow(1, "a.wav", "sad", "1"), TableRow(2, "b.wav", "sad", "2")]


def test_json_numbers_and_nulls_read_as_text_and_missing(tmp_path):
    lines = ['{"path": "a.wav", "label": "sad", "speaker": 7, "gender": null}', "",
             '{"path": "b.wav", "label": "happy", "split": "dev"}']  # fmt: skip
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n")
    assert read_label_table(str(tmp_path / "t.jsonl")) == [
        TableRow(1, "a.wav", "sad", "7"),
        TableRow(2, "b.wav", "happy", "", split="dev"),
    ]


@pytest.mark.parametrize("suffix", TABLE_FORMATS)
@pytest.mark.parametrize("column", ["path", "label", "speaker"])
def test_a_table_missing_a_required_column_is_refused_naming_it(tmp_path, suffix, column):
    uri = write_table(TABLE.drop(columns=[column]), tmp_path / f"labels{suffix}")
    with pytest.raises(ValueError, match=f"label table {uri} has no column '{column}'"):
        read_label_table(uri)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("t.csv", "path,label\na.wav,angry,7,extra\n", "row 1: 4 fields, the header has 2"),
        ("t.csv", b"path,label,speaker\n\xff.wav,a,1\n", "is not UTF-8"),
        ("t.csv", "", "has no column 'path'"),
        ("t.csv", "path,label,speaker,Path\n", "has a column twice"),
        ("t.jsonl", '{"path": "a.wav"}\n[1, 2]\n', "line 2 is not a JSON object"),
        ("t.jsonl", '{"path": "a.wav"\n', "line 1 is not JSON"),
        ("t.parquet", "not parquet", "is not a Parquet file"),
        ("t.xlsx", "", r"unknown format '\.xlsx'"),
    ],
)
def test_a_malformed_table_is_refused_with_a_clear_message(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError, match=match):
        read_label_table(str(path))


def test_a_missing_table_is_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="label table not found"):
        read_label_table(str(tmp_path / "nope.csv"))


@pytest.mark.parametrize("suffix", TABLE_FORMATS)
def test_a_table_over_the_bounds_is_refused(tmp_path, monkeypatch, suffix):
    uri = write_table(TABLE, tmp_path / f"labels{suffix}")
    monkeypatch.setattr(corpora, "MAX_TABLE_ROWS", 3)
    with pytest.raises(ValueError, match="has over 3 rows"):
        read_label_table(uri)
    monkeypatch.setattr(corpora, "MAX_TABLE_ROWS", 4)
    assert len(read_label_table(uri)) == 4
    monkeypatch.setattr(corpora, "MAX_TABLE_BYTES", 100)
    with pytest.raises(ValueError, match="bytes, over the 100-byte limit"):
        read_label_table(uri)


# --- Matching a table to the files -------------------------------------------------------------


def rows_named(reason: str) -> list[int]:
    """The row numbers a rejection's reason names (``row 3``, ``rows 2, 4 and 6``)."""
    found = re.search(r"\brows? ((?:\d+(?:, | and )?)+)", reason)
    return [int(n) for n in re.findall(r"\d+", found.group(1))] if found else []


def assert_accounted(match: TableMatch, rows: list[TableRow], listed: list[str]) -> None:
    """Every row and every listed file ends in exactly one of entries or rejections."""
    names = [e.relpath for e in match.entries] + [name for name, _ in match.rejected]
    for path in listed:
        assert names.count(path) == 1, (path, match)
    named_rows = [n for _, reason in match.rejected for n in rows_named(reason)]
    assert len(named_rows) == len(set(named_rows)), match.rejected
    assert len(match.entries) + len(named_rows) == len(rows), match
    assert all("\n" not in reason for _, reason in match.rejected)


def touch(root, *names: str) -> list[str]:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"RIFF")
    return list(names)


def test_rows_match_the_listed_files_and_relative_paths_join_the_input(tmp_path):
    listed = touch(tmp_path, "a/one.wav", "b/two.flac")
    rows = [TableRow(1, "a/one.wav", "angry", "007", "F", "mine", "train"),
            TableRow(2, "./b/two.flac", "contempt", "3")]  # fmt: skip
    match = match_table(rows, "labels.csv", str(tmp_path), listed)
    assert match.rejected == []
    assert match.entries == [
        Entry(str(tmp_path / "a" / "one.wav"), "a/one.wav",
              ClipLabels("angry", "007", "female", corpus="mine", split="train")),
        Entry(str(tmp_path / "b" / "two.flac"), "b/two.flac", ClipLabels("contempt", "3")),
    ]  # fmt: skip
    assert_accounted(match, rows, listed)


def test_every_kind_of_rejection_names_its_row(tmp_path):
    root = tmp_path / "in"
    listed = touch(root, "a.wav", "dup.wav", "extra/c.wav", "empty_label.wav", "nosp.wav",
                   "g.wav", "inside.wav")  # fmt: skip
    outside = touch(tmp_path, "elsewhere/o.wav")
    rows = [
        TableRow(1, "a.wav", "angry", "1"),
        TableRow(2, "gone/b.wav", "sad", "1"),
        TableRow(3, "empty_label.wav", "", "1"),
        TableRow(4, "nosp.wav", "sad", ""),
        TableRow(5, "dup.wav", "sad", "2"),
        TableRow(6, "", "sad", "2"),
        TableRow(7, "./dup.wav", "happy", "2"),
        TableRow(8, "g.wav", "sad", "2", gender="other"),
        TableRow(9, str(tmp_path / "nowhere.wav"), "sad", "2"),
        TableRow(10, str(tmp_path / outside[0]), "sad", "3"),
        TableRow(11, str(root / "inside.wav"), "calm", "3"),
    ]
    match = match_table(rows, "labels.csv", str(root), listed)
    assert match.rejected == sorted([
        ("dup.wav", "labels.csv rows 5 and 7: the same path 'dup.wav'"),
        ("empty_label.wav", "labels.csv row 3: empty label"),
        ("extra/c.wav", "no row in labels.csv"),
        ("g.wav", "labels.csv row 8: gender 'other' is not one of male, female, unknown (or m, f)"),
        ("gone/b.wav", f"labels.csv row 2: no file 'gone/b.wav' under {root}"),
        ("labels.csv row 6", "labels.csv row 6: empty path"),
        ("nosp.wav", "labels.csv row 4: empty speaker"),
        (str(tmp_path / "nowhere.wav"), f"labels.csv row 9: no file '{tmp_path / 'nowhere.wav'}'"),
    ])  # fmt: skip
    # An absolute path is read where it is; under the input it is that file's relative name.
    assert [(e.uri, e.relpath) for e in match.entries] == sorted([
        (str(tmp_path / outside[0]), str(tmp_path / outside[0])),
        (str(root / "a.wav"), "a.wav"),
        (str(root / "inside.wav"), "inside.wav"),
    ], key=lambda pair: pair[1])  # fmt: skip
    assert_accounted(match, rows, listed)


def test_a_label_map_renames_and_merges_and_other_labels_stay_as_written(tmp_path):
    listed = touch(tmp_path, "1.wav", "2.wav", "3.wav", "4.wav")
    rows = [TableRow(1, "1.wav", "anger", "a"), TableRow(2, "2.wav", "mad", "a"),
            TableRow(3, "3.wav", "contempt", "b"), TableRow(4, "4.wav", "x", "b")]  # fmt: skip
    label_map = {"anger": "angry", "mad": "angry", "x": ""}
    match = match_table(rows, "t.tsv", str(tmp_path), listed, label_map)
    assert [e.labels.label for e in match.entries] == ["angry", "angry", "contempt"]
    assert match.rejected == [("4.wav", "t.tsv row 4: empty label")]
    assert labels_in_order(e.labels.label for e in match.entries) == ("angry", "contempt")


ROW_VALUES = st.tuples(
    st.sampled_from(["a.wav", "./a.wav", "b.wav", "c/d.wav", "gone.wav", "/abs/gone.wav", ""]),
    st.sampled_from(["sad", ""]),
    st.sampled_from(["1", ""]),
)


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(ROW_VALUES, max_size=8),
    listed=st.sets(st.sampled_from(["a.wav", "b.wav", "c/d.wav", "e.wav"])),
)
def test_nothing_is_silently_dropped(rows, listed):
    """Random tables over a few paths (duplicates, empty values, missing files, unlisted ones)."""
    table = [TableRow(i, path, label, speaker) for i, (path, label, speaker) in enumerate(rows, 1)]
    listed = sorted(listed)
    match = match_table(table, "labels.csv", "/nonexistent-input", listed)
    assert_accounted(match, table, listed)


def test_an_s3_table_and_s3_and_local_absolute_paths(s3_server, tmp_path):
    """Through moto's S3 server: a table on S3, files under an s3:// input, and rows naming
    s3:// and local files outside the input by their absolute paths."""
    root = f"{s3_server.url}/corpora/in"
    for name in ("x/1.wav", "x/2.wav", "unlisted.wav"):
        storage.write_bytes(storage.join(root, *name.split("/")), b"RIFF")
    elsewhere = f"{s3_server.url}/corpora/other/3.wav"
    storage.write_bytes(elsewhere, b"RIFF")
    local = touch(tmp_path, "4.wav")
    table = pd.DataFrame({
        "path": ["x/1.wav", f"{root}/x/2.wav", elsewhere, f"{s3_server.url}/corpora/nope.wav",
                 str(tmp_path / local[0])],
        "label": ["anger", "sad", "happy", "sad", "sad"],
        "speaker": ["007", "8", "9", "9", "10"],
    })  # fmt: skip
    for suffix in (".csv", ".parquet"):
        uri = f"{s3_server.url}/corpora/labels{suffix}"
        write_table(table, tmp_path / f"labels{suffix}")
        storage.write_bytes(uri, (tmp_path / f"labels{suffix}").read_bytes())
        rows = read_label_table(uri)
        assert [r.speaker for r in rows] == ["007", "8", "9", "9", "10"]
    prefix = root.removeprefix("s3://") + "/"
    listed = [u.removeprefix("s3://").removeprefix(prefix) for u in storage.list_files(root)]
    assert listed == ["unlisted.wav", "x/1.wav", "x/2.wav"]
    match = match_table(rows, "labels.parquet", root, listed, {"anger": "angry"})
    assert [(e.uri, e.relpath, e.labels.label) for e in match.entries] == [
        (str(tmp_path / "4.wav"), str(tmp_path / "4.wav"), "sad"),
        (elsewhere, elsewhere, "happy"),
        (f"{root}/x/1.wav", "x/1.wav", "angry"),
        (f"{root}/x/2.wav", "x/2.wav", "sad"),
    ]
    assert match.rejected == [
        (f"{s3_server.url}/corpora/nope.wav",
         f"labels.parquet row 4: no file '{s3_server.url}/corpora/nope.wav'"),
        ("unlisted.wav", "no row in labels.parquet"),
    ]  # fmt: skip
    assert_accounted(match, rows, listed)
