"""``knd synth layout=...``: every public corpus's names and folders, over the same synthetic voice.

The names are checked against each corpus's format exactly (the readers of these layouts are
written against the real corpora), on the whole plan of every layout (cheap: nothing rendered)
and on one speaker's written corpus per layout.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import wave
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from knd.audio.voice import encode_wav, synthesize
from knd.config.loading import load_config
from knd.config.schema import SYNTH_LAYOUT_SPEAKERS, ConfigError
from knd.data import storage
from knd.data.ravdess import EMOTIONS, actor_clips
from knd.data.synth_layouts import EMODB_SPEAKERS, LAYOUTS, TABLE_COLUMNS, index_files, plan
from knd.stages.synth import write_corpus

NAMES = {
    "ravdess": r"Actor_(\d\d)/03-01-(\d\d)-0[12]-0[12]-0[12]-\1\.wav",
    "crema_d": r"AudioWAV/(1\d\d\d)_(?:IEO|TIE|IOM|IWW|TAI|MTI|IWL|ITH|DFA|ITS|TSI|WSI)"
    r"_(ANG|DIS|FEA|HAP|NEU|SAD)_(?:LO|MD|HI|XX)\.wav",
    "emodb": r"wav/(03|08|09|1[0-6])(a0[12457]|b0[1239]|b10)([WLEAFTN])[a-z]\.wav",
    "tess": r"(OAF|YAF)_(angry|disgust|fear|happy|neutral|pleasant_surprised|sad)/"
    r"\1_[a-z]+_(angry|disgust|fear|happy|neutral|ps|sad)\.wav",
    "savee": r"ALL/(DC|JE|JK|KL)_(a|d|f|h|n|sa|su)\d\d\.wav",
    "table": r"clips/([0-9a-f]{12})\.wav",
}
"""Each layout's file names; the first group is the speaker, the last the emotion code."""

LAYOUT_EMOTIONS = {
    "ravdess": {f"{code:02d}" for code in range(1, 9)},
    "crema_d": {"ANG", "DIS", "FEA", "HAP", "NEU", "SAD"},
    "emodb": set("WLEAFTN"),
    "tess": {"angry", "disgust", "fear", "happy", "neutral", "ps", "sad"},
    "savee": {"a", "d", "f", "h", "n", "sa", "su"},
    "table": set(EMOTIONS),
}
RENDERED = {  # layout code -> RAVDESS emotion the voice renders
    "crema_d": {"ANG": "angry", "DIS": "disgust", "FEA": "fearful", "HAP": "happy",
                "NEU": "neutral", "SAD": "sad"},
    "emodb": {"W": "angry", "L": "calm", "E": "disgust", "A": "fearful", "F": "happy",
              "T": "sad", "N": "neutral"},
    "tess": {"angry": "angry", "disgust": "disgust", "fear": "fearful", "happy": "happy",
             "neutral": "neutral", "ps": "surprised", "sad": "sad"},
    "savee": {"a": "angry", "d": "disgust", "f": "fearful", "h": "happy", "n": "neutral",
              "sa": "sad", "su": "surprised"},
}  # fmt: skip
SPEAKERS = {
    "ravdess": [f"{a:02d}" for a in range(1, 25)],
    "crema_d": [str(1000 + a) for a in range(1, 25)],
    "emodb": ["03", "08", "09", "10", "11", "12", "13", "14", "15", "16"],
    "tess": ["OAF", "YAF"],
    "savee": ["DC", "JE", "JK", "KL"],
    "table": [f"{a:03d}" for a in range(1, 25)],
}


def test_the_config_and_the_layout_table_agree_on_names_and_speakers():
    assert list(LAYOUTS) == list(SYNTH_LAYOUT_SPEAKERS) == list(NAMES)
    assert {name: [s.id for s in layout.speakers] for name, layout in LAYOUTS.items()} == SPEAKERS
    for name, layout in LAYOUTS.items():
        assert set(layout.emotions) == LAYOUT_EMOTIONS[name], name
        voices = [s.voice for s in layout.speakers]
        assert len(set(voices)) == len(voices), f"{name}: two speakers share a voice"


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_name_is_the_corpus_format_and_every_speaker_has_every_emotion(layout):
    files = plan(layout, None)
    assert len({f.path for f in files}) == len(files)
    assert len({(f.clip, f.speaker.voice) for f in files}) == len(files)  # no two alike
    per_speaker_emotion = Counter()
    for f in files:
        match = re.fullmatch(NAMES[layout], f.path)
        assert match, f"{layout}: {f.path}"
        speaker, emotion = match.group(1), match.groups()[-1]
        if layout != "table":  # table's names are opaque; labels.csv says who and what
            assert (speaker, emotion) == (f.speaker.id, f.code), f.path
        assert f.clip.actor == f.speaker.voice
        assert f.label == RENDERED.get(layout, {}).get(f.code, f.label)
        per_speaker_emotion[f.speaker.id, f.code] += 1
    assert {s for s, _ in per_speaker_emotion} == set(SPEAKERS[layout])
    assert {e for _, e in per_speaker_emotion} == LAYOUT_EMOTIONS[layout]
    assert len(per_speaker_emotion) == len(SPEAKERS[layout]) * len(LAYOUT_EMOTIONS[layout])
    assert min(per_speaker_emotion.values()) >= 4  # a few sentences or takes of each


def test_the_default_layout_names_every_clip_as_ravdess_does():
    cfg = load_config("synth", ["out=/tmp/x"])
    assert (cfg.layout, cfg.actors) == ("ravdess", None)
    names = [f.path for f in plan(cfg.layout, cfg.actors, cfg.seed)]
    before = [f"Actor_{a:02d}/{c.file_name()}" for a in range(1, 25) for c in actor_clips(a)]
    assert names == before


def test_emodb_speakers_have_their_documented_gender():
    documented = dict(EMODB_SPEAKERS)
    assert documented == {
        "03": "male", "08": "female", "09": "female", "10": "male", "11": "male",
        "12": "male", "13": "female", "14": "female", "15": "male", "16": "female",
    }  # fmt: skip
    for speaker in LAYOUTS["emodb"].speakers:
        assert speaker.gender == documented[speaker.id] == actor_clips(speaker.voice)[0].gender


def test_tess_speakers_are_female_and_savee_speakers_male():
    assert {s.gender for s in LAYOUTS["tess"].speakers} == {"female"}
    assert {s.gender for s in LAYOUTS["savee"].speakers} == {"male"}
    assert [s.voice for s in LAYOUTS["crema_d"].speakers] == list(range(1, 25))


def test_emodb_boredom_is_rendered_as_calm_which_no_other_emodb_class_uses():
    rendered = {code: f"{emotion:02d}" for code, emotion in LAYOUTS["emodb"].emotions.items()}
    assert rendered["L"] == "02" and len(set(rendered.values())) == 7


def test_crema_d_levels_follow_intensity_and_neutral_has_none():
    for f in plan("crema_d", 3):
        level = f.path.removesuffix(".wav").rsplit("_", 1)[1]
        expected = "XX" if f.code == "NEU" else {1: "MD", 2: "HI"}[f.clip.intensity]
        assert level == expected, f.path
    sentences = {f.path.split("_")[1] for f in plan("crema_d", 3)}
    assert len(sentences) == 12  # three speakers say every sentence


def test_table_names_depend_on_the_seed():
    first, other = plan("table", 1, seed=0), plan("table", 1, seed=1)
    assert [f.clip for f in first] == [f.clip for f in other]
    assert not {f.path for f in first} & {f.path for f in other}


# ----------------------------------------------------------------------------------------------
# Written corpora: one speaker per layout


def written_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def stub_voice(clip, seed=0, style="classic") -> np.ndarray:
    """10 ms that say which clip they render (the real voice costs ~30 ms of CPU a clip)."""
    key = np.frombuffer(hashlib.sha256(f"{seed}/{clip.file_name()}".encode()).digest(), "<u2")
    return np.resize(key / 65536.0 - 0.5, 480)


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> dict[str, Path]:
    """Every layout but RAVDESS's, first speaker, seed 0, with the stub voice: what is checked
    here is which clip each name holds (the tess test below renders the real voice)."""
    out = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("knd.stages.synth.synthesize", stub_voice)
        for layout in ("crema_d", "emodb", "tess", "savee", "table"):
            out[layout] = tmp_path_factory.mktemp(layout)
            write_corpus(str(out[layout]), 1, seed=0, workers=1, progress=False, layout=layout)
    return out


@pytest.mark.parametrize("layout", ["crema_d", "emodb", "tess", "savee", "table"])
def test_a_written_corpus_holds_each_planned_clip_under_its_name(corpora, layout):
    root = corpora[layout]
    files = plan(layout, 1)
    index = ["labels.csv"] if layout == "table" else []
    assert written_files(root) == sorted([*index, *(f.path for f in files)])
    if layout != "table":
        speakers = {re.fullmatch(NAMES[layout], p).group(1) for p in written_files(root)}
        assert speakers == {SPEAKERS[layout][0]}
    for f in files:
        assert (root / f.path).read_bytes() == encode_wav(stub_voice(f.clip)), f.path
    assert not list(root.rglob(".*"))  # no temporary file left behind


def read_labels(root: Path) -> list[dict[str, str]]:
    with open(root / "labels.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == TABLE_COLUMNS == ("path", "label", "speaker", "gender")
        return list(reader)


def test_table_lists_every_clip_in_labels_csv_with_string_speaker_ids(corpora):
    root = corpora["table"]
    rows = read_labels(root)
    assert written_files(root) == sorted(["labels.csv", *(r["path"] for r in rows)])
    assert len(rows) == 60 and [r["path"] for r in rows] == sorted(r["path"] for r in rows)
    assert all(re.fullmatch(NAMES["table"], r["path"]) for r in rows)
    assert Counter(r["label"] for r in rows) == {e: 4 if e == "neutral" else 8 for e in EMOTIONS}
    assert {(r["speaker"], r["gender"]) for r in rows} == {("001", "male")}
    clips = {f.path: f.clip for f in plan("table", 1)}
    for row in rows:
        assert row["label"] == clips[row["path"]].emotion_name
        assert (root / row["path"]).read_bytes() == encode_wav(stub_voice(clips[row["path"]]))


def test_table_speakers_are_zero_padded_and_genders_follow_the_voice():
    text = index_files("table", plan("table", [2, 7, 12]))["labels.csv"]
    rows = list(csv.DictReader(io.StringIO(text)))
    assert {(r["speaker"], r["gender"]) for r in rows} == {
        ("002", "female"), ("007", "male"), ("012", "female")
    }  # fmt: skip


def test_tess_is_the_real_voice_and_the_same_bytes_with_any_number_of_workers(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    write_corpus(str(one), 1, seed=4, workers=1, progress=False, layout="tess")
    write_corpus(str(two), 1, seed=4, workers=2, progress=False, layout="tess")
    assert written_files(one) == written_files(two) == sorted(f.path for f in plan("tess", 1))
    for rel in written_files(one):
        assert (one / rel).read_bytes() == (two / rel).read_bytes(), rel
    for f in plan("tess", 1)[::9]:
        data = (one / f.path).read_bytes()
        assert data == encode_wav(synthesize(f.clip, seed=4)), f.path
        with wave.open(io.BytesIO(data), "rb") as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (48000, 1, 2)


# ----------------------------------------------------------------------------------------------
# Refusals


@pytest.mark.parametrize(("layout", "most"), [("emodb", 10), ("tess", 2), ("savee", 4)])
def test_more_speakers_than_a_layout_has_are_refused_in_one_line(layout, most, tmp_path):
    with pytest.raises(ConfigError) as refused:
        load_config("synth", ["out=/tmp/x", f"layout={layout}", f"actors={most + 1}"])
    message = str(refused.value)
    assert message == f"actors: layout {layout} has {most} speakers, got {most + 1}"
    assert load_config("synth", ["out=/tmp/x", f"layout={layout}", f"actors={most}"])
    with pytest.raises(ValueError, match=f"actors must be 1..{most} for layout {layout}"):
        write_corpus(str(tmp_path), most + 1, progress=False, layout=layout)


def test_the_24_speaker_layouts_take_24_and_the_schema_bounds_stay():
    for layout in ("ravdess", "crema_d", "table"):
        assert load_config("synth", ["out=/tmp/x", f"layout={layout}", "actors=24"]).actors == 24
    with pytest.raises(ConfigError, match="actors: must be <= 24"):
        load_config("synth", ["out=/tmp/x", "layout=table", "actors=25"])


def test_an_unknown_layout_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="layout: 'iemocap' is not one of"):
        load_config("synth", ["out=/tmp/x", "layout=iemocap"])
    with pytest.raises(ValueError, match="synth layout must be one of"):
        write_corpus(str(tmp_path), 1, progress=False, layout="iemocap")
    assert not list(tmp_path.iterdir())


def test_a_layout_writes_to_s3_with_its_index(s3_server, monkeypatch):
    # The voice is stubbed: this checks where the files go, not what they sound like.
    monkeypatch.setattr("knd.stages.synth.synthesize", lambda clip, seed, style: np.zeros(480))
    out = f"{s3_server.url}/synth-table"
    paths = write_corpus(out, 1, seed=0, workers=1, progress=False, layout="table")
    assert storage.list_files(out) == paths and len(paths) == 61
    labels = storage.read_text(f"{out}/labels.csv")
    assert labels.splitlines()[0] == "path,label,speaker,gender"
    assert {line.split(",")[0] for line in labels.splitlines()[1:]} == {
        p.removeprefix(out + "/") for p in paths if p.endswith(".wav")
    }
