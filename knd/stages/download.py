"""RAVDESS from Zenodo: resumable download, MD5 check, safe extraction.

``knd download out=DIR`` leaves ``DIR/Actor_01 .. Actor_24/*.wav`` (the official speech set,
Zenodo record 1188976) beside the verified zip. The stages are small and safe to rerun:

1. **fetch** streams into ``<archive>.part`` and resumes it with an HTTP ``Range`` request;
   the file takes its final name only once every byte has arrived.
2. **verify_md5** checks the zip before anything is unpacked; a bad zip is renamed ``.bad``
   so the next run downloads afresh.
3. **safe_members** refuses the whole archive if any member could land outside ``DIR``
   (absolute path, drive letter, ``..``, symlink).
4. **extract** unpacks into a hidden temporary folder inside ``DIR`` and only then moves the
   ``Actor_NN`` folders into place, so an interruption never leaves a half tree.

A marker file records the MD5 of what was extracted; a rerun on a complete tree downloads
nothing. A zip copied into ``DIR`` by hand (for machines that cannot reach Zenodo) is verified
and extracted without any network access.

``knd download corpus=NAME`` for the other corpora knd reads (:data:`BY_HAND`) downloads nothing:
none has one stable archive with a checksum knd could verify, so it says in one line where the
corpus lives, its licence, and the ``knd prepare corpus=`` that reads it once fetched by hand.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from knd.config.schema import DownloadConfig
from knd.data import storage
from knd.data.ravdess import ACTORS, CLIPS_PER_ACTOR

log = logging.getLogger(__name__)

MARKER = ".knd_download.json"
"""Written after a successful extraction; records the archive's MD5 and what it held."""


MAX_EXTRACTED_BYTES = 8 << 30
"""The speech set unpacks to about 0.2 GB; more than this is not RAVDESS (or is a zip bomb)."""

MAX_MEMBERS = 100_000
MAX_RATIO = 100
"""WAV barely compresses; a member over 1 MiB that unpacks to 100x its packed size is a bomb."""

_ACTOR_DIR = re.compile(r"^Actor_\d\d$")
_DRIVE = re.compile(r"^[A-Za-z]:")
_EXTRACT_PREFIX = ".extract-"


@dataclass(frozen=True)
class ByHand:
    """A corpus knd reads but cannot download: where it lives, on what terms, and why not."""

    title: str
    where: str
    licence: str
    why: str


BY_HAND = {
    "crema_d": ByHand(
        "CREMA-D", "https://github.com/CheyneyComputerScience/CREMA-D", "ODbL",
        "its clips are Git LFS objects in a repository, not one archive with a checksum",
    ),
    "emodb": ByHand(
        "EmoDB", "http://emodb.bilderbar.info", "free for research",
        "its site states no checksum for its archive",
    ),
    "tess": ByHand(
        "TESS", "https://doi.org/10.5683/SP2/E8H2MF", "CC BY-NC-ND 4.0",
        "its Dataverse record serves it file by file",
    ),
    "savee": ByHand(
        "SAVEE", "http://kahlan.eps.surrey.ac.uk/savee/", "free for research",
        "it is released only after registering with the University of Surrey",
    ),
}  # fmt: skip
"""The corpora ``knd download corpus=`` names without downloading (docs/guides/corpora.md)."""


class DownloadError(ValueError):
    """A download, checksum or archive problem, described in one line.

    A ``ValueError`` so that ``knd`` prints it as a one-line error rather than a traceback.
    """


@dataclass(frozen=True)
class FetchResult:
    """What one ``fetch`` call transferred."""

    bytes_received: int
    resumed_from: int


@dataclass(frozen=True)
class DownloadResult:
    """Outcome of ``knd download``.

    Attributes:
        out: the folder holding ``Actor_NN/``.
        archive: path of the verified zip.
        skipped: True when the tree was already complete and nothing was done.
        bytes_received: bytes transferred over the network in this run.
        resumed_from: size of the partial download this run continued (0: started afresh).
        files: WAV files under ``out/Actor_NN`` after the run.
    """

    out: str
    archive: str
    skipped: bool
    bytes_received: int
    resumed_from: int
    files: int


def run(cfg: DownloadConfig) -> DownloadResult:
    """Download, verify and extract the RAVDESS speech zip into ``cfg.out``.

    Args:
        cfg: the ``download`` config (``out``, ``url``, ``md5``, ``archive_name``, ...).

    Returns:
        What was done; ``skipped`` when ``cfg.out`` already held the complete set.

    Raises:
        DownloadError: network failure, incomplete transfer, wrong checksum or unsafe archive,
            or a corpus without a verified archive (the message says where to fetch it).
    """
    if cfg.corpus in BY_HAND:
        raise DownloadError(by_hand_message(cfg.corpus))
    if storage.is_remote(cfg.out):
        raise DownloadError(f"knd download writes to a local folder, got {cfg.out}")
    name = cfg.archive_name
    if name in ("", ".", "..") or any(c in name for c in "/\\\0"):
        raise DownloadError(f"archive_name must be a plain file name, got {name!r}")
    try:
        return _run(cfg)
    except OSError as e:  # disk full, permissions, a file where a folder should be...
        raise DownloadError(f"download failed: {_os_reason(e, cfg.url)}") from None


def by_hand_message(corpus: str) -> str:
    """The one line that tells where to fetch a corpus knd cannot download, and what reads it."""
    known = BY_HAND[corpus]
    return (
        f"no verified archive of {known.title} ({known.why}): fetch it from "
        f"{known.where} (licence: {known.licence}), then run knd prepare corpus={corpus} "
        "input=<its folder> (docs/guides/corpora.md)"
    )


def _os_reason(e: OSError, url: str) -> str:
    where = f"{e.filename}: " if e.filename else ""
    return _scrub(f"{where}{e.strerror or e}", url)


def _run(cfg: DownloadConfig) -> DownloadResult:
    out = Path(cfg.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    archive = out / cfg.archive_name
    expected = cfg.md5.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{32}", expected):
        # A digits-only MD5 typed unquoted would reach us as a YAML integer, minus leading zeros.
        raise DownloadError(f"md5 must be 32 hexadecimal digits (quote it), got {cfg.md5!r}")

    files = complete_files(out, expected)
    if files:
        log.info("%s is complete (%d WAV files): nothing to download", out, files)
        return DownloadResult(str(out), str(archive), True, 0, 0, files)

    fetched = FetchResult(0, 0)
    if archive.exists():
        log.info("using the archive already in place: %s", archive)
    else:
        part = archive.with_name(archive.name + ".part")
        fetched = fetch(cfg.url, part, cfg.chunk_bytes, cfg.timeout_s)
        os.replace(part, archive)

    verify_md5(archive, expected)
    extract(archive, out)
    files = sum(_wav_counts(out).values())
    marker = {"md5": expected, "archive": archive.name, "files": files}
    storage.write_text(str(out / MARKER), json.dumps(marker, indent=2) + "\n")
    log.info("extracted %d WAV files into %s", files, out)
    return DownloadResult(
        str(out), str(archive), False, fetched.bytes_received, fetched.resumed_from, files
    )


def complete_files(out: Path, md5: str) -> int:
    """Number of WAVs in a complete tree under ``out``, or 0 when it is incomplete.

    Complete means: the marker of an extraction of an archive with this ``md5`` and still as many
    WAV files as it recorded, or (extracted by hand) every RAVDESS actor with all their speech
    clips.
    """
    counts = _wav_counts(out)
    total = sum(counts.values())
    try:
        marker = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        marker = {}
    if isinstance(marker, dict) and marker.get("md5") == md5 and marker.get("files") == total > 0:
        return total
    full = len(counts) == len(ACTORS) and all(n == CLIPS_PER_ACTOR for n in counts.values())
    return total if full else 0


def _wav_counts(out: Path) -> dict[str, int]:
    return {d.name: len(list(d.glob("*.wav"))) for d in out.glob("Actor_*") if d.is_dir()}


def fetch(url: str, part: Path, chunk_bytes: int, timeout_s: float) -> FetchResult:
    """Stream ``url`` into ``part``, continuing an existing partial file with a Range request.

    A server that answers 206 gets the rest appended; one that answers 200 (Range ignored) gets the
    file rewritten from the start. ``part`` is left in place on failure so the next call resumes.

    Args:
        url: the address to download.
        part: the partial file to create or continue.
        chunk_bytes: bytes per read.
        timeout_s: socket timeout per connection attempt and per read.

    Returns:
        Bytes received by this call and the offset it resumed from.

    Raises:
        DownloadError: HTTP error, network failure, timeout or a transfer that ended early.
    """
    shown = _redact(url)
    offset = part.stat().st_size if part.exists() else 0
    received = 0
    try:
        with urllib.request.urlopen(_request(url, offset), timeout=timeout_s) as response:
            start, total = _response_span(response, offset)
            if offset and start == 0:
                log.info("%s ignored the Range request; downloading from the start", shown)
            elif offset:
                log.info("resuming %s at byte %d", part.name, offset)
            received = _write_body(response, part, start, total, chunk_bytes)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            if _range_total(e.headers.get("Content-Range")) == offset:
                return FetchResult(0, offset)  # the partial file already held every byte
            log.info("%s refused to resume %s; downloading from the start", shown, part.name)
            part.unlink()
            return fetch(url, part, chunk_bytes, timeout_s)
        reason = _scrub(f"HTTP {e.code} {e.reason}", url)
        raise DownloadError(f"download failed: {shown}: {reason}") from None
    except urllib.error.URLError as e:
        reason = _scrub(_reason(e.reason, timeout_s), url)
        raise DownloadError(f"download failed: {shown}: {reason}") from None
    except (http.client.HTTPException, OSError, ValueError) as e:
        reason = _scrub(_reason(e, timeout_s), url)
        raise DownloadError(f"download failed: {shown}: {reason}") from None
    size = part.stat().st_size
    if total is not None and size != total:
        raise DownloadError(
            f"download incomplete: {shown}: {size} of {total} bytes; rerun to resume"
        )
    return FetchResult(received, start)


def _request(url: str, offset: int) -> urllib.request.Request:
    """A GET of ``url`` from byte ``offset``; its user:password go in a header, not the URL."""
    plain_url, auth = _split_credentials(url)
    request = urllib.request.Request(plain_url, headers={"User-Agent": "knd-download"})
    if auth:
        request.add_header("Authorization", auth)
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    return request


def _write_body(
    response: http.client.HTTPResponse, part: Path, start: int, total: int | None, chunk_bytes: int
) -> int:
    """Stream the body into ``part`` (appended after byte ``start``, else from the start), with a
    bar on a terminal; returns the bytes written."""
    received = 0
    bar = tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
               desc=part.name.removesuffix(".part"), disable=None)  # fmt: skip
    with open(part, "ab" if start else "wb") as f, bar:
        while chunk := response.read(chunk_bytes):
            f.write(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    return received


def _response_span(response: http.client.HTTPResponse, offset: int) -> tuple[int, int | None]:
    """``(first byte of the body, total size of the file or None)`` from the response headers."""
    length = response.headers.get("Content-Length")
    if response.status == 206:
        match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", response.headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != offset:
            raise DownloadError(
                f"download failed: {_redact(response.url)}: server answered a Range request for "
                f"byte {offset} with Content-Range {response.headers.get('Content-Range')!r}"
            )
        total = match.group(2)
        return offset, int(total) if total != "*" else None
    return 0, int(length) if length and length.isdigit() else None


def _range_total(content_range: str | None) -> int | None:
    match = re.match(r"bytes \*/(\d+)", content_range or "")
    return int(match.group(1)) if match else None


def _reason(error: object, timeout_s: float) -> str:
    if isinstance(error, TimeoutError):
        return f"no answer within {timeout_s:g} s (timeout_s)"
    return str(error) or type(error).__name__


_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^?#]*)@")


def _userinfo(url: str) -> str | None:
    """The ``user:password`` part of ``url``, or None.

    Normally the authority up to its last ``@``. A password with an unescaped ``/`` ends the
    authority early (``user:pa`` then a non-numeric port); then everything up to the last ``@``
    before any query counts, so no part of the secret is shown.
    """
    match = _USERINFO.match(url)
    if not match:
        return None
    netloc = urllib.parse.urlsplit(url).netloc
    if "@" in netloc:
        return netloc.rpartition("@")[0]
    port = netloc.rpartition(":")[2] if ":" in netloc else ""
    return match.group(2) if port and not port.isdigit() else None


def _redact(url: str) -> str:
    """``url`` with any ``user:password@`` part replaced by ``***@``, for messages."""
    info = _userinfo(url)
    return url.replace(info + "@", "***@", 1) if info else url


def _scrub(text: str, url: str) -> str:
    """``text`` without the password of ``url`` (raw or percent-decoded) anywhere in it."""
    info = _userinfo(url)
    if not info:
        return text
    password = info.partition(":")[2]  # the user name is not a secret; the password is
    secrets = {info, urllib.parse.unquote(info), password, urllib.parse.unquote(password)}
    for secret in sorted((x for x in secrets if x), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _split_credentials(url: str) -> tuple[str, str | None]:
    """``(url without user:password@, Basic Authorization header or None)``.

    urllib does not send credentials written into a URL (it reads them as a port), so they go
    in a header instead, and they never reach a message.
    """
    info = _userinfo(url)
    if not info:
        return url, None
    user, _, password = info.partition(":")
    token = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}".encode()
    return url.replace(info + "@", "", 1), "Basic " + base64.b64encode(token).decode()


def verify_md5(path: Path, expected: str) -> None:
    """Check ``path``'s MD5; on a mismatch rename it ``<name>.bad`` and raise.

    Raises:
        DownloadError: naming the file, the expected and the actual MD5.
    """
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    actual = digest.hexdigest()
    if actual != expected.lower():
        bad = path.with_name(path.name + ".bad")
        os.replace(path, bad)
        raise DownloadError(
            f"checksum mismatch: {path}: expected MD5 {expected}, got {actual} "
            f"(moved to {bad.name}; rerun to download again)"
        )


def safe_members(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """Every member of ``archive``, after checking that none could escape the extraction folder.

    Raises:
        DownloadError: naming the first member with an absolute path, a drive letter, a ``..``
            component or a symlink; nothing should be extracted from such an archive.
    """
    members = archive.infolist()
    for info in members:
        name = info.filename
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")):
            reason = "absolute path"
        elif _DRIVE.match(name):
            reason = "drive letter"
        elif ".." in parts:
            reason = "'..' component"
        elif stat.S_ISLNK(info.external_attr >> 16):
            reason = "symlink"
        elif "\x00" in name:
            reason = "NUL character"
        elif info.file_size > 1 << 20 and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            reason = (
                f"compression ratio {info.file_size / max(info.compress_size, 1):.0f}:1 "
                f"(over {MAX_RATIO}:1)"
            )
        else:
            continue
        raise DownloadError(f"unsafe archive {archive.filename}: member {name!r}: {reason}")
    # zipfile never yields more than a member's declared size, so the declared sizes bound
    # what extraction writes.
    total = sum(info.file_size for info in members)
    if len(members) > MAX_MEMBERS or total > MAX_EXTRACTED_BYTES:
        raise DownloadError(
            f"unsafe archive {archive.filename}: {len(members)} members, {total} bytes unpacked "
            f"(limits {MAX_MEMBERS} members, {MAX_EXTRACTED_BYTES} bytes)"
        )
    return members


def extract(archive_path: Path, out: Path) -> list[str]:
    """Unpack the ``Actor_NN`` folders of ``archive_path`` into ``out``.

    All members are checked before anything is written. The archive is unpacked into a hidden
    temporary folder inside ``out`` (same filesystem, so the final moves are renames), a single
    wrapping top-level folder is looked through, and each ``Actor_NN`` folder then replaces any
    older copy in ``out``. Other top-level entries of the archive are left out.

    Returns:
        The names of the ``Actor_NN`` folders put in place.

    Raises:
        DownloadError: an unsafe member, a corrupt zip or no ``Actor_NN`` folder in it.
    """
    for stale in out.glob(_EXTRACT_PREFIX + "*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed run
    tmp = Path(tempfile.mkdtemp(prefix=_EXTRACT_PREFIX, dir=out))
    tree, replaced = tmp / "tree", tmp / "replaced"
    tree.mkdir()
    replaced.mkdir()
    try:
        try:
            with zipfile.ZipFile(archive_path) as archive:
                members = safe_members(archive)
                for info in members:
                    _extract_member(archive, info, tree)
        except zipfile.BadZipFile as e:
            raise DownloadError(f"corrupt archive {archive_path}: {e}") from None
        root = _tree_root(tree)
        actors = sorted(d for d in root.iterdir() if d.is_dir() and _ACTOR_DIR.match(d.name))
        if not actors:
            raise DownloadError(f"no Actor_NN folders in {archive_path}")
        for actor in actors:
            target = out / actor.name
            if target.exists():
                os.replace(target, replaced / actor.name)  # removed with tmp below
            os.replace(actor, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [a.name for a in actors]


def _extract_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path) -> None:
    target = dest.joinpath(*PurePosixPath(info.filename.replace("\\", "/")).parts)
    if not target.resolve().is_relative_to(dest.resolve()):  # safe_members should make this moot
        raise DownloadError(f"unsafe archive {archive.filename}: member {info.filename!r}")
    if info.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with archive.open(info) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def _tree_root(tree: Path) -> Path:
    """``tree``, or the single folder inside it when a mirror wrapped the actors in one."""
    entries = [p for p in tree.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX"]
    if len(entries) == 1 and entries[0].is_dir() and not _ACTOR_DIR.match(entries[0].name):
        return entries[0]
    return tree
