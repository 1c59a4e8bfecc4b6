"""The layouts ``knd synth`` can name its corpus in: one entry per public corpus.

The synthetic voice renders RAVDESS clips only (:func:`knd.audio.voice.synthesize` takes a
:class:`~knd.data.ravdess.Clip`), so every layout is a renaming: each of its speakers is one
RAVDESS voice actor, each of its emotions one RAVDESS emotion, and each file one of that actor's
clips of that emotion, written under the name and folder the real corpus would give it. Every
speaker has clips of every emotion of its layout; no two files share a clip, so no two files
share their bytes (``knd prepare`` rejects duplicates by content hash).

| layout | a file | speakers (their voice actors) |
|---|---|---|
| `ravdess` | `Actor_01/03-01-05-02-01-02-01.wav` | 01..24 (themselves) |
| `crema_d` | `AudioWAV/1001_IEO_ANG_HI.wav` | 1001..1024 (1..24) |
| `emodb` | `wav/03a01Wa.wav` | 03 08 09 10 11 12 13 14 15 16 (one of the same gender each) |
| `tess` | `OAF_angry/OAF_back_angry.wav` | OAF YAF (2, 4: female) |
| `savee` | `ALL/DC_a01.wav` | DC JE JK KL (1 3 5 7: male) |
| `table` | `clips/3f2a9c0d1e7b.wav`, listed in `labels.csv` | 001..024 (1..24) |

Adding a layout is one entry in :data:`LAYOUTS` (and its name and speaker count in
:data:`knd.config.schema.SYNTH_LAYOUT_SPEAKERS`, which the config checks ``actors`` against).
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from knd.config.schema import SYNTH_LAYOUT_SPEAKERS
from knd.data.ravdess import ACTORS, EMOTIONS, Clip, actor_clips


@dataclass(frozen=True)
class Speaker:
    """One speaker of a layout: its id as the corpus spells it, and the voice that renders it."""

    id: str
    voice: int  # the RAVDESS actor (odd: male), so the synthetic gender is the voice's

    @property
    def gender(self) -> str:
        return "male" if self.voice % 2 == 1 else "female"


@dataclass(frozen=True)
class Slot:
    """Everything a layout may name a file by."""

    speaker: Speaker
    position: int  # the speaker's place in its layout, 0-based
    code: str  # the layout's emotion code
    take: int  # which of the speaker's clips of this emotion, 0-based
    clip: Clip  # what the synthesiser renders
    seed: int


@dataclass(frozen=True)
class SynthFile:
    """One file of a synthetic corpus: its path under the corpus root ('/'-separated), the clip
    that renders it and the labels the layout gives it."""

    path: str
    clip: Clip
    speaker: Speaker
    code: str

    @property
    def label(self) -> str:
        """The emotion in RAVDESS's vocabulary (what the clip was rendered as)."""
        return self.clip.emotion_name


@dataclass(frozen=True)
class Layout:
    """One corpus layout.

    Attributes:
        speakers: in the order ``actors=N`` takes them (the first N).
        emotions: the layout's emotion codes, each with the RAVDESS emotion (01..08) rendered.
        path: the file's path under the corpus root.
        takes: files per speaker and emotion, at most (none: every clip of that RAVDESS emotion,
            8, or 4 for neutral, which RAVDESS records at normal intensity only).
        index: files beside the audio (name -> text), written after it.
    """

    speakers: tuple[Speaker, ...]
    emotions: dict[str, int]
    path: Callable[[Slot], str]
    takes: int | None = None
    index: Callable[[list[SynthFile]], dict[str, str]] | None = None


def _ravdess(slot: Slot) -> str:
    return f"Actor_{slot.clip.actor:02d}/{slot.clip.file_name()}"


def _within_intensity(clip: Clip) -> int:
    """0..3: a clip's statement and repetition, which RAVDESS records at each intensity."""
    return 2 * (clip.statement - 1) + clip.repetition - 1


CREMA_SENTENCES = (
    "IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI",
)  # fmt: skip
CREMA_LEVELS = {1: "MD", 2: "HI"}  # by RAVDESS intensity; CREMA-D's neutral is always XX


def _crema_d(slot: Slot) -> str:
    # Four sentences a speaker, at both levels; speakers start four sentences apart, so a
    # three-speaker corpus already says all twelve.
    sentence = CREMA_SENTENCES[(4 * slot.position + _within_intensity(slot.clip)) % 12]
    level = "XX" if slot.code == "NEU" else CREMA_LEVELS[slot.clip.intensity]
    return f"AudioWAV/{slot.speaker.id}_{sentence}_{slot.code}_{level}.wav"


EMODB_SPEAKERS = (
    ("03", "male"), ("08", "female"), ("09", "female"), ("10", "male"), ("11", "male"),
    ("12", "male"), ("13", "female"), ("14", "female"), ("15", "male"), ("16", "female"),
)  # fmt: skip
"""EmoDB's speakers and their documented genders."""
EMODB_TEXTS = ("a01", "a02", "a04", "a05", "a07", "b01", "b02", "b03", "b09", "b10")


def _emodb_speakers() -> tuple[Speaker, ...]:
    """Each speaker voiced by the next unused actor of its gender (odd actors are male)."""
    voices = {"male": iter(ACTORS[0::2]), "female": iter(ACTORS[1::2])}
    return tuple(Speaker(sid, next(voices[gender])) for sid, gender in EMODB_SPEAKERS)


def _emodb(slot: Slot) -> str:
    # Intensity and statement pick one of four texts, repetition the version (EmoDB's takes:
    # a, b); speakers start four texts apart, so three speakers already say all ten.
    clip = slot.clip
    text = EMODB_TEXTS[(4 * slot.position + 2 * (clip.intensity - 1) + clip.statement - 1) % 10]
    return f"wav/{slot.speaker.id}{text}{slot.code}{'ab'[clip.repetition - 1]}.wav"


TESS_WORDS = ("back", "bar", "base", "bath")
TESS_FOLDERS = {"ps": "pleasant_surprised"}  # the other emotions' folders are their codes


def _tess(slot: Slot) -> str:
    # One word per take: each speaker says the same words in every emotion, as in TESS.
    sid, code = slot.speaker.id, slot.code
    folder = f"{sid}_{TESS_FOLDERS.get(code, code)}"
    return f"{folder}/{sid}_{TESS_WORDS[slot.take]}_{code}.wav"


def _savee(slot: Slot) -> str:
    return f"ALL/{slot.speaker.id}_{slot.code}{slot.take + 1:02d}.wav"


def _table(slot: Slot) -> str:
    # Opaque on purpose: only labels.csv says what a file is. The seed is part of the name as it
    # is of the audio, so a name never stands for two recordings.
    key = f"{slot.seed}/{slot.clip.file_name()}".encode()
    return f"clips/{hashlib.sha256(key).hexdigest()[:12]}.wav"


TABLE_COLUMNS = ("path", "label", "speaker", "gender")


def _labels_csv(files: list[SynthFile]) -> dict[str, str]:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(TABLE_COLUMNS)
    for f in sorted(files, key=lambda f: f.path):
        writer.writerow((f.path, f.label, f.speaker.id, f.speaker.gender))
    return {"labels.csv": text.getvalue()}


def _numbered(name: Callable[[int], str]) -> tuple[Speaker, ...]:
    """Every voice actor as a speaker of its own, named by ``name(actor)``."""
    return tuple(Speaker(name(a), a) for a in ACTORS)


_RAVDESS_CODES = {f"{code:02d}": code for code in range(1, len(EMOTIONS) + 1)}

LAYOUTS: dict[str, Layout] = {
    "ravdess": Layout(_numbered("{:02d}".format), _RAVDESS_CODES, _ravdess),
    "crema_d": Layout(
        _numbered(lambda a: str(1000 + a)),
        {"ANG": 5, "DIS": 7, "FEA": 6, "HAP": 3, "NEU": 1, "SAD": 4},
        _crema_d,
    ),
    # EmoDB's boredom is rendered as RAVDESS calm (02): the voice has no boredom, and EmoDB has
    # no calm, so the seven classes stay seven distinct renderings.
    "emodb": Layout(
        _emodb_speakers(),
        {"W": 5, "L": 2, "E": 7, "A": 6, "F": 3, "T": 4, "N": 1},
        _emodb,
    ),
    "tess": Layout(
        (Speaker("OAF", 2), Speaker("YAF", 4)),
        {"angry": 5, "disgust": 7, "fear": 6, "happy": 3, "neutral": 1, "ps": 8, "sad": 4},
        _tess,
        takes=len(TESS_WORDS),
    ),
    "savee": Layout(
        tuple(Speaker(sid, voice) for sid, voice in (("DC", 1), ("JE", 3), ("JK", 5), ("KL", 7))),
        {"a": 5, "d": 7, "f": 6, "h": 3, "n": 1, "sa": 4, "su": 8},
        _savee,
    ),
    "table": Layout(
        _numbered("{:03d}".format),
        {name: i + 1 for i, name in enumerate(EMOTIONS)},
        _table,
        index=_labels_csv,
    ),
}
"""Every layout by name (``knd synth layout=NAME``)."""

if {name: len(layout.speakers) for name, layout in LAYOUTS.items()} != SYNTH_LAYOUT_SPEAKERS:
    raise RuntimeError(f"synth layouts differ from the config's {SYNTH_LAYOUT_SPEAKERS}")


def speaker_numbers(layout: str, actors: Sequence[int] | int | None) -> list[int]:
    """The speakers ``actors`` names: places 1..N in the layout's speaker list, N for the first
    N, or None for all of them (for ``ravdess`` a place is the actor's number).

    Raises:
        ValueError: an unknown layout, no speaker, or one the layout does not have.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"synth layout must be one of {list(LAYOUTS)}, got {layout!r}")
    most = len(LAYOUTS[layout].speakers)
    actors = most if actors is None else actors
    chosen = list(range(1, actors + 1)) if isinstance(actors, int) else sorted(set(actors))
    if not chosen or not all(1 <= n <= most for n in chosen):
        raise ValueError(
            f"actors must be 1..{most} for layout {layout} (an int N means the first N), "
            f"got {actors!r}"
        )
    return chosen


def plan(layout: str, actors: Sequence[int] | int | None, seed: int = 0) -> list[SynthFile]:
    """The files of the speakers ``actors`` names (:func:`speaker_numbers`) in ``layout``.

    Raises:
        ValueError: an unknown layout, no speaker, or one the layout does not have.
    """
    numbers = speaker_numbers(layout, actors)
    entry = LAYOUTS[layout]
    files = []
    for number in numbers:
        speaker = entry.speakers[number - 1]
        for code, emotion in entry.emotions.items():
            clips = [c for c in actor_clips(speaker.voice) if c.emotion == emotion]
            for take, clip in enumerate(clips[: entry.takes]):
                slot = Slot(speaker, number - 1, code, take, clip, seed)
                files.append(SynthFile(entry.path(slot), clip, speaker, code))
    if len({f.path for f in files}) != len(files):
        raise RuntimeError(f"synth layout {layout}: two files got one name")
    return files


def index_files(layout: str, files: list[SynthFile]) -> dict[str, str]:
    """The files a layout writes beside the audio (``labels.csv`` of ``table``), name -> text."""
    index = LAYOUTS[layout].index
    return index(files) if index else {}


__all__ = [
    "LAYOUTS",
    "Layout",
    "Slot",
    "Speaker",
    "SynthFile",
    "index_files",
    "plan",
    "speaker_numbers",
]
