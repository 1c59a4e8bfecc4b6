"""Labelled corpora: one emotion vocabulary, built-in layouts parsed from names, and label tables.

A *layout* reads a clip's labels from its path exactly as a corpus is distributed (RAVDESS,
CREMA-D, EmoDB, TESS, SAVEE). Any other corpus comes with a *label table* (``.csv``, ``.tsv``,
``.jsonl`` or ``.parquet``, local or ``s3://``) with one row per file: ``path``, ``label``,
``speaker`` and optionally ``gender``, ``corpus``, ``split``. :func:`match_table` pairs its rows
with the files found under the input and accounts for every row and every file: each ends in
exactly one of the entries to prepare or the rejections, with a one-line reason.

Pure: no Ray and no torch, so the driver and the workers alike can call it.
"""

from __future__ import annotations

import csv
import io
import json
import os
import posixpath
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, NamedTuple

import pyarrow.fs as pafs

from knd.data import ravdess, storage

VOCABULARY: tuple[str, ...] = (*ravdess.EMOTIONS, "boredom")
"""The one emotion vocabulary; its first eight are RAVDESS's emotion codes 01..08 in order, so a
RAVDESS label id is the same in both."""

GENDERS: tuple[str, ...] = ("male", "female", "unknown")


@dataclass(frozen=True)
class ClipLabels:
    """What a corpus says about one clip, whichever way it says it (a name or a table row)."""

    label: str
    """A :data:`VOCABULARY` name for the built-in layouts; as written (or mapped) for a table."""
    speaker: str
    """The corpus's own speaker id as a string (RAVDESS ``"1"``..``"24"``, EmoDB ``"03"``)."""
    gender: str = "unknown"
    """``male``, ``female`` or ``unknown``."""
    sentence: str | None = None
    """The sentence, text or word code the speaker read, where the corpus names one."""
    intensity: str | None = None
    """RAVDESS ``normal``/``strong``, CREMA-D ``LO``/``MD``/``HI``/``XX``."""
    corpus: str | None = None
    split: str | None = None
    """A split the table assigns (e.g. ``train``/``test``), if it assigns one."""


def labels_in_order(labels: Iterable[str]) -> tuple[str, ...]:
    """The distinct labels: :data:`VOCABULARY`'s first, in its order, then the others sorted.

    A dataset's label list, so that a label id means the same emotion across corpora wherever
    the vocabulary covers it.
    """
    distinct = set(labels)
    known = tuple(name for name in VOCABULARY if name in distinct)
    return known + tuple(sorted(distinct - set(VOCABULARY)))


# ----------------------------------------------------------------------------------------------
# Built-in layouts


class _Fault(ValueError):
    """A reason a name does not fit a layout; :meth:`Layout.parse` adds the layout and the stem."""


def _pick(choices: Mapping[str, str] | tuple[str, ...], value: str, what: str) -> str:
    """``choices[value]`` (a tuple's ``value`` itself), or a fault listing the choices."""
    if value not in choices:
        raise _Fault(f"{what} {value!r} is not one of {' '.join(choices)}")
    return choices[value] if isinstance(choices, Mapping) else value


@dataclass(frozen=True)
class Layout:
    """How one corpus names its files, and the labels those names carry."""

    name: str
    """The key in :data:`LAYOUTS` (what ``corpus=`` names)."""
    title: str
    """The corpus's own name, for messages."""
    labels: tuple[str, ...]
    """Every label its names carry, in :data:`VOCABULARY` order."""
    reader: Callable[[PurePosixPath], ClipLabels] = field(repr=False, compare=False)

    def parse(self, relpath: str) -> ClipLabels:
        """The labels a path carries (any folder prefix; ``.wav``, ``.flac``, ``.ogg``, ``.mp3``).

        Raises:
            ValueError: the path is not this corpus's; the message names the corpus, the reason
                and the file's stem.
        """
        path = PurePosixPath(str(relpath).replace("\\", "/"))
        try:
            if path.suffix.lower() not in storage.AUDIO_SUFFIXES:
                known = " ".join(storage.AUDIO_SUFFIXES)
                raise _Fault(f"extension {path.suffix!r} is not one of {known}")
            return self.reader(path)
        except _Fault as e:
            article = "an" if self.title[0] in "AEIOU" else "a"
            raise ValueError(f"not {article} {self.title} name ({e}): {path.stem!r}") from None


def _ravdess(path: PurePosixPath) -> ClipLabels:
    clip = ravdess.parse_name(str(path))  # its ValueError already names RAVDESS and the stem
    return ClipLabels(
        label=clip.emotion_name,
        speaker=str(clip.actor),
        gender=clip.gender,
        sentence=str(clip.statement),
        intensity=("normal", "strong")[clip.intensity - 1],
        corpus="ravdess",
    )


CREMA_D_SENTENCES = ("IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI",
                     "WSI")  # fmt: skip
CREMA_D_EMOTIONS = {"ANG": "angry", "DIS": "disgust", "FEA": "fearful", "HAP": "happy",
                    "NEU": "neutral", "SAD": "sad"}  # fmt: skip
CREMA_D_LEVELS = ("LO", "MD", "HI", "XX")


def _crema_d(path: PurePosixPath) -> ClipLabels:
    parts = path.stem.split("_")
    if len(parts) != 4:
        raise _Fault(f"{len(parts)} fields, expected AAAA_SSS_EEE_LL")
    actor, sentence, emotion, level = parts
    if not (len(actor) == 4 and actor.isdigit() and 1001 <= int(actor) <= 1091):
        raise _Fault(f"actor {actor!r} is not 1001..1091")
    _pick(CREMA_D_SENTENCES, sentence, "sentence")
    label = _pick(CREMA_D_EMOTIONS, emotion, "emotion")
    _pick(CREMA_D_LEVELS, level, "level")
    # Gender is not in the name: the corpus ships it in VideoDemographics.csv.
    return ClipLabels(label, actor, sentence=sentence, intensity=level, corpus="crema_d")


EMODB_SPEAKERS = {"03": "male", "08": "female", "09": "female", "10": "male", "11": "male",
                  "12": "male", "13": "female", "14": "female", "15": "male",
                  "16": "female"}  # fmt: skip
"""EmoDB's ten speakers and their genders, as its documentation gives them."""
EMODB_TEXTS = ("a01", "a02", "a04", "a05", "a07", "b01", "b02", "b03", "b09", "b10")
EMODB_EMOTIONS = {"W": "angry", "L": "boredom", "E": "disgust", "A": "fearful", "F": "happy",
                  "T": "sad", "N": "neutral"}  # fmt: skip
_EMODB_NAME = re.compile(r"^(\d\d)([a-z]\d\d)(.)([a-z])$")


def _emodb(path: PurePosixPath) -> ClipLabels:
    match = _EMODB_NAME.match(path.stem)
    if not match:
        raise _Fault("expected SSTTTEV, e.g. 03a01Fa")
    speaker, text, emotion, _version = match.groups()
    gender = _pick(EMODB_SPEAKERS, speaker, "speaker")
    _pick(EMODB_TEXTS, text, "text")
    label = _pick(EMODB_EMOTIONS, emotion, "emotion")
    return ClipLabels(label, speaker, gender, sentence=text, corpus="emodb")


TESS_SPEAKERS = ("OAF", "YAF")
TESS_EMOTIONS = {"angry": "angry", "disgust": "disgust", "fear": "fearful", "happy": "happy",
                 "neutral": "neutral", "ps": "surprised", "pleasant_surprise": "surprised",
                 "pleasant_surprised": "surprised", "sad": "sad"}  # fmt: skip


def _tess(path: PurePosixPath) -> ClipLabels:
    # The archive mixes case (OAF_Fear/, YAF_pleasant_surprised/), so compare in lower case.
    speaker, _, rest = path.stem.lower().partition("_")
    word, _, emotion = rest.partition("_")
    if not (speaker and word and emotion):
        raise _Fault("expected <speaker>_<word>_<emotion>, e.g. OAF_back_angry")
    speaker = _pick(TESS_SPEAKERS, speaker.upper(), "speaker")
    label = _pick(TESS_EMOTIONS, emotion, "emotion")
    return ClipLabels(label, speaker, "female", sentence=word, corpus="tess")


SAVEE_SPEAKERS = ("DC", "JE", "JK", "KL")
SAVEE_CODES = {"a": "angry", "d": "disgust", "f": "fearful", "h": "happy", "n": "neutral",
               "sa": "sad", "su": "surprised"}  # fmt: skip
SAVEE_SENTENCES = {"n": 30}
"""Sentences per code: 30 neutral, 15 of every other emotion (120 per speaker)."""
_SAVEE_NAME = re.compile(r"^(?:([^_]+)_)?([a-z]+)(\d\d)$")


def _savee(path: PurePosixPath) -> ClipLabels:
    match = _SAVEE_NAME.match(path.stem)
    if not match:
        raise _Fault("expected <speaker>_<code><nn>, e.g. DC_sa03, or <speaker>/<code><nn>")
    prefix, code, number = match.groups()
    # The original archive (AudioData/DC/sa03.wav) names the speaker by its folder alone.
    speaker = prefix if prefix is not None else path.parent.name
    if not speaker:
        raise _Fault("no speaker: neither a DC_ prefix nor a DC/ folder")
    _pick(SAVEE_SPEAKERS, speaker, "speaker")
    label = _pick(SAVEE_CODES, code, "emotion code")
    count = SAVEE_SENTENCES.get(code, 15)
    if not 1 <= int(number) <= count:
        raise _Fault(f"sentence {number} is not 01..{count:02d} for code {code!r}")
    return ClipLabels(label, speaker, "male", sentence=f"{code}{number}", corpus="savee")


def _layout(name: str, title: str, labels: Iterable[str], reader: Callable) -> Layout:
    return Layout(name, title, labels_in_order(labels), reader)


LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        _layout("ravdess", "RAVDESS", ravdess.EMOTIONS, _ravdess),
        _layout("crema_d", "CREMA-D", CREMA_D_EMOTIONS.values(), _crema_d),
        _layout("emodb", "EmoDB", EMODB_EMOTIONS.values(), _emodb),
        _layout("tess", "TESS", TESS_EMOTIONS.values(), _tess),
        _layout("savee", "SAVEE", SAVEE_CODES.values(), _savee),
    )
}
"""The built-in layouts by name; ``docs/guides/corpora.md`` gives each one's pattern and licence."""


def layout(name: str) -> Layout:
    """The built-in layout called ``name``.

    Raises:
        ValueError: no layout has that name; the message lists those that exist.
    """
    if name not in LAYOUTS:
        raise ValueError(f"unknown corpus layout {name!r}; expected one of {sorted(LAYOUTS)}")
    return LAYOUTS[name]


# ----------------------------------------------------------------------------------------------
# Label tables

TABLE_FORMATS = (".csv", ".tsv", ".jsonl", ".parquet")
REQUIRED_COLUMNS = ("path", "label", "speaker")
MAX_TABLE_BYTES = 1 << 30
"""A label table larger than this is refused: all of it is held in the driver's memory."""
MAX_TABLE_ROWS = 10_000_000
"""A label table with more rows than this is refused, for the same reason."""


@dataclass(frozen=True)
class TableRow:
    """One row of a label table, its values stripped strings as written."""

    row: int
    """1-based number of the data row (the header is not a row), for messages."""
    path: str
    label: str
    speaker: str
    gender: str = "unknown"
    corpus: str | None = None
    split: str | None = None


def _cell(value: Any) -> str:
    """A table value as a stripped string; a missing or null one as ``""``."""
    if value is None or (isinstance(value, float) and value != value):  # NaN: a null in floats
        return ""
    return str(value).strip()


def _text(data: bytes, uri: str) -> str:
    try:
        return data.decode("utf-8-sig")  # the BOM a spreadsheet writes is not part of a name
    except UnicodeDecodeError as e:
        reason = f"{e.reason} at byte {e.start}"
        raise ValueError(f"label table {uri} is not UTF-8 text ({reason})") from None


def _csv_records(data: bytes, uri: str, delimiter: str) -> tuple[list[str], list[dict]]:
    reader = csv.reader(io.StringIO(_text(data, uri), newline=""), delimiter=delimiter)
    header = next(reader, [])
    records = []
    for values in reader:
        if not any(v.strip() for v in values):
            continue
        # A spreadsheet pads rows with empty cells past the header's; only a value there is wrong.
        if any(v.strip() for v in values[len(header) :]):
            raise ValueError(
                f"label table {uri} row {len(records) + 1}: {len(values)} fields, the header "
                f"has {len(header)} (a comma or tab in a value must be quoted)"
            )
        records.append(dict(zip(header, values, strict=False)))
        _check_rows(uri, len(records))
    return header, records


def _jsonl_records(data: bytes, uri: str) -> tuple[list[str], list[dict]]:
    columns: dict[str, None] = {}
    records = []
    for number, line in enumerate(_text(data, uri).splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"label table {uri} line {number} is not JSON: {e.msg}") from None
        if not isinstance(record, dict):
            raise ValueError(f"label table {uri} line {number} is not a JSON object")
        columns.update(dict.fromkeys(record))
        records.append(record)
        _check_rows(uri, len(records))
    return list(columns), records


def _parquet_records(data: bytes, uri: str) -> tuple[list[str], list[dict]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(pa.BufferReader(data))
    except pa.ArrowInvalid as e:
        raise ValueError(f"label table {uri} is not a Parquet file: {e}") from None
    _check_rows(uri, file.metadata.num_rows)
    return list(file.schema_arrow.names), file.read().to_pylist()


_FORMAT_READERS: dict[str, Callable[[bytes, str], tuple[list[str], list[dict]]]] = {
    ".csv": lambda data, uri: _csv_records(data, uri, ","),
    ".tsv": lambda data, uri: _csv_records(data, uri, "\t"),
    ".jsonl": _jsonl_records,
    ".parquet": _parquet_records,
}


def _check_rows(uri: str, count: int) -> None:
    if count > MAX_TABLE_ROWS:
        raise ValueError(
            f"label table {uri} has over {MAX_TABLE_ROWS:,} rows; split the corpus into tables "
            "of at most that many and prepare each"
        )


def _read_bounded(uri: str) -> bytes:
    fs, path = storage.resolve(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"label table not found: {uri}")
    if info.size is not None and info.size > MAX_TABLE_BYTES:
        raise ValueError(
            f"label table {uri} is {info.size:,} bytes, over the {MAX_TABLE_BYTES:,}-byte limit; "
            "split the corpus into smaller tables and prepare each"
        )
    return storage.read_bytes(uri)


def read_label_table(uri: str) -> list[TableRow]:
    """The rows of a label table (``.csv``, ``.tsv``, ``.jsonl``, ``.parquet``; local or ``s3://``).

    Column names are matched stripped and in lower case; values stay strings as written, stripped
    (a speaker ``007`` stays ``007``; a number in a JSON or Parquet table becomes its decimal
    text). A missing optional column reads as ``gender="unknown"``, ``corpus=None``,
    ``split=None``. Blank lines are skipped.

    Raises:
        FileNotFoundError: there is no table at ``uri``.
        ValueError: an unknown format, a required column missing, a malformed row, or a table
            over :data:`MAX_TABLE_BYTES` or :data:`MAX_TABLE_ROWS`; the message names the table.
    """
    suffix = PurePosixPath(str(uri)).suffix.lower()
    if suffix not in _FORMAT_READERS:
        raise ValueError(f"label table {uri}: unknown format {suffix!r}; expected {TABLE_FORMATS}")
    columns, records = _FORMAT_READERS[suffix](_read_bounded(uri), uri)
    named = [str(c).strip().lower() for c in columns if str(c).strip()]
    if len(set(named)) < len(named):
        raise ValueError(f"label table {uri} has a column twice: {columns}")
    names = {str(c): str(c).strip().lower() for c in columns}
    for column in REQUIRED_COLUMNS:
        if column not in names.values():
            raise ValueError(
                f"label table {uri} has no column {column!r} (required: "
                f"{', '.join(REQUIRED_COLUMNS)}; found: {', '.join(map(str, columns)) or 'none'})"
            )
    rows = []
    for number, record in enumerate(records, 1):
        values = {names[str(k)]: _cell(v) for k, v in record.items()}
        rows.append(
            TableRow(
                row=number,
                path=values.get("path", ""),
                label=values.get("label", ""),
                speaker=values.get("speaker", ""),
                gender=values.get("gender") or "unknown",
                corpus=values.get("corpus") or None,
                split=values.get("split") or None,
            )
        )
    return rows


# ----------------------------------------------------------------------------------------------
# Matching a table to the files


class Entry(NamedTuple):
    """One clip to prepare."""

    uri: str
    """Where to read it (``input_root`` joined with the row's path, or the path as written)."""
    relpath: str
    """Its name in the dataset: relative to ``input_root`` when it lies there, else the path as
    written."""
    labels: ClipLabels


@dataclass(frozen=True)
class TableMatch:
    """Every row and every listed file, each in exactly one of ``entries`` or ``rejected``."""

    entries: list[Entry]
    """Sorted by ``relpath``."""
    rejected: list[tuple[str, str]]
    """``(name, reason)`` sorted by name; the reason is one line naming the table's row(s)."""


_GENDER_SPELLINGS = {"male": "male", "m": "male", "female": "female", "f": "female",
                     "unknown": "unknown"}  # fmt: skip


def _is_absolute(path: str) -> bool:
    return storage.is_remote(path) or path.startswith("/")


def speakers_by_file(rows: list[TableRow], input_root: str, paths: list[str]) -> dict[str, str]:
    """``{path: speaker}`` of the ``paths`` listed under ``input_root`` that a table's rows name
    (a row's path relative to the input or absolute, as :func:`match_table` reads it); files
    without a row are left out."""
    roots = _roots(input_root)
    named = {_key(r.path, roots): r.speaker for r in rows if r.path and r.speaker}
    return {p: named[k] for p in paths if (k := _key(p, roots)) in named}


def _roots(input_root: str) -> tuple[str, ...]:
    """The prefixes an absolute path into the input starts with (as written, and resolved)."""
    if storage.is_remote(input_root):
        return (input_root.rstrip("/") + "/",)
    plain = os.path.normpath(os.path.abspath(os.path.expanduser(input_root)))
    return tuple(sorted({plain.rstrip("/") + "/", storage.absolute(input_root).rstrip("/") + "/"}))


def _key(path: str, roots: tuple[str, ...]) -> str:
    """The name a row's path has in the dataset: relative to the input when it lies under it.

    An absolute path into the input counts as its relative path, so that one file is never both
    prepared through its row and rejected as having none.
    """
    if not _is_absolute(path):
        return posixpath.normpath(path.replace("\\", "/"))
    full = path if storage.is_remote(path) else posixpath.normpath(path)
    inside = next((full[len(root) :] for root in roots if full.startswith(root)), None)
    return inside or path


def _row_fault(row: TableRow, label: str, tag: str) -> str | None:
    """Why a row cannot be prepared whatever the files, or None."""
    for value, what in ((row.path, "path"), (label, "label"), (row.speaker, "speaker")):
        if not value:
            return f"{tag}: empty {what}"
    if row.gender.lower() not in _GENDER_SPELLINGS:
        return f"{tag}: gender {row.gender!r} is not one of {', '.join(GENDERS)} (or m, f)"
    return None


def _file_fault(key: str, present: set[str], input_root: str, tag: str) -> str | None:
    """Why a row's file is not there, or None (an absolute or ``s3://`` path is looked up)."""
    if _is_absolute(key):
        return None if storage.exists(key) else f"{tag}: no file {key!r}"
    return None if key in present else f"{tag}: no file {key!r} under {input_root}"


def _rows_named(numbers: list[int]) -> str:
    head = ", ".join(str(n) for n in numbers[:-1])
    return f"rows {head} and {numbers[-1]}"


def _entry(row: TableRow, key: str, label: str, input_root: str) -> Entry:
    labels = ClipLabels(
        label=label,
        speaker=row.speaker,
        gender=_GENDER_SPELLINGS[row.gender.lower()],
        corpus=row.corpus,
        split=row.split,
    )
    uri = row.path if _is_absolute(row.path) else storage.join(input_root, *key.split("/"))
    return Entry(uri, key, labels)


def match_table(
    rows: list[TableRow],
    table_name: str,
    input_root: str,
    listed: list[str],
    label_map: dict[str, str] | None = None,
) -> TableMatch:
    """Pair a label table's rows with the audio files found under ``input_root``.

    A relative ``path`` names a file under ``input_root`` and must be in ``listed``; an absolute
    or ``s3://`` one is used as it is and must exist (one existence check per such row), and
    counts as its relative path when it lies under ``input_root``. A row is rejected for an
    empty path, label or speaker, an unknown gender, a path another row names too (one
    rejection naming all those rows) or a missing file; a listed file no row names is rejected
    as having no row. ``label_map`` renames labels after reading (``{"anger": "angry"}``;
    several to one merges them); other labels stay as written.

    Args:
        rows: from :func:`read_label_table`.
        table_name: how messages name the table (e.g. ``labels.csv``).
        input_root: the folder or ``s3://`` prefix the files were listed under.
        listed: the audio files under ``input_root``, as posix paths relative to it.
        label_map: label renames, applied to every row.
    """
    label_map = label_map or {}
    roots = _roots(input_root)
    present = {posixpath.normpath(p.replace("\\", "/")) for p in listed}
    by_key: dict[str, list[TableRow]] = {}
    for row in rows:
        by_key.setdefault(_key(row.path, roots) if row.path else "", []).append(row)
    entries: list[Entry] = []
    rejected: list[tuple[str, str]] = []
    for key, group in by_key.items():
        if key and len(group) > 1:
            rows_named = _rows_named([row.row for row in group])
            rejected.append((key, f"{table_name} {rows_named}: the same path {key!r}"))
            continue
        for row in group:  # one row, or every row with an empty path
            tag, label = f"{table_name} row {row.row}", label_map.get(row.label, row.label)
            fault = _row_fault(row, label, tag) or _file_fault(key, present, input_root, tag)
            if fault:
                rejected.append((key or tag, fault))
            else:
                entries.append(_entry(row, key, label, input_root))
    rejected += [(path, f"no row in {table_name}") for path in sorted(present - by_key.keys())]
    return TableMatch(sorted(entries, key=lambda e: e.relpath), sorted(rejected))
