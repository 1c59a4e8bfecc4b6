"""Property-based: whatever WAV the generator builds, the front end returns finite features of the
fixed shape or one AudioError line, with the decoded audio inside the declared bounds."""

from __future__ import annotations

import io
import re

import numpy as np
import soundfile as sf
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from knd.audio import waveform
from knd.audio.features import clip_features, feature_shape
from knd.audio.waveform import AudioError, decode_audio
from knd.config.loading import load_config

PARAMS = load_config("prepare", ["input=x", "output=y"]).features

RATES = st.one_of(
    st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000, 96000, 44101, 1009, 7, 999_999]),
    st.integers(min_value=waveform.MIN_SAMPLE_RATE, max_value=waveform.MAX_SAMPLE_RATE),
    st.integers(min_value=1, max_value=700_000),
)
AMPLITUDES = st.one_of(
    st.sampled_from([0.0, 1e-6, 0.5, 1.0, 1.2, 2.0, 20000.0, 1e30]),
    st.floats(min_value=0, max_value=1e35, allow_nan=False),
)


@st.composite
def wavs(draw):
    rate = draw(RATES)
    channels = draw(st.one_of(st.integers(1, 2), st.integers(1, 40)))
    seconds = draw(st.one_of(st.floats(0.1, 1.0), st.floats(0.0, 0.1)))
    frames = min(int(seconds * rate), 40_000 // channels)  # small: seconds per run in all
    subtype = draw(st.sampled_from(["PCM_16", "PCM_24", "FLOAT", "DOUBLE", "PCM_U8"]))
    amp = draw(AMPLITUDES)
    kind = draw(st.sampled_from(["sine", "noise", "antiphase", "nan", "dc"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    t = np.arange(frames) / max(rate, 1)
    mono = {
        "sine": np.sin(2 * np.pi * 220.0 * t),
        "noise": rng.uniform(-1, 1, frames),
        "antiphase": np.sin(2 * np.pi * 220.0 * t),
        "nan": np.where(rng.uniform(size=frames) < 0.01, np.nan, np.sin(t)),
        "dc": np.ones(frames),
    }[kind] * amp
    x = np.tile(mono[:, None], (1, channels))
    if kind == "antiphase" and channels >= 2:
        x[:, 1::2] *= -1
    buf = io.BytesIO()
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            sf.write(buf, x.astype(np.float64), rate, format="WAV", subtype=subtype)
    except (sf.LibsndfileError, ValueError, RuntimeError):
        assume(False)  # libsndfile itself will not write this combination
    return buf.getvalue()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=wavs())
def test_front_end_gives_finite_fixed_shape_features_or_one_line(data):
    try:
        samples, rate = decode_audio(data)
        feats, duration = clip_features(samples, rate, PARAMS)
    except AudioError as e:
        assert str(e) and "\n" not in str(e)
        event(
            re.sub(r"\d+", "N", str(e).split(" (")[0])
        )  # --hypothesis-show-statistics shows the mix of reasons
        return
    event("kept")
    assert waveform.MIN_SAMPLE_RATE <= rate <= waveform.MAX_SAMPLE_RATE
    assert 1 <= samples.shape[1] <= waveform.MAX_CHANNELS
    assert samples.shape[0] >= waveform.MIN_SECONDS * rate
    assert np.isfinite(samples).all() and np.abs(samples).max() <= waveform.FLOAT_PEAK_LIMIT
    assert feats.shape == feature_shape(PARAMS) and np.isfinite(feats).all()
    assert duration > 0


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=4096))
def test_arbitrary_bytes_decode_or_fail_in_one_line(data):
    try:
        samples, rate = decode_audio(data)
    except AudioError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert np.isfinite(samples).all() and samples.shape[0] > 0
