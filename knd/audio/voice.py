"""The synthetic voice of ``knd synth``: one RAVDESS clip, rendered from its name.

Real RAVDESS cannot be downloaded everywhere, so the pipeline's embedded default is a corpus with
the same layout, names and audio format: ``Actor_NN/03-01-EE-II-SS-RR-NN.wav``, 60 clips per
actor, 48 kHz mono 16-bit PCM, 2.9-5.3 s with low-level room noise before and after the speech.

Each clip is a source-filter voice: a glottal pulse train (F0 contour, jitter, shimmer, breath
noise, creak) through a cascade of five time-varying formant resonators that follow the phones of
the clip's statement, plus filtered noise for fricatives and stop bursts. Emotion lives where it
lives in acted speech: pitch level, range and contour *shape* (accent types, final rise or fall,
tremor), loudness and accent contrast, tempo and lengthening, spectral tilt that follows vocal
effort, and voice quality (breathy, tense, creaky). Strong intensity exaggerates an emotion's
deviations from neutral. Actors differ in F0 (odd actors are male), vocal-tract length, timbre,
habitual tempo, recording level and in how they act each emotion, and every clip varies at
random, so classes overlap and speaker independence matters. Several cues are in the ordering
of events (contour shapes, where lengthening and pauses fall), which time-averaged features
cannot see: ``bench/synth_difficulty.py`` measures that a linear model on averaged log-mel stays
well below what a spectrogram model can reach.

``style="speech"`` (``knd synth style=speech``) makes a development corpus that behaves more like
real speech than the classic voice: every actor has an idiolect (own formant targets per phone,
own formant bandwidths and upper formants, and a wider, personal way of acting each emotion),
each clip places its focus accent on a word of its own and reduces its unstressed vowels toward
schwa, phones vary more in length, and emotions are rendered with the subtler, overlapping
prosody of acted speech (:data:`SPEECH_STYLES`): surprise shares happiness's raised pitch and
neutral's level and effort, and differs from both mainly in contour shape and timing, the pairs
that real-speech models confuse. The classic style's files are unchanged by this option.

Determinism: every clip draws from ``numpy.random.default_rng`` seeded by ``(seed, file name)``,
and every actor's voice by ``(seed, actor)``, so a file's bytes depend on nothing else (not on
``workers``, nor on which other files are written).
"""

from __future__ import annotations

import hashlib
import io
import wave
from dataclasses import dataclass, fields
from functools import lru_cache

import numpy as np
from scipy.signal import butter, lfilter, resample_poly, sosfilt

from knd.data.ravdess import EMOTIONS, Clip

SAMPLE_RATE = 48_000
"""The files' sample rate, as RAVDESS's."""
RATE = 24_000
"""Speech is synthesised at this rate (nothing of it lies above 12 kHz), then upsampled."""
HOP = 120
"""Control hop in samples at ``RATE`` (5 ms): F0, envelopes and formants change at this rate."""
CONTROL_RATE = RATE / HOP
_SOFT_POLE = float(np.exp(-2 * np.pi * 500.0 / RATE))  # one-pole low-pass at 500 Hz
MIN_SECONDS, MAX_SECONDS = 2.9, 5.3
STRONG = 1.6
"""Strong intensity multiplies an emotion's deviation from neutral by this factor."""

# ----------------------------------------------------------------------------------------------
# Phonetics of the two statements

# kind: V vowel, L voiced sonorant, Z voiced fricative, D voiced stop, S voiceless stop,
# F voiceless fricative. Formants are an adult male's (Hz); durations are neutral (s).
PHONES: dict[str, tuple[str, tuple[float, float, float], float]] = {
    "IH": ("V", (400, 1920, 2560), 0.085),
    "AA": ("V", (730, 1090, 2440), 0.105),
    "AO": ("V", (570, 840, 2410), 0.110),
    "AH": ("V", (520, 1190, 2390), 0.060),
    "AY": ("V", (700, 1150, 2450), 0.080),
    "IY": ("V", (330, 2050, 2650), 0.060),
    "R": ("L", (460, 1250, 1650), 0.070),
    "NG": ("L", (300, 1250, 2300), 0.065),
    "DH": ("Z", (350, 1600, 2550), 0.040),
    "Z": ("Z", (300, 1700, 2600), 0.070),
    "D": ("D", (350, 1750, 2600), 0.055),
    "G": ("D", (330, 1900, 2300), 0.060),
    "B": ("D", (300, 900, 2200), 0.055),
    "K": ("S", (330, 1900, 2300), 0.075),
    "T": ("S", (350, 1750, 2600), 0.070),
    "S": ("F", (350, 1700, 2600), 0.100),
}
VOICING = {"V": 1.0, "L": 0.45, "Z": 0.3, "D": 0.1, "S": 0.0, "F": 0.0}
# Noise band (Hz) and level of frication (fricatives) or of the release burst (stops).
FRICATION: dict[str, tuple[float, float, float]] = {
    "S": (4200, 9500, 0.30),
    "Z": (3600, 8500, 0.12),
    "DH": (1200, 7000, 0.05),
    "K": (1500, 3600, 0.45),
    "G": (1200, 3000, 0.30),
    "T": (3000, 7500, 0.45),
    "D": (2500, 6000, 0.30),
    "B": (400, 2200, 0.20),
}
STATEMENTS: dict[int, tuple[tuple[str, ...], ...]] = {
    1: (  # "Kids are talking by the door"
        ("K", "IH", "D", "Z"),
        ("AA", "R"),
        ("T", "AO", "K"),
        ("IH", "NG"),
        ("B", "AY", "IY"),
        ("DH", "AH"),
        ("D", "AO", "R"),
    ),
    2: (  # "Dogs are sitting by the door"
        ("D", "AO", "G", "Z"),
        ("AA", "R"),
        ("S", "IH", "T"),
        ("IH", "NG"),
        ("B", "AY", "IY"),
        ("DH", "AH"),
        ("D", "AO", "R"),
    ),
}
STRESS = (1.0, 0.25, 1.0, 0.3, 0.6, 0.15, 0.9)
PHRASE_BREAK_AFTER = 3  # "Kids are talking | by the door"

# ----------------------------------------------------------------------------------------------
# Emotion styles


@dataclass(frozen=True)
class Style:
    """How one clip is spoken; every field is a number so styles can be scaled and perturbed."""

    pitch: float  # semitones from the actor's habitual F0
    range: float  # multiplier of every pitch excursion below
    rise_fall: float  # st, H* accent: peak in the middle of a stressed vowel
    fall: float  # st, H+L* accent: high at vowel onset, falling through it
    dip: float  # st, L*+H accent: dip then late rise
    bounce: float  # share of the accent that unstressed syllables get too
    declination: float  # st over the utterance
    final: float  # st over the last syllable (+ question-like rise, - fall)
    droop: float  # st fall within every syllable (sighing)
    tremor: float  # st depth of a 5-7 Hz vibrato
    tempo: float  # duration multiplier (> 1 slower)
    stress_len: float  # extra lengthening of stressed vowels
    final_len: float  # extra lengthening of the last syllable
    pause: float  # s of silence at the phrase break
    loud: float  # dB
    accent_db: float  # dB between stressed and unstressed syllables
    attack: float  # s, envelope smoothing (sharp onsets when small)
    effort: float  # 0..1 spectral brightness of the source
    oq: float  # open quotient of the glottal pulse (tense < 0.5 < breathy)
    breath: float  # aspiration noise relative to voicing
    jitter: float  # relative period jitter
    shimmer: float  # relative pulse-amplitude shimmer
    creak: float  # 0..1 creaky voice on stressed and final vowels
    formant: float  # relative formant shift (spread lips, lowered larynx)


STYLE_FIELDS = tuple(f.name for f in fields(Style))

# fmt: off
EMOTION_STYLES: dict[str, Style] = {
    #                  pitch range r_f fall dip bnc decl final droop trem tempo s_len f_len pause loud acc  att  eff  oq   brth  jit   shim  crk  fmt  # noqa: E501
    "neutral":   Style(0.0, 1.0, 2.5, 0.0, 0.0, .3, -2.0, -2.0, 0.0, 0.0, 1.00, .25, .30, .05, 0.0, 4.0, .025, .50, .60, .06, .008, .04, 0.0, .00),  # noqa: E501
    "calm":      Style(-.8, .85, 2.0, 0.0, 0.0, .2, -3.0, -3.0, 0.4, 0.0, 1.12, .30, .45, .10, -2., 2.5, .050, .40, .68, .12, .008, .04, 0.0, .00),  # noqa: E501
    "happy":     Style(3.5, 1.5, 5.0, 0.0, 0.0, .8, -1.0, 1.5, 0.0, 0.0, 0.90, .30, .20, .03, 3.0, 5.0, .020, .62, .55, .05, .008, .04, 0.0, .04),  # noqa: E501
    "sad":       Style(-2., .50, 1.0, 0.0, 0.0, .2, -3.0, -3.0, 2.0, .25, 1.30, .20, .60, .20, -5., 2.0, .060, .25, .75, .20, .015, .07, .15, -.03),  # noqa: E501
    "angry":     Style(3.0, 1.3, 0.0, 6.0, 0.0, .4, -3.0, -4.0, 0.0, 0.0, 0.88, .35, .15, .04, 7.0, 7.0, .008, .92, .40, .02, .010, .05, 0.0, .03),  # noqa: E501
    "fearful":   Style(5.0, 1.0, 1.5, 0.0, 0.0, .4, 0.5, 3.0, 0.0, 1.0, 0.82, .10, .10, .08, 2.0, 3.0, .020, .55, .60, .18, .025, .09, 0.0, .02),  # noqa: E501
    "disgust":   Style(-1.5, 1.2, 0.0, 0.0, 4.5, .2, -1.0, -2.0, 0.0, 0.0, 1.20, .70, .40, .12, 0.0, 4.0, .035, .50, .50, .06, .020, .08, .50, -.02),  # noqa: E501
    "surprised": Style(4.0, 1.5, 3.0, 0.0, 0.0, .3, 1.0, 7.0, 0.0, 0.0, 0.95, .30, .50, .15, 4.0, 5.0, .015, .65, .55, .08, .008, .04, 0.0, .03),  # noqa: E501
}
# fmt: on

# Valid ranges after scaling and perturbation.
_STYLE_BOUNDS = {
    "range": (0.2, 3.0),
    "bounce": (0.0, 1.0),
    "droop": (0.0, 6.0),
    "tremor": (0.0, 3.0),
    "tempo": (0.65, 1.7),
    "stress_len": (0.0, 1.5),
    "final_len": (0.0, 1.2),
    "pause": (0.0, 0.45),
    "accent_db": (0.0, 14.0),
    "attack": (0.004, 0.12),
    "effort": (0.0, 1.0),
    "oq": (0.3, 0.9),
    "breath": (0.0, 0.6),
    "jitter": (0.0, 0.06),
    "shimmer": (0.0, 0.25),
    "creak": (0.0, 1.0),
    "rise_fall": (0.0, 12.0),
    "fall": (0.0, 12.0),
    "dip": (0.0, 10.0),
}


# fmt: off
SPEECH_STYLES: dict[str, Style] = {
    # Deviations from neutral about half the classic table's in level, effort and voice quality
    # (what time-averaged spectra see), contour cues kept. Surprise: happy-like pitch, neutral
    # level and effort, a late rise; happiness: bright, fast, bouncy; fear: high, tense, tremor.
    #                  pitch range r_f fall dip bnc decl final droop trem tempo s_len f_len pause loud acc  att  eff  oq   brth  jit   shim  crk  fmt  # noqa: E501
    "neutral":   Style(0.0, 1.0, 2.5, 0.0, 0.0, .3, -2.0, -1.5, 0.0, 0.0, 1.00, .25, .30, .05, 0.0, 4.0, .025, .50, .60, .06, .008, .04, 0.0, .00),  # noqa: E501
    "calm":      Style(-.6, .85, 2.0, 0.0, 0.0, .2, -2.5, -2.5, 0.3, 0.0, 1.08, .30, .40, .08, -1., 3.0, .040, .44, .64, .10, .008, .04, 0.0, .00),  # noqa: E501
    "happy":     Style(2.5, 1.35, 4.0, 0.0, 0.0, .6, -1.5, 0.0, 0.0, 0.0, 0.93, .30, .25, .04, 1.5, 5.0, .022, .57, .57, .06, .008, .04, 0.0, .025),  # noqa: E501
    "sad":       Style(-1.5, .60, 1.2, 0.0, 0.0, .2, -2.5, -2.5, 1.5, .15, 1.20, .22, .50, .15, -3., 2.5, .050, .35, .70, .15, .013, .06, .12, -.02),  # noqa: E501
    "angry":     Style(1.8, 1.2, 0.5, 4.5, 0.0, .4, -2.5, -3.0, 0.0, 0.0, 0.92, .35, .20, .04, 3.5, 6.5, .012, .75, .47, .03, .010, .05, 0.0, .02),  # noqa: E501
    "fearful":   Style(3.5, 0.9, 1.5, 0.0, 0.0, .4, 0.0, 1.5, 0.0, .70, 0.88, .12, .15, .07, 1.0, 3.5, .020, .55, .58, .14, .020, .07, 0.0, .015),  # noqa: E501
    "disgust":   Style(-1.0, 1.1, 0.5, 0.0, 3.5, .2, -1.5, -2.0, 0.0, 0.0, 1.12, .60, .40, .10, 0.0, 4.0, .030, .50, .55, .07, .016, .07, .35, -.015),  # noqa: E501
    "surprised": Style(2.2, 1.3, 3.5, 0.0, 0.0, .4, 0.0, 3.5, 0.0, 0.0, 0.97, .35, .40, .09, 0.8, 4.5, .020, .53, .58, .07, .008, .04, 0.0, .02),  # noqa: E501
}
# fmt: on
STYLES = ("classic", "speech")
SCHWA = (500.0, 1500.0, 2500.0)
"""Where unstressed vowels drift to in ``style="speech"`` (a male neutral vocal tract)."""


def _style_array(style: Style) -> np.ndarray:
    return np.array([getattr(style, f) for f in STYLE_FIELDS])


def _bounded(values: np.ndarray) -> Style:
    kwargs = dict(zip(STYLE_FIELDS, (float(v) for v in values), strict=True))
    for name, (lo, hi) in _STYLE_BOUNDS.items():
        kwargs[name] = min(max(kwargs[name], lo), hi)
    return Style(**kwargs)


# ----------------------------------------------------------------------------------------------
# Actors


@dataclass(frozen=True)
class Voice:
    """What stays the same across one actor's clips."""

    f0: float  # habitual F0 in Hz
    range: float  # pitch-range multiplier
    vtl: float  # formant scale (a shorter vocal tract has higher formants)
    effort: float  # brightness offset
    breath: float  # extra aspiration
    tempo: float  # habitual duration multiplier
    expressive: float  # how far the actor takes emotions from neutral
    gain_db: float  # recording level
    noise: float  # room-noise RMS (full scale 1.0)
    quirks: tuple[tuple[float, ...], ...]  # per emotion: the actor's own pitch/loud/tempo/effort


@lru_cache(maxsize=64)
def actor_voice(actor: int, seed: int = 0) -> Voice:
    """The voice of ``actor`` (odd actors are male) under ``seed``."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x766F696365, actor]))
    male = actor % 2 == 1
    f0 = rng.normal(112.0, 14.0) if male else rng.normal(205.0, 22.0)
    vtl = rng.uniform(0.93, 1.06) if male else rng.uniform(1.10, 1.24)
    quirks = tuple(
        (
            rng.normal(0, 1.0),
            rng.normal(0, 2.0),
            float(np.exp(rng.normal(0, 0.06))),
            rng.normal(0, 0.07),
        )
        for _ in EMOTIONS
    )
    return Voice(
        f0=float(np.clip(f0, 80, 280)),
        range=float(np.exp(rng.normal(0, 0.2))),
        vtl=float(vtl),
        effort=float(rng.normal(0, 0.1)),
        breath=float(rng.uniform(0.0, 0.08) + (0.0 if male else 0.04)),
        tempo=float(np.exp(rng.normal(0, 0.09))),
        expressive=float(rng.uniform(0.75, 1.25)),
        gain_db=float(rng.normal(0, 3.0)),
        noise=float(10 ** rng.uniform(-4.3, -3.8)),
        quirks=tuple(tuple(float(v) for v in q) for q in quirks),
    )


@dataclass(frozen=True)
class Idiolect:
    """What makes an actor's speech their own in ``style="speech"``, beyond :class:`Voice`."""

    formants: dict[str, tuple[float, float, float]]  # per phone: F1-F3 multipliers
    bandwidth: float  # formant bandwidth multiplier
    upper: tuple[float, float]  # F4, F5 multipliers
    acting: tuple[tuple[float, ...], ...]  # per emotion: extra pitch/loud/tempo/effort quirks
    style_gain: tuple[float, ...]  # per emotion: how far this actor takes it (x expressive)


@lru_cache(maxsize=64)
def actor_idiolect(actor: int, seed: int = 0) -> Idiolect:
    """The idiolect of ``actor`` under ``seed`` (its own random stream: the classic voice and
    its files do not change)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x69646C, actor]))
    formants = {
        name: tuple(float(v) for v in np.exp(rng.normal(0, [0.06, 0.05, 0.035]))) for name in PHONES
    }
    acting = tuple(
        (rng.normal(0, 1.3), rng.normal(0, 2.0), float(np.exp(rng.normal(0, 0.07))),
         rng.normal(0, 0.06))
        for _ in EMOTIONS
    )  # fmt: skip
    return Idiolect(
        formants=formants,
        bandwidth=float(np.exp(rng.normal(0, 0.2))),
        upper=(float(np.exp(rng.normal(0, 0.05))), float(np.exp(rng.normal(0, 0.05)))),
        acting=tuple(tuple(float(v) for v in a) for a in acting),
        style_gain=tuple(float(v) for v in rng.uniform(0.55, 1.45, len(EMOTIONS))),
    )


def clip_style(
    clip: Clip, voice: Voice, rng: np.random.Generator, idiolect: Idiolect | None = None
) -> Style:
    """The style of one clip: the emotion, exaggerated for strong intensity, as this actor acts
    it, with random variation of its own (more of it, from :data:`SPEECH_STYLES`, when an
    ``idiolect`` is given: ``style="speech"``)."""
    table = EMOTION_STYLES if idiolect is None else SPEECH_STYLES
    neutral = _style_array(table["neutral"])
    target = _style_array(table[clip.emotion_name])
    scale = voice.expressive * (STRONG if clip.intensity == 2 else 1.0)
    spread = 1.0
    if idiolect is not None:
        scale *= idiolect.style_gain[clip.emotion - 1]
        spread = 1.35
    values = dict(zip(STYLE_FIELDS, neutral + scale * (target - neutral), strict=True))
    pitch_q, loud_q, tempo_q, effort_q = voice.quirks[clip.emotion - 1]
    if idiolect is not None:
        extra = idiolect.acting[clip.emotion - 1]
        pitch_q, loud_q = pitch_q + extra[0], loud_q + extra[1]
        tempo_q, effort_q = tempo_q * extra[2], effort_q + extra[3]
    values["pitch"] += pitch_q + rng.normal(0, 1.2 * spread)
    values["loud"] += loud_q + voice.gain_db + rng.normal(0, 2.5 * spread)
    values["tempo"] *= tempo_q * voice.tempo * np.exp(rng.normal(0, 0.07 * spread))
    values["effort"] += effort_q + voice.effort + rng.normal(0, 0.08)
    values["breath"] = (values["breath"] + voice.breath) * np.exp(rng.normal(0, 0.3))
    values["range"] *= voice.range * np.exp(rng.normal(0, 0.2))
    for name in ("rise_fall", "fall", "dip", "droop", "tremor", "creak"):
        values[name] *= np.exp(rng.normal(0, 0.2))
    values["final"] += rng.normal(0, 1.0)
    values["declination"] += rng.normal(0, 0.8)
    values["pause"] += rng.normal(0, 0.03)
    values["attack"] *= np.exp(rng.normal(0, 0.2))
    values["oq"] += rng.normal(0, 0.04)
    return _bounded(np.array([values[f] for f in STYLE_FIELDS]))


# ----------------------------------------------------------------------------------------------
# Synthesis


def clip_rng(clip: Clip, seed: int) -> np.random.Generator:
    """The generator of one clip, seeded by ``(seed, file name)`` (sha256, not Python's hash)."""
    digest = hashlib.sha256(clip.file_name().encode()).digest()
    words = np.frombuffer(digest, dtype="<u4").tolist()
    return np.random.default_rng(np.random.SeedSequence([seed, *words]))


@dataclass(frozen=True)
class _Phone:
    name: str
    kind: str
    start: float
    end: float
    syllable: int


def _focus_stress(rng: np.random.Generator) -> tuple[float, ...]:
    """A clip's stress pattern in ``style="speech"``: one content word carries the focus
    accent (speakers vary where they put it), the other stressed words are demoted."""
    content = [i for i, s in enumerate(STRESS) if s >= 0.6]
    focus = content[int(rng.integers(len(content)))]
    return tuple(
        1.0 if i == focus else (s * 0.7 if s >= 0.6 else s) * rng.uniform(0.8, 1.2)
        for i, s in enumerate(STRESS)
    )


def _timeline(
    clip: Clip,
    style: Style,
    rng: np.random.Generator,
    stress_pattern: tuple[float, ...] = STRESS,
    jitter: float = 0.12,
) -> list[_Phone]:
    phones: list[_Phone] = []
    syllables = STATEMENTS[clip.statement]
    t = 0.0
    for index, syllable in enumerate(syllables):
        stress = stress_pattern[index]
        last = index == len(syllables) - 1
        for name in syllable:
            kind, _, base = PHONES[name]
            duration = base * style.tempo * rng.uniform(1.0 - jitter, 1.0 + jitter)
            if kind in "VL":
                duration *= 1.0 + style.stress_len * stress
                if last:
                    duration *= 1.0 + style.final_len
            phones.append(_Phone(name, kind, t, t + duration, index))
            t += duration
        if index == PHRASE_BREAK_AFTER:
            t += max(style.pause, 0.0)
    return phones


def _bump(u: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((u - centre) / width) ** 2)


def _smooth(track: np.ndarray, frames: float) -> np.ndarray:
    width = max(int(round(frames)), 1)
    if width == 1:
        return track
    kernel = np.hanning(width + 2)[1:-1]
    padded = np.pad(track, width, mode="edge")
    return np.convolve(padded, kernel / kernel.sum(), mode="same")[width:-width]


def _nuclei(phones: list[_Phone], n_syllables: int) -> list[tuple[float, float]]:
    """(start, end) of each syllable's voiced nucleus (its vowels and sonorants)."""
    spans = []
    for index in range(n_syllables):
        own = [p for p in phones if p.syllable == index]
        voiced = [p for p in own if p.kind in "VL"] or own
        spans.append((voiced[0].start, voiced[-1].end))
    return spans


def _pitch_track(
    tc: np.ndarray,
    nuclei: list[tuple[float, float]],
    style: Style,
    voice: Voice,
    rng,
    stress_pattern: tuple[float, ...] = STRESS,
) -> np.ndarray:
    """F0 in Hz at the control times ``tc``."""
    total = tc[-1] if len(tc) > 1 else 1.0
    excursion = style.declination * tc / total
    for index, (v0, v1) in enumerate(nuclei):
        u = (tc - v0) / max(v1 - v0, 1e-3)
        weight = stress_pattern[index] + style.bounce * (1.0 - stress_pattern[index])
        weight *= rng.uniform(0.8, 1.2)
        accent = style.rise_fall * _bump(u, 0.5, 0.3) + style.fall * _bump(u, 0.0, 0.45)
        accent += style.dip * (0.6 * _bump(u, 0.95, 0.2) - _bump(u, 0.35, 0.2))
        excursion += weight * accent
        inside = (u > -0.1) & (u < 1.1)
        excursion -= style.droop * np.clip(u, 0.0, 1.0) * inside
    u_last = (tc - nuclei[-1][0]) / max(nuclei[-1][1] - nuclei[-1][0], 1e-3)
    excursion += style.final * np.clip(u_last, 0.0, 1.0) ** 1.5
    rate = rng.uniform(5.0, 7.0)
    excursion += style.tremor * np.sin(2 * np.pi * rate * tc + rng.uniform(0, 2 * np.pi))
    drift = _smooth(rng.normal(0, 1.0, len(tc)).cumsum() * 0.08, 20)
    semitones = style.pitch + style.range * voice.range * excursion + drift - drift.mean()
    return voice.f0 * 2.0 ** (_smooth(semitones, 6) / 12.0)


def _control_tracks(
    phones: list[_Phone],
    n_ctrl: int,
    style: Style,
    voice: Voice,
    rng,
    stress_pattern: tuple[float, ...] = STRESS,
    idiolect: Idiolect | None = None,
) -> dict[str, np.ndarray]:
    """Voicing, aspiration, creak and effort at the control rate, plus the formant tracks.

    With an ``idiolect`` (``style="speech"``) each phone's formant targets are the actor's own,
    and vowels undershoot toward schwa the less stressed and the faster they are spoken.
    """
    STRESS = stress_pattern  # noqa: N806 (the pattern of this clip, in place of the default)
    voicing = np.zeros(n_ctrl)
    aspiration = np.zeros(n_ctrl)
    creak = np.zeros(n_ctrl)
    effort = np.zeros(n_ctrl)
    knots_t, knots_f = [], []
    n_syllables = phones[-1].syllable + 1
    syllable_db = [
        style.accent_db * (STRESS[i] - 0.5) + rng.normal(0, 1.0) for i in range(n_syllables)
    ]
    scale = voice.vtl * (1.0 + style.formant) * rng.uniform(0.98, 1.02, size=3)
    for phone in phones:
        a, b = int(phone.start * CONTROL_RATE), max(int(phone.end * CONTROL_RATE), 1)
        b = min(b, n_ctrl)
        gain = 10 ** (syllable_db[phone.syllable] / 20)
        voicing[a:b] = VOICING[phone.kind] * gain
        stress = STRESS[phone.syllable]
        effort[a:b] = style.effort + 0.12 * (stress - 0.5) * style.accent_db / 4.0
        if phone.kind == "S":
            release = a + int(0.7 * (b - a))
            aspiration[release:b] = 0.5 * gain
        if phone.kind in "VL":
            last = phone.syllable == n_syllables - 1
            creak[a:b] = style.creak * (1.0 if last else 0.6 * stress)
        formants = _phone_formants(phone, scale, stress, style, idiolect)
        middle = 0.5 * (phone.start + phone.end)
        for at in (
            phone.start + 0.3 * (middle - phone.start),
            phone.end - 0.3 * (phone.end - middle),
        ):
            knots_t.append(at)
            knots_f.append(formants)
    attack_frames = style.attack * CONTROL_RATE
    return {
        "voicing": _smooth(voicing, attack_frames),
        "aspiration": _smooth(aspiration, 3),
        "creak": _smooth(creak, 8),
        "effort": np.clip(_smooth(effort, 10), 0.0, 1.0),
        "formants": _formant_tracks(knots_t, knots_f, n_ctrl, style, voice, idiolect),
    }


def _phone_formants(
    phone: _Phone, scale: np.ndarray, stress: float, style: Style, idiolect: Idiolect | None
) -> np.ndarray:
    """F1-F3 targets of one phone: the actor's own with an idiolect, where a vowel undershoots
    toward schwa the less stressed and the faster it is spoken."""
    formants = np.array(PHONES[phone.name][1]) * scale
    if idiolect is not None:
        formants = formants * np.array(idiolect.formants[phone.name])
        if phone.kind == "V":
            reduce = 0.55 * (1.0 - stress) / style.tempo
            formants = formants + min(reduce, 0.6) * (np.array(SCHWA) * scale - formants)
    return formants


def _formant_tracks(
    knots_t: list[float],
    knots_f: list[np.ndarray],
    n_ctrl: int,
    style: Style,
    voice: Voice,
    idiolect: Idiolect | None,
) -> np.ndarray:
    """Five formant tracks at the control rate: F1-F3 through the phones' targets, F4-F5 flat."""
    tc = np.arange(n_ctrl) / CONTROL_RATE
    knots = np.array(knots_f)
    formant_tracks = [np.interp(tc, knots_t, knots[:, k]) for k in range(3)]
    high = voice.vtl * (1.0 + 0.5 * style.formant)
    upper = idiolect.upper if idiolect is not None else (1.0, 1.0)
    formant_tracks += [
        np.full(n_ctrl, 3350.0 * high * upper[0]),
        np.full(n_ctrl, 3900.0 * high * upper[1]),
    ]
    return np.stack(formant_tracks)


def _glottal_source(
    f0: np.ndarray, creak: np.ndarray, style: Style, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Glottal flow derivative and the open-phase mask, per sample."""
    f0 = f0 * (1.0 - 0.45 * creak)
    jitter = style.jitter + 0.08 * creak
    max_periods = int(np.sum(f0) / RATE) + 8
    period_noise = rng.normal(0, 1.0, max_periods)
    period = np.floor(np.cumsum(f0) / RATE).astype(np.int64)
    f0 = f0 * (1.0 + jitter * np.clip(period_noise[period], -3, 3))
    phase = np.cumsum(f0) / RATE
    period = np.floor(phase).astype(np.int64)
    within = phase - period
    oq = np.clip(style.oq - 0.2 * creak, 0.25, 0.95)
    opening = 0.62 * oq
    closing = oq - opening
    flow = np.where(
        within < opening,
        0.5 * (1.0 - np.cos(np.pi * within / opening)),
        np.where(within < oq, np.cos(0.5 * np.pi * (within - opening) / closing), 0.0),
    )
    amplitude = 1.0 + style.shimmer * np.clip(rng.normal(0, 1.0, max_periods + 2), -3, 3)
    alternate = (np.arange(max_periods + 2) % 2).astype(float)
    flow *= amplitude[period] * (1.0 - 0.6 * creak * alternate[period])
    derivative = np.diff(flow, prepend=0.0) * (RATE / 2000.0)
    return derivative, within < oq


def _formant_filter(source: np.ndarray, formants: np.ndarray, bandwidths: np.ndarray) -> np.ndarray:
    """Cascade of five resonators whose frequencies change every control hop."""
    n_ctrl = formants.shape[1]
    radius = np.exp(-np.pi * bandwidths[:, None] / RATE) * np.ones((1, n_ctrl))
    theta = 2 * np.pi * np.minimum(formants, 0.45 * RATE) / RATE
    a1, a2 = -2 * radius * np.cos(theta), radius**2
    # Multiply the five second-order denominators into one tenth-order polynomial per hop.
    poly = np.zeros((n_ctrl, 11))
    poly[:, 0] = 1.0
    order = 0
    for k in range(formants.shape[0]):
        new = poly.copy()
        new[:, 1 : order + 3] += a1[k][:, None] * poly[:, : order + 2]
        new[:, 2 : order + 3] += a2[k][:, None] * poly[:, : order + 1]
        poly, order = new, order + 2
    gain = poly.sum(axis=1)  # unit gain at DC, as in Klatt's cascade
    out = np.empty_like(source)
    state = np.zeros(10)
    for j in range(n_ctrl):
        segment = slice(j * HOP, min((j + 1) * HOP, len(source)))
        if segment.start >= len(source):
            break
        out[segment], state = lfilter(gain[j : j + 1], poly[j], source[segment], zi=state)
    return out


@lru_cache(maxsize=32)
def _band(lo: float, hi: float) -> np.ndarray:
    return butter(2, [lo, hi], btype="bandpass", fs=RATE, output="sos")


@lru_cache(maxsize=2)
def _noise_table(kind: str) -> np.ndarray:
    """A fixed stretch of unit-RMS noise that clips take random slices of (cheaper than drawing
    fresh noise per clip; deterministic because the table's seed is a constant)."""
    rng = np.random.default_rng(np.random.SeedSequence([0x6E6F697365, len(kind)]))
    if kind == "breath":  # aspiration: white noise above 500 Hz, at the synthesis rate
        table = sosfilt(
            butter(2, 500.0, btype="highpass", fs=RATE, output="sos"), rng.normal(0, 1, 8 * RATE)
        )
    else:  # room: gently low-passed, at the file rate
        table = lfilter([1.0], [1.0, -0.7], rng.normal(0, 1, 12 * SAMPLE_RATE))
    return table / table.std()


def _noise_slice(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    table = _noise_table(kind)
    start = int(rng.integers(0, len(table) - n))
    return table[start : start + n].copy()


def _frication(phones: list[_Phone], n: int, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros(n)
    for phone in phones:
        if phone.name not in FRICATION:
            continue
        lo, hi, level = FRICATION[phone.name]
        a, b = int(phone.start * RATE), min(int(phone.end * RATE), n)
        if phone.kind in "DS":  # a 10-15 ms release burst at 70 % of the stop
            a = a + int(0.7 * (b - a))
            b = min(a + int(rng.uniform(0.010, 0.015) * RATE), n)
        if b - a < 16:
            continue
        noise = sosfilt(_band(lo, hi), rng.normal(0, 1.0, b - a + 256))[256:]
        ramp = np.hanning(b - a) ** (0.5 if phone.kind in "FZ" else 0.25)
        out[a:b] += level * rng.uniform(0.8, 1.25) * ramp * noise / (noise.std() + 1e-9)
    return out


def synthesize(clip: Clip, seed: int = 0, style_name: str = "classic") -> np.ndarray:
    """The waveform of one clip (float64 in [-1, 1] at 48 kHz), a pure function of its arguments.

    Args:
        clip: which RAVDESS file.
        seed: the corpus seed.
        style_name: ``classic`` or ``speech`` (see the module docstring).

    Raises:
        ValueError: an unknown ``style_name``.
    """
    if style_name not in STYLES:
        raise ValueError(f"synth style must be one of {list(STYLES)}, got {style_name!r}")
    rng = clip_rng(clip, seed)
    voice = actor_voice(clip.actor, seed)
    idiolect = actor_idiolect(clip.actor, seed) if style_name == "speech" else None
    style = clip_style(clip, voice, rng, idiolect)
    if idiolect is None:
        stress, jitter = STRESS, 0.12
    else:
        stress, jitter = _focus_stress(rng), 0.25
    phones = _timeline(clip, style, rng, stress, jitter)
    speech_seconds = phones[-1].end + 0.06
    n_ctrl = int(np.ceil(speech_seconds * CONTROL_RATE)) + 1
    n = (n_ctrl - 1) * HOP
    tc = np.arange(n_ctrl) / CONTROL_RATE
    ts = np.arange(n) / RATE
    tracks = _control_tracks(phones, n_ctrl, style, voice, rng, stress, idiolect)
    nuclei = _nuclei(phones, len(STATEMENTS[clip.statement]))
    f0 = _pitch_track(tc, nuclei, style, voice, rng, stress)

    def per_sample(track: np.ndarray) -> np.ndarray:
        return np.interp(ts, tc, track)

    creak = per_sample(tracks["creak"])
    pulses, open_phase = _glottal_source(np.clip(per_sample(f0), 55.0, 700.0), creak, style, rng)
    # Vocal effort brightens the source: a one-pole low-pass (about 500 Hz) mixed in inversely.
    effort = per_sample(tracks["effort"])
    soft = lfilter([1 - _SOFT_POLE], [1, -_SOFT_POLE], pulses) * 2.5
    source = effort * pulses + (1.0 - effort) * soft
    noise = _noise_slice("breath", n, rng)
    voicing = per_sample(tracks["voicing"])
    breath = style.breath * voicing * (0.4 + 0.6 * open_phase)
    source = voicing * source + (breath + per_sample(tracks["aspiration"])) * noise * 0.35
    bandwidths = np.array([70.0, 90.0, 130.0, 220.0, 280.0]) * (1.0 + 0.8 * style.breath)
    if idiolect is not None:
        bandwidths = bandwidths * idiolect.bandwidth
    speech = _formant_filter(source, tracks["formants"], bandwidths)
    voiced = voicing > 0.5
    speech /= np.sqrt(np.mean(speech[voiced] ** 2)) if voiced.any() else 1.0
    speech += _frication(phones, n, rng)
    speech *= 0.05 * 10 ** (style.loud / 20.0)
    return _in_room(resample_poly(speech, SAMPLE_RATE // RATE, 1), voice, rng)


def _in_room(speech: np.ndarray, voice: Voice, rng: np.random.Generator) -> np.ndarray:
    """The recording: ``speech`` (at the file rate) between stretches of room noise."""
    n = len(speech)
    lead = rng.uniform(0.45, 1.15)
    trail = rng.uniform(0.45, 1.25)
    total = np.clip(lead + n / SAMPLE_RATE + trail, MIN_SECONDS + 0.02, MAX_SECONDS - 0.02)
    lead = min(lead, total - n / SAMPLE_RATE - 0.3)
    n_total = int(round(total * SAMPLE_RATE))
    # Room noise: low-level, never digital silence.
    out = _noise_slice("room", n_total, rng) * voice.noise
    start = int(round(lead * SAMPLE_RATE))
    # A soft limiter, as a loud actor drives the recorder's; the room noise is far below its knee.
    out[start : start + n] = 0.98 * np.tanh((out[start : start + n] + speech) / 0.98)
    return out


def encode_wav(samples: np.ndarray) -> bytes:
    """16-bit PCM mono WAV bytes at 48 kHz."""
    pcm = np.clip(np.round(samples * 32767.0), -32768, 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())
    return buffer.getvalue()
