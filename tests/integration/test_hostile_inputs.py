"""``knd prepare`` and ``knd score`` on a folder of hostile files beside good clips, on real Ray.

Every file ends as a row or a reason, nothing stored or scored is non-finite, no process grows
past a few GB, and every good clip is kept. The hostile files are the findings of the hardening
report: odd and absurd sample rates, a huge declared length, overflowing and integer-scaled float
samples, NaN and inf, a one-sample file, antiphase stereo, 64 channels, truncated, empty,
text-as-WAV, silent, header-only, and directory symlink loops.
"""

from __future__ import annotations

import io
import os
import struct
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from knd.audio import voice
from knd.cli import main
from knd.data.ravdess import actor_clips

pytestmark = pytest.mark.ray

PEAK_RSS_LIMIT_MIB = 3 * 1024
"""Each Ray worker (and the driver) stays under this; the 44,101 Hz file alone used to need
5.6 GB for one resampling kernel and drove a worker to 21.7 GB."""


def wav(x: np.ndarray, rate: int, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    with np.errstate(over="ignore"):
        sf.write(buf, x, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


def tone(seconds: float, rate: int, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * 220.0 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(
        np.float32
    )


def huge_flac() -> bytes:
    """A real FLAC whose STREAMINFO declares 2**36 - 1 frames (about 17 days at 48 kHz)."""
    data = bytearray(wav(tone(0.5, 16000), 16000, fmt="FLAC"))
    packed = int.from_bytes(data[18:26], "big") | ((1 << 36) - 1)
    data[18:26] = packed.to_bytes(8, "big")
    return bytes(data)


def huge_wav_chunk() -> bytes:
    data = bytearray(wav(tone(0.5, 16000), 16000))
    data[40:44] = struct.pack("<I", 0x7FFFFFF0)  # the data chunk claims 2 GB
    return bytes(data)


def hostile_files() -> dict[str, tuple[bytes, str | None]]:
    """``{name: (bytes, expected reason or None for kept)}``."""
    one_second = tone(1.0, 16000)
    stereo = np.stack([one_second, -one_second], axis=1)
    nan = one_second.copy()
    nan[::100] = np.nan
    inf = one_second.copy()
    inf[5] = np.inf
    speech = voice.synthesize(actor_clips(2)[7]).astype(np.float32)
    return {
        "rate_44101": (wav(speech, 44101), None),  # odd but legitimate: kept, bounded memory
        "rate_1009": (wav(tone(1.0, 1009), 1009), "unsupported sample rate 1009 Hz"),
        "rate_1M": (wav(tone(0.2, 1_000_000), 1_000_000), "unsupported sample rate 1000000 Hz"),
        "huge_declared_flac": (huge_flac(), "too large"),
        "huge_declared_wav": (huge_wav_chunk(), "truncated WAV"),
        "float_1e30": (wav(tone(1.0, 16000, amp=1e30), 16000, "FLOAT"), "float samples out of"),
        "float_int16_scale": (wav(tone(1.0, 16000, 20000), 16000, "FLOAT"), "float samples out"),
        "nan_samples": (wav(nan, 16000, "FLOAT"), "non-finite samples"),
        "inf_samples": (wav(inf, 16000, "FLOAT"), "non-finite samples"),
        "one_sample": (wav(one_second[100:101] + 0.5, 16000), "too short"),
        "antiphase_stereo": (wav(stereo, 16000), "silent after the downmix to mono"),
        "many_channels": (wav(np.tile(one_second[:, None], (1, 64)), 16000), "channel count 64"),
        "truncated": (wav(one_second, 16000)[:5000], "truncated WAV"),
        "empty": (b"", "empty file"),
        "text_as_wav": (b"this is a README, not a recording\n" * 40, "not audio"),
        "silent": (wav(np.zeros(16000, np.float32), 16000), "silent"),
        "header_only": (wav(np.zeros(0, np.float32), 16000), "no audio frames"),
    }


def ravdess_name(i: int, actor: int) -> str:
    emotion, intensity = 2 + i % 7, 1 + (i // 7) % 2
    statement, repetition = 1 + (i // 14) % 2, 1 + (i // 28) % 2
    return f"03-01-{emotion:02d}-{intensity:02d}-{statement:02d}-{repetition:02d}-{actor:02d}.wav"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """``(folder, {relative path: expected reason or None})``: good clips beside hostile files."""
    root = tmp_path_factory.mktemp("hostile")
    expected: dict[str, str | None] = {}
    for actor in (1, 2):
        for clip in actor_clips(actor)[:5]:
            rel = f"Actor_{actor:02d}/{clip.file_name()}"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(voice.encode_wav(voice.synthesize(clip)))
            expected[rel] = None
    (root / "Actor_03").mkdir()
    for i, (_, (data, reason)) in enumerate(hostile_files().items()):
        rel = f"Actor_03/{ravdess_name(i, 3)}"
        (root / rel).write_bytes(data)
        expected[rel] = reason
    # Directory symlink loops: one to the parent, one to the folder itself. Followed, they
    # listed a file 41 times (one loop) or hung the driver (two).
    os.symlink("..", root / "Actor_03" / "loop")
    os.symlink(".", root / "Actor_03" / "loop_self")
    return root, expected


class PeakRss:
    """Polls the peak RSS (VmHWM) of this process and all its descendants: the Ray workers."""

    def __init__(self) -> None:
        self.peak_kib: dict[int, tuple[int, str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self._sample()

    def _sample(self) -> None:
        children: dict[int, list[int]] = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    ppid = int(Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(entry.name))
        todo = [os.getpid()]
        while todo:
            pid = todo.pop()
            todo.extend(children.get(pid, []))
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            if "VmHWM" in fields:
                kib = int(fields["VmHWM"].split()[0])
                name = fields.get("Name", "?").strip()
                if kib > self.peak_kib.get(pid, (0, ""))[0]:
                    self.peak_kib[pid] = (kib, name)

    def worst(self) -> tuple[float, str]:
        kib, name = max(self.peak_kib.values())
        return kib / 1024, name


def test_prepare_and_score_turn_every_hostile_file_into_a_row_or_a_reason(
    corpus, ray_session, tmp_path
):
    import torch

    from knd.config.loading import load_config
    from knd.data.ravdess import EMOTIONS
    from knd.data.shards import load_features
    from knd.learning.checkpoint import make_meta, save_checkpoint
    from knd.learning.models import build_model

    root, expected = corpus
    out = tmp_path / "features"
    with PeakRss() as rss:
        assert main(["prepare", f"input={root}", f"output={out}", "batch_size=4"]) == 0

        # prepare: every file once, as a kept row or a rejected reason; the good ones all kept.
        table = load_features(str(out))
        rejected = pd.read_csv(out / "rejected.csv", keep_default_na=False)
        kept = sorted(table.path)
        assert sorted(kept + list(rejected["path"])) == sorted(expected)
        assert kept == sorted(p for p, reason in expected.items() if reason is None)
        for path, reason in zip(rejected["path"], rejected["reason"], strict=True):
            assert expected[path] is not None and expected[path] in reason, (path, reason)
            assert "\n" not in reason
        assert np.isfinite(table.groups["logmel"]).all()

        # score: an untrained checkpoint made from these features (training is not the point).
        torch.manual_seed(0)
        model = build_model("cpu_small", len(EMOTIONS), width=8, dropout=0.0)
        manifest, logmel = table.manifest, table.groups["logmel"]
        meta = make_meta(
            load_config(
                "train", ["data=x", "recipe=cpu_small", "model.width=8", "model.dropout=0"]
            ),
            manifest,
            {"logmel": {"mean": logmel.mean(axis=(0, 2)), "std": logmel.std(axis=(0, 2))}},
            {"test": [1, 2]},
            run="untrained",
        )
        checkpoint = tmp_path / "checkpoint"
        save_checkpoint(str(checkpoint), model, meta)
        scores = tmp_path / "scores.csv"
        args = [f"checkpoint={checkpoint}", f"input={root}", f"output={scores}", "num_actors=1"]
        assert main(["score", *args]) == 0

    rows = pd.read_csv(scores)
    rows["error"] = rows["error"].fillna("")
    relative = [Path(p).relative_to(root).as_posix() for p in rows["path"]]
    assert sorted(relative) == sorted(expected)  # each file once, symlink loops or not
    probs = rows[[f"p_{name}" for name in EMOTIONS]].to_numpy(dtype=float)
    for rel, error, p in zip(relative, rows["error"], probs, strict=True):
        if expected[rel] is None:
            assert error == "", (rel, error)
            assert np.isfinite(p).all() and p.sum() == pytest.approx(1.0, abs=1e-4)
        else:
            assert expected[rel] in error, (rel, error)

    peak_mib, name = rss.worst()
    assert peak_mib < PEAK_RSS_LIMIT_MIB, f"{name} peaked at {peak_mib:.0f} MiB"
    hostile = len(hostile_files()) + 2  # the files, the odd-rate one included, and two loops
    print(f"hostile inputs: {hostile}; peak RSS {peak_mib:.0f} MiB ({name})")
