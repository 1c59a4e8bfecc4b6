"""The synthetic corpus: RAVDESS's layout, names and format, byte-identical for a seed."""

from __future__ import annotations

import contextlib
import io
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from knd.audio.voice import MAX_SECONDS, MIN_SECONDS, encode_wav, synthesize
from knd.data.ravdess import EMOTIONS, actor_clips, parse_name
from knd.stages.synth import write_corpus

ACTORS = (8,)  # one actor keeps this a unit test; the corpus is per actor anyway


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """One actor's 60 clips, written in this process (a spawned pool costs more than it saves)."""
    out = tmp_path_factory.mktemp("synth")
    with contextlib.redirect_stderr(io.StringIO()) as stderr:  # a log, not a terminal
        write_corpus(str(out), ACTORS, seed=0, workers=1, progress=True)
    (out.parent / "synth-stderr.txt").write_text(stderr.getvalue())
    return out


def test_progress_in_a_log_is_a_few_plain_lines_not_a_redrawn_bar(corpus):
    logged = (corpus.parent / "synth-stderr.txt").read_text()
    assert logged.splitlines()[-1].startswith("synth: 60/60 files (100%)")
    assert len(logged.splitlines()) == 4 and "\r" not in logged


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


def test_layout_ravdess_is_the_default_byte_for_byte(corpus, tmp_path):
    # knd synth layout=... renames the clips for other corpora; RAVDESS's names and bytes (what
    # every test and benchmark reads) stay what the corpus written without a layout holds.
    write_corpus(str(tmp_path), ACTORS, seed=0, workers=1, progress=False, layout="ravdess")
    assert files_of(tmp_path) == files_of(corpus)
    assert files_of(corpus) == [f"Actor_08/{c.file_name()}" for c in actor_clips(8)]
    for rel in files_of(corpus):
        assert (tmp_path / rel).read_bytes() == (corpus / rel).read_bytes(), rel


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
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------------------------
# style="speech": the development corpus that behaves like speech


@pytest.fixture(scope="module")
def speech_corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("speech")
    write_corpus(str(out), ACTORS, seed=0, workers=1, progress=False, style="speech")
    return out


def test_speech_style_writes_ravdess_files_deterministically(speech_corpus, corpus):
    files = files_of(speech_corpus)
    assert files == files_of(corpus)  # same names and layout as the classic corpus
    for rel in files[::9]:
        data = (speech_corpus / rel).read_bytes()
        with wave.open(io.BytesIO(data), "rb") as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (48000, 1, 2)
            assert MIN_SECONDS <= w.getnframes() / 48000 <= MAX_SECONDS
        assert encode_wav(synthesize(parse_name(rel), seed=0, style_name="speech")) == data
        assert data != (corpus / rel).read_bytes()  # another voice than the classic one


def test_classic_files_do_not_depend_on_the_speech_option():
    # The speech style draws its idiolects from a stream of their own: classic bytes are fixed.
    clip = actor_clips(5)[17]
    before = encode_wav(synthesize(clip, seed=0))
    speech = encode_wav(synthesize(clip, seed=0, style_name="speech"))
    assert encode_wav(synthesize(clip, seed=0)) == before != speech


def _high_band_share(x: np.ndarray, rate: int = 48000) -> np.ndarray:
    """Per 10 ms frame: the share of energy above 3.5 kHz (fricatives and bursts are high)."""
    frame = rate // 100
    n = len(x) // frame
    spectra = np.abs(np.fft.rfft(x[: n * frame].reshape(n, frame) * np.hanning(frame))) ** 2
    freqs = np.fft.rfftfreq(frame, 1 / rate)
    total = spectra.sum(axis=1) + 1e-12
    return spectra[:, freqs > 3500].sum(axis=1) / total, total


def test_speech_style_has_voiced_stretches_and_fricatives_inside_a_clip():
    # "Dogs are sitting by the door": /z/ and /s/ frication between voiced vowels.
    clip = next(c for c in actor_clips(6) if c.statement == 2 and c.emotion == 1)
    share, energy = _high_band_share(synthesize(clip, seed=0, style_name="speech"))
    speech = energy > energy.max() * 1e-3
    assert speech.sum() > 80  # at least 0.8 s of speech
    voiced = share[speech] < 0.1
    fricated = share[speech] > 0.5
    assert voiced.mean() > 0.5  # most of the clip is voiced, low-frequency energy
    assert fricated.sum() >= 3  # and it holds a few frames of high-frequency noise


def test_speech_style_speakers_differ_in_their_own_formants():
    from knd.audio.voice import actor_idiolect

    a, b = actor_idiolect(3), actor_idiolect(4)
    assert a == actor_idiolect(3)  # a pure function of (actor, seed)
    assert a.formants["IY"] != b.formants["IY"] and a.formants["AA"] != b.formants["AA"]
    assert actor_idiolect(3, seed=1) != a


def test_speech_style_emotions_differ_where_acted_speech_does():
    # Over one actor's strong-intensity clips: anger is louder than sadness.
    def clips(name):
        return [c for c in actor_clips(9) if c.emotion_name == name and c.intensity == 2]

    def rms(c):
        x = synthesize(c, seed=0, style_name="speech")
        return np.sqrt(np.mean(x[np.abs(x) > 1e-3] ** 2))

    assert np.mean([rms(c) for c in clips("angry")]) > np.mean([rms(c) for c in clips("sad")])


def test_speech_style_places_the_focus_accent_differently_across_clips():
    from knd.audio.voice import _focus_stress, clip_rng

    patterns = {_focus_stress(clip_rng(c, 0)).index(1.0) for c in actor_clips(2)}
    assert len(patterns) >= 3  # lexical prominence varies between an actor's clips


def test_unknown_style_is_refused(tmp_path):
    with pytest.raises(ValueError, match="synth style must be one of"):
        write_corpus(str(tmp_path), [1], progress=False, style="robot")
    with pytest.raises(ValueError, match="synth style must be one of"):
        synthesize(actor_clips(1)[0], style_name="robot")
