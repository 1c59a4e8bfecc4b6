"""Audio decoding and waveform shaping: decode, downmix, resample, trim, fit, window.

Everything here is a pure function of its arguments (no files, no Ray), so prepare and score
share one behaviour and the unit tests exercise exactly what the jobs run.
"""

from __future__ import annotations

import functools
import io
import math
import struct

import numpy as np
import soundfile as sf

SILENT_PEAK = 10 ** (-80 / 20)
"""A clip whose peak amplitude stays below -80 dBFS carries no usable speech."""

MIN_SAMPLE_RATE = 4_000
MAX_SAMPLE_RATE = 384_000
"""Rates outside these bounds are not speech recordings (and 1 Hz-scale rates are attacks)."""

MAX_CHANNELS = 32
MIN_SECONDS = 0.1
"""Shorter files (a single sample, a click) hold no speech; they used to be padded and kept."""

MAX_SECONDS = 3 * 3600
MAX_DECODED_BYTES = 1 << 30
"""Bounds on what one file may decode to (float32 frames x channels), checked from the header
before decoding and enforced while decoding, so a small file cannot claim gigabytes."""

FLOAT_PEAK_LIMIT = 1.5
"""Float formats are full scale at 1.0; a peak above this (+3.5 dBFS) is an integer-scaled or
corrupt file (e.g. 1e30 samples, whose squares overflow to inf), not an over-driven recording."""

_FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")

MAX_KERNEL_ELEMENTS = 1 << 20
"""torchaudio's sinc resampler builds a (sr_to/g) x (sr_from/g) kernel (g = gcd); for common rates
(8/11.025/16/22.05/32/44.1/48/96 kHz to 16 kHz) it is small and we keep it, as the features were
made with it. An odd rate (44,101 Hz: 16000 x 44135, 5.6 GB) goes to soxr, whose memory does
not depend on the ratio."""


class AudioError(ValueError):
    """A file that cannot be used as audio; the message is a one-line reason."""


def _wav_data_extent(data: bytes) -> tuple[int, int, int] | None:
    """``(declared data bytes, available data bytes, block align)`` of a RIFF/WAVE file.

    None when the bytes are not a plain RIFF/WAVE file or declare no usable size (streamed WAVs
    write 0 or 0xFFFFFFFF); libsndfile then decides alone.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    offset, block_align = 12, 0
    while offset + 8 <= len(data):
        chunk_id, size = (
            data[offset : offset + 4],
            struct.unpack("<I", data[offset + 4 : offset + 8])[0],
        )
        body = offset + 8
        if chunk_id == b"fmt " and body + 14 <= len(data):
            block_align = struct.unpack("<H", data[body + 12 : body + 14])[0]
        if chunk_id == b"data":
            if size in (0, 0xFFFFFFFF) or block_align == 0:
                return None
            return size, len(data) - body, block_align
        offset = body + size + (size & 1)  # chunks are padded to an even length
    return None


def decode_audio(data: bytes) -> tuple[np.ndarray, int]:
    """Decode WAV, FLAC or Ogg (and MP3 where libsndfile reads it) from bytes.

    Args:
        data: the whole file.

    Returns:
        ``(samples, sample_rate)`` with samples float32 shaped ``[frames, channels]`` in [-1, 1].

    Raises:
        AudioError: empty, not audio, truncated, no frames, non-finite or silent; the message is a
            one-line reason such as ``truncated WAV (expected 152000 frames, read 12000)``.
    """
    if len(data) == 0:
        raise AudioError("empty file (0 bytes)")
    extent = _wav_data_extent(data)
    if extent is not None:
        declared, available, block_align = extent
        if available < declared:
            raise AudioError(
                f"truncated WAV (expected {declared // block_align} frames, "
                f"read {max(available, 0) // block_align})"
            )
    try:
        info = sf.info(io.BytesIO(data))
        max_frames = _check_header(info)
        samples, sample_rate = sf.read(
            io.BytesIO(data), frames=max_frames + 1, dtype="float32", always_2d=True
        )
    except AudioError:
        raise
    except sf.LibsndfileError as e:
        reason = str(e.error_string if hasattr(e, "error_string") else e).strip().rstrip(".")
        if data[:4] in (b"RIFF", b"fLaC", b"OggS"):
            raise AudioError(f"corrupt audio ({reason})") from None
        raise AudioError(f"not audio ({reason})") from None
    except (RuntimeError, TypeError, ValueError, EOFError) as e:
        raise AudioError(
            f"corrupt audio ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        ) from None
    if samples.shape[0] == 0:
        raise AudioError("no audio frames")
    if samples.shape[0] > max_frames:  # the header understated the length (e.g. streamed)
        raise AudioError(f"too long (over {max_frames} frames at {sample_rate} Hz)")
    if samples.shape[0] < MIN_SECONDS * sample_rate:
        raise AudioError(
            f"too short ({samples.shape[0]} frames, {samples.shape[0] / sample_rate:.3f} s; "
            f"at least {MIN_SECONDS:g} s)"
        )
    if not np.isfinite(samples).all():
        raise AudioError("non-finite samples (NaN or inf)")
    peak = float(np.abs(samples).max())
    if info.subtype in _FLOAT_SUBTYPES and peak > FLOAT_PEAK_LIMIT:
        raise AudioError(
            f"float samples out of range (peak {peak:.4g}, full scale is 1.0; "
            "integer-scaled or corrupt float audio)"
        )
    check_not_silent(samples)
    return samples, int(sample_rate)


def check_not_silent(samples: np.ndarray, what: str = "silent") -> None:
    """Raise :class:`AudioError` when the peak stays below -80 dBFS."""
    peak = float(np.abs(samples).max()) if samples.size else 0.0
    if peak < SILENT_PEAK:
        level = "-inf" if peak == 0 else f"{20 * math.log10(peak):.0f}"
        raise AudioError(f"{what} (peak {level} dBFS)")


def _check_header(info) -> int:
    """Check a file's declared rate, channels and length; return the most frames to decode.

    Raises:
        AudioError: a bound is exceeded; the message names the value and the bound.
    """
    rate, channels = int(info.samplerate), int(info.channels)
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        raise AudioError(
            f"unsupported sample rate {rate} Hz (expected {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE})"
        )
    if not 1 <= channels <= MAX_CHANNELS:
        raise AudioError(f"unsupported channel count {channels} (expected 1..{MAX_CHANNELS})")
    max_frames = min(int(MAX_SECONDS * rate), MAX_DECODED_BYTES // (4 * channels))
    if info.frames > max_frames:
        seconds, size = info.frames / rate, info.frames * channels * 4
        raise AudioError(
            f"too large ({info.frames} frames x {channels} channels = {seconds:.0f} s, "
            f"{size / 2**20:.0f} MiB decoded; limits {MAX_SECONDS} s, "
            f"{MAX_DECODED_BYTES >> 20} MiB)"
        )
    return max_frames


def downmix(x: np.ndarray) -> np.ndarray:
    """Mono ``[frames]`` from ``[frames]`` or ``[frames, channels]`` (channel mean)."""
    if x.ndim == 1:
        return x
    if x.shape[1] == 1:
        return x[:, 0]
    return x.mean(axis=1, dtype=np.float32)


def sinc_kernel_elements(sr_from: int, sr_to: int) -> int:
    """Size of torchaudio's sinc resampling kernel for this pair of rates."""
    g = math.gcd(sr_from, sr_to)
    return (sr_to // g) * (sr_from // g)


@functools.lru_cache(maxsize=8)
def _resampler(sr_from: int, sr_to: int):
    import torchaudio

    # The transform precomputes its sinc kernel once; functional.resample would redo it per call.
    # Only bounded kernels are built (see MAX_KERNEL_ELEMENTS), so 8 cached ones stay small.
    return torchaudio.transforms.Resample(sr_from, sr_to)


def resample(x: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    """Resample a mono float32 signal; memory is bounded whatever the two rates.

    Common rate pairs use torchaudio's band-limited sinc interpolation (the features were made
    with it); a pair whose sinc kernel would exceed :data:`MAX_KERNEL_ELEMENTS` uses soxr's
    streaming resampler (very high quality), whose memory does not grow with the ratio.
    """
    sr_from, sr_to = int(sr_from), int(sr_to)
    if sr_from == sr_to:
        return x
    if sr_from <= 0 or sr_to <= 0:
        raise AudioError(f"cannot resample from {sr_from} Hz to {sr_to} Hz")
    if sinc_kernel_elements(sr_from, sr_to) > MAX_KERNEL_ELEMENTS:
        import soxr

        out = soxr.resample(np.ascontiguousarray(x, dtype=np.float32), sr_from, sr_to, "VHQ")
        return np.asarray(out, dtype=np.float32)
    import torch

    with torch.inference_mode():
        out = _resampler(sr_from, sr_to)(torch.from_numpy(np.ascontiguousarray(x)))
    return out.numpy()


def trim_bounds(x: np.ndarray, top_db: float, frame: int = 256) -> tuple[int, int]:
    """``(start, end)`` of ``x`` from its first to its last frame no quieter than the loudest
    frame minus ``top_db`` (``(0, len(x))`` when all is quiet).

    Args:
        x: mono signal.
        top_db: threshold below the loudest frame's RMS, in dB.
        frame: analysis frame in samples (16 ms at 16 kHz).
    """
    n = len(x) // frame
    if n == 0:
        return 0, len(x)
    power = np.square(x[: n * frame].reshape(n, frame), dtype=np.float32).mean(axis=1)
    peak = float(power.max())
    if peak <= 0:
        return 0, len(x)
    loud = np.flatnonzero(power >= peak * 10 ** (-top_db / 10))
    start = int(loud[0]) * frame
    # The last loud frame keeps the remainder after it when it is the final full frame.
    end = len(x) if loud[-1] == n - 1 else (int(loud[-1]) + 1) * frame
    return start, end


def trim_silence(x: np.ndarray, top_db: float, frame: int = 256) -> np.ndarray:
    """Cut leading and trailing frames quieter than the loudest frame minus ``top_db``.

    Returns:
        ``x[start:end]`` of :func:`trim_bounds` (``x`` itself when all is quiet).
    """
    start, end = trim_bounds(x, top_db, frame)
    return x[start:end]


def fit_length(x: np.ndarray, n: int) -> np.ndarray:
    """Centre-crop or zero-pad (equally on both sides) a mono signal to exactly ``n`` samples."""
    length = len(x)
    if length == n:
        return x
    if length > n:
        start = (length - n) // 2
        return x[start : start + n]
    out = np.zeros(n, dtype=x.dtype)
    start = (n - length) // 2
    out[start : start + length] = x
    return out


def windows(n_frames: int, window: int, hop: int) -> list[tuple[int, int]]:
    """``(start, end)`` sample ranges covering a long signal with fixed windows.

    A signal no longer than one window is one range. Otherwise windows start every ``hop``
    samples and a last window is aligned to the end so the tail is never dropped.

    Raises:
        ValueError: ``window`` or ``hop`` is not positive.
    """
    if window <= 0 or hop <= 0:
        raise ValueError(f"window and hop must be positive, got {window} and {hop}")
    if n_frames <= window:
        return [(0, n_frames)]
    out = [(s, s + window) for s in range(0, n_frames - window + 1, hop)]
    if out[-1][1] < n_frames:
        out.append((n_frames - window, n_frames))
    return out
