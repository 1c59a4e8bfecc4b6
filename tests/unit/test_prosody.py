"""Frame-level prosody (Praat's pitch on the log-mel's frame grid) and eGeMAPS functionals.

Every signal is synthesised here with a known F0, so errors are measured, not compared with a
stored run. ``bench/pitch.py`` holds the speech-like accuracy benchmark; these are the fast
checks that the tracker is wired correctly: the right frequency, on the right frames, and
defined output on inputs that carry no pitch.
"""

from __future__ import annotations

import numpy as np
import pytest

from knd.audio import egemaps, prosody

RATE, WIN, HOP = 16000, 400, 160

STEADY_BOUND_CENTS = 1.0
"""1 cent is 0.06 % in frequency. A clean steady tone leaves the tracker nothing to get wrong but
its peak interpolation (Praat measures ~0.01 cents here); a wrong sample rate, a wrong hop or an
octave error is tens to 1200 cents."""


def harmonic_tone(f0_hz, seconds: float) -> np.ndarray:
    """Sum of harmonics with a 1/k roll-off (a glottal-like spectrum) of F0 ``f0_hz``.

    ``f0_hz`` is a number or a per-sample track; harmonics stay below 4 kHz (no aliasing).
    """
    n = int(seconds * RATE)
    f0 = np.broadcast_to(np.asarray(f0_hz, dtype=np.float64), (n,))
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    harmonics = range(1, int(4000 / f0.max()) + 1)
    return 0.3 * sum(np.sin(k * phase) / k for k in harmonics)


def cents(estimate: np.ndarray, truth: np.ndarray) -> np.ndarray:
    return 1200 * np.abs(np.log2(estimate / truth))


@pytest.mark.parametrize("f0_hz", [100.0, 220.0, 440.0])
def test_steady_tone_pitch_is_accurate_and_voiced(f0_hz):
    f0, voiced, strength = prosody.track_pitch(harmonic_tone(f0_hz, 1.5), RATE, HOP)
    assert f0.shape == voiced.shape == strength.shape == (1 + int(1.5 * RATE) // HOP,)
    # The first and last frames lack half a window of signal; everything else is voiced.
    assert voiced.mean() >= 0.95, f"{f0_hz} Hz: only {voiced.mean():.0%} of frames voiced"
    error = np.median(cents(f0[voiced > 0], f0_hz))
    assert error < STEADY_BOUND_CENTS, f"{f0_hz} Hz: median error {error:.3f} cents"
    assert np.all(strength[voiced > 0] > 0.9)  # a clean periodic tone is strongly periodic

    frames = prosody.frame_prosody(harmonic_tone(f0_hz, 1.5), RATE, WIN, HOP)
    f0_st = frames[prosody.CHANNELS.index("f0_st")]
    error_st = np.median(np.abs(f0_st - prosody.semitones(f0_hz)))
    assert error_st < STEADY_BOUND_CENTS / 100, f"{f0_hz} Hz: f0_st off by {100 * error_st} cents"


def test_glide_is_tracked_on_the_right_frames():
    # 120 -> 360 Hz, exponential (straight in semitones) over 1.5 s: 12.7 cents per 10 ms frame.
    seconds, octaves = 1.5, np.log2(3.0)
    track = 120.0 * 2.0 ** (octaves * np.arange(int(seconds * RATE)) / (seconds * RATE))
    f0, voiced, _ = prosody.track_pitch(harmonic_tone(track, seconds), RATE, HOP)
    truth = track[np.minimum(np.arange(len(f0)) * HOP, len(track) - 1)]
    per_frame = 1200 * octaves / (seconds * RATE / HOP)
    error = np.median(cents(f0[voiced > 0], truth[voiced > 0]))
    # On a rising glide a signed error is a time offset: +1 frame reads one frame's travel high.
    lead = np.median(1200 * np.log2(f0[voiced > 0] / truth[voiced > 0])) / per_frame
    # Praat's own frames sit half a hop from ours; interpolated onto ours, a quarter of a frame's
    # travel (3.2 cents here) bounds the error, and a shift of one frame either way fails.
    bound = 0.25 * per_frame
    message = f"glide: median error {error:.2f} cents (bound {bound:.1f}), lead {lead:+.2f} frames"
    assert error < bound and abs(lead) < 0.25, message
    assert voiced.mean() >= 0.95


@pytest.mark.parametrize(
    "name",
    ["silence", "white_noise", "clipped_tone", "one_sample", "shorter_than_3_periods", "nan_inf"],
)
def test_output_is_defined_on_hostile_input(name):
    rng = np.random.default_rng(0)
    t = np.arange(RATE) / RATE
    wave = {
        "silence": np.zeros(RATE),
        "white_noise": 0.1 * rng.standard_normal(2 * RATE),
        "clipped_tone": 0.9 * np.clip(20 * np.sin(2 * np.pi * 150 * t), -1, 1),
        "one_sample": np.array([0.5]),
        "shorter_than_3_periods": harmonic_tone(150.0, 0.04),  # 3 / 60 Hz = 50 ms
        "nan_inf": harmonic_tone(150.0, 1.0),
    }[name]
    if name == "nan_inf":
        wave[[100, 5000]], wave[9000], wave[12000] = np.nan, np.inf, -np.inf
    frames = prosody.frame_prosody(wave, RATE, WIN, HOP)
    assert frames.shape == (len(prosody.CHANNELS), 1 + len(wave) // HOP)
    assert frames.dtype == np.float32
    assert np.isfinite(frames).all(), f"{name}: non-finite prosody"
    if name in ("silence", "white_noise", "one_sample", "shorter_than_3_periods"):
        assert not prosody.pitch_tracked(frames), f"{name}: pitch reported"
    if name in ("clipped_tone", "nan_inf") and prosody.pitch_tracked(frames):
        # A tracked period must be the tone's own, not an octave or a harmonic of it.
        f0_hz = prosody.REFERENCE_HZ * 2 ** (frames[0][frames[1] > 0] / 12)
        error = np.median(cents(f0_hz, 150.0))
        assert error < 50, f"{name}: median error {error:.1f} cents"


def test_voicing_starts_on_the_log_mel_frame_of_the_onset():
    # Frame i is centred at i * hop (the log-mel's centred STFT): an onset at 1.0 s is frame 100.
    wave = np.zeros(3 * RATE)
    wave[RATE : 2 * RATE] = harmonic_tone(200.0, 1.0)
    voiced = prosody.frame_prosody(wave, RATE, WIN, HOP)[prosody.CHANNELS.index("voiced")]
    onset, offset = np.flatnonzero(voiced)[[0, -1]]
    assert abs(onset - 100) <= 2, f"first voiced frame {onset}, tone starts at frame 100"
    assert abs(offset - 200) <= 2, f"last voiced frame {offset}, tone ends at frame 200"
    assert voiced[onset : offset + 1].all()


def test_egemaps_functionals_are_88_finite_float32():
    values = egemaps.functionals(harmonic_tone(220.0, 1.0), RATE)
    assert values.shape == (egemaps.NUM_FUNCTIONALS,) == (88,)
    assert values.dtype == np.float32 and np.isfinite(values).all()
    # The mean F0 functional sees the tone: 220 Hz is 36 semitones above 27.5 Hz.
    mean_f0 = values[egemaps.functional_names().index("F0semitoneFrom27.5Hz_sma3nz_amean")]
    assert abs(mean_f0 - 36.0) < 0.5, f"eGeMAPS mean F0 {mean_f0:.2f} st, expected 36"
    for wave in (np.zeros(RATE), harmonic_tone(220.0, 0.05)):
        values = egemaps.functionals(wave, RATE)
        assert values.shape == (88,) and np.isfinite(values).all()


def reference_smile():
    import opensmile

    return opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02, opensmile.FeatureLevel.Functionals)


def smile_reference(wave: np.ndarray, rate: int) -> np.ndarray:
    """eGeMAPS as the opensmile package computes it: a fresh ``Smile``, its own call path."""
    x = np.asarray(wave, dtype=np.float32)
    x = np.pad(x, (0, max(0, int(egemaps.MIN_SECONDS * rate) - len(x))))  # knd's own padding
    values = reference_smile().process_signal(x, rate).to_numpy().reshape(-1)
    return np.nan_to_num(values, nan=0.0).astype(np.float32)


def test_egemaps_equals_the_opensmile_package_on_every_kind_of_signal():
    from knd.audio.voice import synthesize
    from knd.audio.waveform import resample
    from knd.data.ravdess import parse_name

    rng = np.random.default_rng(0)
    clip = parse_name("03-01-05-02-01-01-07.wav")
    speech_48k = synthesize(clip, seed=0, style_name="speech").astype(np.float32)
    speech = resample(speech_48k, 48000, RATE)
    signals = {  # name: (wave, rate); run in this order on one session, so no state may carry
        "speech-like": (speech, RATE),
        "short (padded)": (harmonic_tone(180.0, 0.05), RATE),
        "silence": (np.zeros(RATE), RATE),
        "long": (np.tile(speech, 4)[: 12 * RATE] + 0.01 * rng.standard_normal(12 * RATE), RATE),
        "noise": (0.1 * rng.standard_normal(2 * RATE), RATE),
        "speech-like again": (speech, RATE),
        "full scale": (np.clip(3 * speech, -1.0, 1.0), RATE),
        "another rate": (speech_48k, 48000),
    }
    for name, (wave, rate) in signals.items():
        ours = egemaps.functionals(wave, rate)
        reference = smile_reference(wave, rate)
        assert ours.dtype == reference.dtype == np.float32
        differ = np.flatnonzero(ours != reference)
        names = [egemaps.functional_names()[i] for i in differ[:5]]
        assert differ.size == 0, f"{name}: {differ.size} functionals differ, first {names}"
    assert egemaps.functional_names() == list(reference_smile().feature_names)
