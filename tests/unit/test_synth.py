"""The synthetic corpus: RAVDESS's layout, names and format, byte-identical for a seed."""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from knd.ravdess import EMOTIONS, parse_name
from knd.synth import MAX_SECONDS, MIN_SECONDS, actor_clips, encode_wav, synthesize, write_corpus

ACTORS = (8,)  # one actor keeps this a unit test; the corpus is per actor anyway


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """One actor's 60 clips, written in this process (a spawned pool costs more than it saves)."""
    out = tmp_path_factory.mktemp("synth")
    write_corpus(str(out), ACTORS, seed=0, workers=1, progress=False)
    return out


def files_of(corpus: Path) -> list[str]:
    return sorted(p.relative_to(corpus).as_posix() for p in corpus.rglob("*") if p.is_file())


def test_layout_and_names_are_ravdess(corpus):
    files = files_of(corpus)
    assert len(files) == 60 * len(ACTORS)
    assert sorted({f.split("/")[0] for f in files}) == [f"Actor_{a:02d}" for a in ACTORS]
    clips = [parse_name(f) for f in files]  # raises on any malformed name
    for f, clip in zip(files, clips, strict=True):
        assert (
            f == f"Actor_{clip.actor:02d}/03-01-{clip.emotion:02d}-{clip.intensity:02d}-"
            f"{clip.statement:02d}-{clip.repetition:02d}-{clip.actor:02d}.wav"
        )
    for actor in ACTORS:
        own = [c for c in clips if c.actor == actor]
        assert len(own) == 60 == len(set(own))
        per_emotion = {e: sum(c.emotion == i + 1 for c in own) for i, e in enumerate(EMOTIONS)}
        assert per_emotion == {e: 4 if e == "neutral" else 8 for e in EMOTIONS}
        assert not [c for c in own if c.emotion == 1 and c.intensity == 2]
        assert {(c.modality, c.vocal_channel) for c in own} == {(3, 1)}


def test_files_are_48k_mono_16bit_of_ravdess_durations(corpus):
    durations = []
    for path in corpus.rglob("*.wav"):
        with wave.open(str(path), "rb") as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (48000, 1, 2)
            durations.append(w.getnframes() / w.getframerate())
    assert len(durations) == 60 * len(ACTORS)
    assert min(durations) >= MIN_SECONDS and max(durations) <= MAX_SECONDS
    assert (MIN_SECONDS, MAX_SECONDS) == (2.9, 5.3)
    assert np.std(durations) > 0.1  # clips differ in length, as recordings do


def test_speech_sits_between_leading_and_trailing_near_silence(corpus):
    edge = int(0.25 * 48000)
    for path in sorted(corpus.rglob("*.wav"))[::5]:
        x, sr = sf.read(path, dtype="float64")
        assert sr == 48000 and x.ndim == 1
        speech_db = 20 * np.log10(np.sqrt(np.mean(x**2)))
        for part in (x[:edge], x[-edge:]):
            rms = np.sqrt(np.mean(part**2))
            assert rms > 0, f"{path.name}: digital silence instead of room noise"
            assert 20 * np.log10(rms) < speech_db - 25, f"{path.name}: edge not near-silent"
        assert np.abs(x).max() > 10 ** (-30 / 20)  # speech, not only noise


def test_same_seed_gives_byte_identical_files(corpus):
    # A clip depends on (seed, name) only: made alone, in reverse order, it is the same bytes.
    for rel in files_of(corpus)[::-7]:
        assert encode_wav(synthesize(parse_name(rel), seed=0)) == (corpus / rel).read_bytes(), rel


def test_other_seed_or_clip_gives_other_audio():
    clip, other_clip = actor_clips(7)[10], actor_clips(7)[11]
    base = encode_wav(synthesize(clip, seed=0))
    assert encode_wav(synthesize(clip, seed=1)) != base
    assert encode_wav(synthesize(other_clip, seed=0)) != base
    decoded, sr = sf.read(io.BytesIO(base), dtype="int16")
    assert sr == 48000 and decoded.dtype == np.int16


def test_strong_intensity_is_louder_or_wider_than_normal():
    # Strong intensity exaggerates; for angry speech that means more energy.
    clips = [c for c in actor_clips(8) if c.emotion_name == "angry"]

    def level(intensity):
        return np.mean(
            [np.sqrt(np.mean(synthesize(c) ** 2)) for c in clips if c.intensity == intensity]
        )

    assert level(2) > level(1)


def test_unknown_actor_is_refused(tmp_path):
    with pytest.raises(ValueError, match="actors must be 1..24"):
        write_corpus(str(tmp_path), [25], progress=False)
    with pytest.raises(ValueError, match="actors must be 1..24"):
        write_corpus(str(tmp_path), 0, progress=False)
