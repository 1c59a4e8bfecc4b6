"""Decoding and waveform shaping: every kind of bad bytes gets its own reason."""

from __future__ import annotations

import numpy as np
import pytest
from samples import encode, tone

from knd.audio.waveform import (
    AudioError,
    decode_audio,
    downmix,
    fit_length,
    resample,
    trim_silence,
    windows,
)


@pytest.mark.parametrize(
    ("fmt", "subtype", "channels"),
    [
        ("WAV", "PCM_16", 1),
        ("WAV", "PCM_24", 2),
        ("WAV", "FLOAT", 1),
        ("FLAC", "PCM_16", 2),
        ("OGG", "VORBIS", 1),
    ],
)
def test_decode_formats_give_frames_by_channels(fmt, subtype, channels):
    x = np.stack([tone(0.5, 22050)] * channels, axis=1)
    samples, sr = decode_audio(encode(x, 22050, fmt, subtype))
    assert sr == 22050
    assert samples.dtype == np.float32
    assert samples.shape[1] == channels
    assert abs(samples.shape[0] - x.shape[0]) <= 1024  # Vorbis may pad its last packet
    assert 0.4 < np.abs(samples).max() <= 1.0


def test_empty_bytes_are_rejected_as_empty():
    with pytest.raises(AudioError, match="empty file"):
        decode_audio(b"")


def test_text_named_wav_is_not_audio():
    with pytest.raises(AudioError, match="^not audio"):
        decode_audio(b"this is a README, not a recording\n" * 20)


def test_truncated_wav_reports_expected_and_read_frames():
    data = encode(tone(1.0, 16000), 16000)
    with pytest.raises(AudioError, match=r"truncated WAV \(expected 16000 frames, read 4978\)"):
        decode_audio(data[: 44 + 2 * 4978 + 1])


def test_wav_cut_inside_its_header_is_corrupt():
    data = encode(tone(1.0, 16000), 16000)
    with pytest.raises(AudioError, match="^corrupt audio"):
        decode_audio(data[:30])


def test_corrupt_flac_is_rejected():
    data = bytearray(encode(tone(1.0, 16000), 16000, "FLAC"))
    data[42:] = bytes(len(data) - 42)  # keep the magic, wipe the stream
    with pytest.raises(AudioError):
        decode_audio(bytes(data))


@pytest.mark.parametrize("amp", [0.0, 1e-6])
def test_silent_audio_is_rejected(amp):
    with pytest.raises(AudioError, match="^silent"):
        decode_audio(encode(np.full(8000, amp, np.float32), 16000, subtype="FLOAT"))


def test_non_finite_samples_are_rejected():
    x = tone(0.1, 16000)
    x[10] = np.nan
    with pytest.raises(AudioError, match="non-finite"):
        decode_audio(encode(x, 16000, subtype="FLOAT"))


def test_header_only_wav_has_no_frames():
    with pytest.raises(AudioError, match="no audio frames"):
        decode_audio(encode(np.zeros(0, np.float32), 16000))


def test_downmix_averages_channels():
    x = np.stack([np.ones(4, np.float32), -np.ones(4, np.float32) * 0.5], axis=1)
    np.testing.assert_allclose(downmix(x), np.full(4, 0.25))
    assert downmix(x[:, :1]).shape == (4,)
    assert downmix(np.ones(3, np.float32)).shape == (3,)


def test_resample_keeps_duration_and_pitch():
    x = tone(1.0, 44100, freq=440.0)
    y = resample(x, 44100, 16000)
    assert y.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spectrum) - 440) <= 1  # 1 Hz bins over one second
    assert resample(x, 44100, 44100) is x


def test_trim_silence_cuts_quiet_edges_only():
    sr = 16000
    speech = tone(1.0, sr)
    x = np.concatenate([np.zeros(sr // 2, np.float32), speech, np.full(sr, 1e-4, np.float32)])
    y = trim_silence(x, top_db=40)
    assert abs(len(y) - sr) <= 2 * 256
    assert np.abs(y).max() == pytest.approx(np.abs(speech).max())
    assert len(trim_silence(x, top_db=120)) > len(y)  # a lax threshold keeps the quiet tail


def test_fit_length_centre_crops_and_pads():
    x = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(fit_length(x, 4), [3, 4, 5, 6])
    padded = fit_length(x, 14)
    assert padded.shape == (14,)
    np.testing.assert_array_equal(padded[2:12], x)
    assert padded[:2].sum() == 0 and padded[12:].sum() == 0


def test_windows_cover_the_tail():
    assert windows(100, 300, 150) == [(0, 100)]
    assert windows(700, 300, 150) == [(0, 300), (150, 450), (300, 600), (400, 700)]
    assert windows(600, 300, 150)[-1] == (300, 600)
    with pytest.raises(ValueError):
        windows(10, 0, 1)


def test_trim_bounds_are_where_trim_silence_cuts():
    from knd.audio.waveform import trim_bounds

    x = np.concatenate([np.zeros(1000), tone(0.5, 16000), np.zeros(3000)]).astype(np.float32)
    start, end = trim_bounds(x, top_db=40)
    np.testing.assert_array_equal(trim_silence(x, top_db=40), x[start:end])
    assert 0 < start <= 1000 < end < len(x)
    assert trim_bounds(np.zeros(4096, np.float32), 40) == (0, 4096)
