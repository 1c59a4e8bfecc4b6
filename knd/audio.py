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


def decode_audio(data: bytes, name: str) -> tuple[np.ndarray, int]:
    """Decode WAV, FLAC or Ogg (and MP3 where libsndfile reads it) from bytes.

    Args:
        data: the whole file.
        name: the file's name, only for messages.

    Returns:
        ``(samples, sample_rate)`` with samples float32 shaped ``[frames, channels]`` in [-1, 1].

    Raises:
        AudioError: empty, not audio, truncated, no frames, non-finite or silent; the message is a
            one-line reason such as ``truncated WAV (expected 152000 frames, read 12000)``.
    """
    del name  # the caller names the file in its own message; kept for a uniform signature
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
        samples, sample_rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
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
    if not np.isfinite(samples).all():
        raise AudioError("non-finite samples (NaN or inf)")
    peak = float(np.abs(samples).max())
    if peak < SILENT_PEAK:
        level = "-inf" if peak == 0 else f"{20 * math.log10(peak):.0f}"
        raise AudioError(f"silent (peak {level} dBFS)")
    return samples, int(sample_rate)


def downmix(x: np.ndarray) -> np.ndarray:
    """Mono ``[frames]`` from ``[frames]`` or ``[frames, channels]`` (channel mean)."""
    if x.ndim == 1:
        return x
    if x.shape[1] == 1:
        return x[:, 0]
    return x.mean(axis=1, dtype=np.float32)


@functools.lru_cache(maxsize=16)
def _resampler(sr_from: int, sr_to: int):
    import torchaudio

    # The transform precomputes its sinc kernel once; functional.resample would redo it per call.
    return torchaudio.transforms.Resample(sr_from, sr_to)


def resample(x: np.ndarray, sr_from: int, sr_to: int) -> np.ndarray:
    """Resample a mono float32 signal with torchaudio's band-limited sinc interpolation."""
    if sr_from == sr_to:
        return x
    import torch

    with torch.inference_mode():
        out = _resampler(int(sr_from), int(sr_to))(torch.from_numpy(np.ascontiguousarray(x)))
    return out.numpy()


def trim_silence(x: np.ndarray, top_db: float, frame: int = 256) -> np.ndarray:
    """Cut leading and trailing frames quieter than the loudest frame minus ``top_db``.

    Args:
        x: mono signal.
        top_db: threshold below the loudest frame's RMS, in dB.
        frame: analysis frame in samples (16 ms at 16 kHz).

    Returns:
        A view of ``x`` from the first to the last loud frame (``x`` itself when all is quiet).
    """
    n = len(x) // frame
    if n == 0:
        return x
    power = np.square(x[: n * frame].reshape(n, frame), dtype=np.float32).mean(axis=1)
    peak = float(power.max())
    if peak <= 0:
        return x
    loud = np.flatnonzero(power >= peak * 10 ** (-top_db / 10))
    start = int(loud[0]) * frame
    # The last loud frame keeps the remainder after it when it is the final full frame.
    end = len(x) if loud[-1] == n - 1 else (int(loud[-1]) + 1) * frame
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
