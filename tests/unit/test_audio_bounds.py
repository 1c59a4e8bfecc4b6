"""Hostile audio: header bounds, out-of-range floats, odd rates with bounded memory, short files.

Each case here is one hostile input the library must turn into a one-line reason (or, for an odd
but legitimate rate, into normal features without a rate-dependent allocation).
"""

from __future__ import annotations

import resource
import struct

import numpy as np
import pytest
import torch
import torchaudio
from samples import encode, tone

from knd.audio import waveform
from knd.audio.features import clip_features, feature_shape, log_mel, mono_at_feature_rate
from knd.audio.waveform import AudioError, decode_audio, resample
from knd.config.loading import load_config


@pytest.fixture(scope="module")
def params():
    return load_config("prepare", ["input=x", "output=y"]).features


def flac_with_declared_frames(frames: int) -> bytes:
    """A real FLAC whose STREAMINFO claims ``frames`` samples (36-bit field)."""
    data = bytearray(encode(tone(0.5, 16000), 16000, "FLAC"))
    assert data[:4] == b"fLaC"
    # STREAMINFO starts at byte 8; the 64 bits at 18..25 are rate(20) channels(3) bps(5) total(36).
    packed = int.from_bytes(data[18:26], "big")
    packed = (packed & ~((1 << 36) - 1)) | (frames & ((1 << 36) - 1))
    data[18:26] = packed.to_bytes(8, "big")
    return bytes(data)


def test_tiny_and_huge_sample_rates_are_refused_from_the_header():
    with pytest.raises(AudioError, match=r"unsupported sample rate 1009 Hz"):
        decode_audio(encode(tone(0.5, 1009), 1009))
    with pytest.raises(AudioError, match=r"unsupported sample rate 1000000 Hz"):
        decode_audio(encode(tone(0.2, 1_000_000), 1_000_000))


def test_many_channels_are_refused():
    x = np.tile(tone(0.2, 16000)[:, None], (1, 64))
    with pytest.raises(AudioError, match=r"unsupported channel count 64"):
        decode_audio(encode(x, 16000))


def test_a_huge_declared_length_is_refused_before_decoding():
    with pytest.raises(AudioError, match=r"^too large \(68719476735 frames"):
        decode_audio(flac_with_declared_frames((1 << 36) - 1))


def test_a_wav_declaring_more_data_than_it_holds_is_truncated():
    data = bytearray(encode(tone(0.5, 16000), 16000))
    data[40:44] = struct.pack("<I", 0x7FFFFFF0)  # the data chunk's size
    with pytest.raises(AudioError, match="^truncated WAV"):
        decode_audio(bytes(data))


@pytest.mark.parametrize("peak", [1e30, 20000.0, 2.0])
def test_float_samples_beyond_full_scale_are_refused(peak):
    x = tone(0.5, 16000, amp=peak)
    with pytest.raises(AudioError, match=r"^float samples out of range"):
        decode_audio(encode(x, 16000, subtype="FLOAT"))


def test_float_samples_slightly_over_full_scale_are_kept():
    samples, _ = decode_audio(encode(tone(0.5, 16000, amp=1.2), 16000, subtype="FLOAT"))
    assert np.abs(samples).max() == pytest.approx(1.2, rel=1e-3)


def test_inf_samples_are_refused():
    x = tone(0.5, 16000)
    x[100] = np.inf
    with pytest.raises(AudioError, match="non-finite samples"):
        decode_audio(encode(x, 16000, subtype="FLOAT"))


@pytest.mark.parametrize("frames", [1, 100])
def test_too_short_files_are_refused(frames):
    with pytest.raises(AudioError, match=r"^too short"):
        decode_audio(encode(tone(1.0, 16000)[:frames] + 0.1, 16000))


def test_antiphase_stereo_is_silent_after_the_downmix(params):
    x = tone(1.0, 16000)
    samples, rate = decode_audio(encode(np.stack([x, -x], axis=1), 16000))
    with pytest.raises(AudioError, match=r"^silent after the downmix to mono \(peak -"):
        clip_features(samples, rate, params)


def test_non_finite_features_are_refused(params):
    # 1e25 squared overflows float32: the mel power is inf. decode_audio refuses such samples;
    # this is the last line of defence for any other way in.
    with pytest.raises(AudioError, match="non-finite features"):
        log_mel(np.full(16000, 1e25, np.float32), params)


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 32000, 44100, 48000, 96000])
def test_common_rates_resample_exactly_as_torchaudio(rate):
    x = tone(0.7, rate, freq=300.0)
    want = torchaudio.functional.resample(torch.from_numpy(x), rate, 16000).numpy()
    np.testing.assert_allclose(resample(x, rate, 16000), want, atol=1e-4)


def test_odd_rate_resamples_with_bounded_memory():
    rate = 44101  # gcd(44101, 16000) = 1: torchaudio's kernel would be 16000 x 44135 (5.6 GB)
    assert waveform.sinc_kernel_elements(rate, 16000) > waveform.MAX_KERNEL_ELEMENTS
    x = tone(1.0, rate, freq=440.0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    y = resample(x, rate, 16000)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 200
    assert y.dtype == np.float32 and abs(len(y) - 16000) <= 1
    assert abs(np.argmax(np.abs(np.fft.rfft(y))) - 440) <= 1


def test_odd_rate_file_gives_finite_features(params):
    samples, rate = decode_audio(encode(tone(1.0, 44101), 44101))
    feats, duration = clip_features(samples, rate, params)
    assert feats.shape == feature_shape(params) and np.isfinite(feats).all()
    assert duration == pytest.approx(1.0, abs=1e-3)
    assert mono_at_feature_rate(samples, rate, params).shape[0] == pytest.approx(16000, abs=1)
