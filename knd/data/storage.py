"""Local and ``s3://`` paths through one interface (``pyarrow.fs``), with atomic writes.

Credentials and the endpoint come from the environment only (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_ENDPOINT_URL``, ``AWS_REGION``), so they
never appear in configs, commands or logs.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from pathlib import Path

import pyarrow.fs as pafs

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3")


def is_remote(uri: str) -> bool:
    return str(uri).startswith("s3://")


def s3_filesystem() -> pafs.S3FileSystem:
    """An S3 filesystem configured from the environment (endpoint included, for S3-compatibles)."""
    kwargs: dict = {
        "region": os.environ.get("AWS_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    }
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        kwargs.update(
            access_key=os.environ["AWS_ACCESS_KEY_ID"],
            secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
            session_token=os.environ.get("AWS_SESSION_TOKEN"),
        )
    return pafs.S3FileSystem(**kwargs)


def absolute(uri: str) -> str:
    """A local path made absolute (``~`` expanded, links resolved); an ``s3://`` URI as it is.

    Whatever a job records or hands to Ray (run folders, experiment folders) goes through this,
    so a path means the same folder to every process, whatever its working folder.
    """
    uri = str(uri)
    return uri if is_remote(uri) else str(Path(uri).expanduser().resolve())


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path inside it)`` for a local path or an ``s3://bucket/key`` URI."""
    uri = str(uri)
    if is_remote(uri):
        return s3_filesystem(), uri.removeprefix("s3://").rstrip("/")
    return pafs.LocalFileSystem(), absolute(uri)


def join(base: str, *parts: str) -> str:
    """Join path parts, keeping an ``s3://`` scheme."""
    if is_remote(base):
        return "s3://" + posixpath.join(base.removeprefix("s3://"), *parts)
    return str(Path(base, *parts))


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def makedirs(uri: str) -> None:
    fs, path = resolve(uri)
    fs.create_dir(path, recursive=True)


def read_bytes(uri: str, fs: pafs.FileSystem | None = None) -> bytes:
    """The bytes of a local path or ``s3://`` URI.

    Args:
        uri: an absolute local path or ``s3://bucket/key`` (as :func:`list_files` returns).
        fs: the filesystem of ``uri`` from :func:`resolve`, to reuse one (one S3 connection
            pool) over many files instead of making one per file.
    """
    if fs is None:
        fs, path = resolve(uri)
    else:
        path = str(uri).removeprefix("s3://")  # pyarrow's S3 paths are bucket/key
    with fs.open_input_stream(path) as f:
        return f.read()


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def write_bytes(uri: str, data: bytes) -> None:
    """Write a file so that readers see either nothing or all of it.

    Locally: write a temporary sibling and ``os.replace`` it. On S3 likewise a hidden temporary
    key, then a server-side copy to the final key: pyarrow's output stream completes its upload
    even when the write raised, so writing the final key directly could leave a partial object.
    """
    fs, path = resolve(uri)
    if is_remote(uri):
        tmp = _tmp_sibling(path)
        try:
            with fs.open_output_stream(tmp) as f:
                f.write(data)
            fs.move(tmp, path)
        finally:
            _delete_quietly(fs, tmp)
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _tmp_sibling(path: str) -> str:
    parent, name = posixpath.split(path)
    return posixpath.join(parent, f".{name}.{uuid.uuid4().hex[:8]}.tmp")


def _delete_quietly(fs: pafs.FileSystem, path: str) -> None:
    """Remove a temporary file if it is there (after a failure; a success already moved it)."""
    try:
        if fs.get_file_info(path).type == pafs.FileType.File:
            fs.delete_file(path)
    except OSError:
        pass  # best effort: a hidden .tmp key is never listed or read


def replace_folder(src_fs: pafs.FileSystem, src_path: str, dest: str, last: tuple = ()) -> None:
    """Make ``dest`` a copy of the folder ``src_path`` without a moment where it holds nothing.

    Each file is copied to a hidden temporary name and then moved onto its final name (files
    named in ``last`` go after the others, e.g. the ``meta.json`` that marks a checkpoint
    complete), and only then are files of the old copy that the new one lacks deleted. Readers
    see the old files or the new ones; an interruption leaves the old copy or a complete new one
    plus, at worst, hidden temporary files.
    """
    fs, root = resolve(dest)
    names = sorted(
        posixpath.relpath(i.path, src_path)
        for i in src_fs.get_file_info(pafs.FileSelector(src_path, recursive=True))
        if i.type == pafs.FileType.File
    )
    names.sort(key=lambda n: n in last)
    fs.create_dir(root, recursive=True)
    for name in names:
        target = posixpath.join(root, name) if is_remote(dest) else str(Path(root, name))
        if not is_remote(dest):
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp_sibling(target)
        try:
            pafs.copy_files(posixpath.join(src_path, name), tmp, src_fs, fs)
            fs.move(tmp, target)
        finally:
            _delete_quietly(fs, tmp)
    keep = set(names)
    for info in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
        rel = posixpath.relpath(info.path, root)
        if info.type == pafs.FileType.File and rel not in keep:
            fs.delete_file(info.path)


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def list_files(uri: str, suffixes: tuple[str, ...] | None = None) -> list[str]:
    """Every file under ``uri`` (recursive), sorted, as URIs of the same kind as ``uri``.

    Hidden files and folders (a leading dot) are skipped. ``suffixes`` filters case-insensitively.
    Locally each file is listed once, and directory links are never followed into a loop.
    """
    remote = is_remote(uri)
    return ["s3://" + i.path if remote else i.path for i in list_file_infos(uri, suffixes)]


def list_file_infos(uri: str, suffixes: tuple[str, ...] | None = None) -> list[pafs.FileInfo]:
    """The file infos (path inside the filesystem, size, mtime) behind :func:`list_files`."""
    fs, root = resolve(uri)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"input not found: {uri}")
    if info.type == pafs.FileType.File:
        infos = [info]
    elif is_remote(uri):
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    else:
        infos = _walk_local(root)
    out = []
    for item in infos:
        if item.type != pafs.FileType.File:
            continue
        rel = posixpath.relpath(item.path, root) if item.path != root else item.base_name
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        if suffixes and not item.path.lower().endswith(tuple(s.lower() for s in suffixes)):
            continue
        out.append(item)
    return sorted(out, key=lambda i: i.path)


def _walk_local(root: str) -> list[pafs.FileInfo]:
    """Every file under a local folder, each once, following symlinks but never into a loop.

    A directory is entered once per real path (a ``ln -s .. loop`` or two links to one folder
    add nothing), never through a link to an ancestor of the root, and a file reached by two
    names is listed under the first. Hidden entries are not entered.
    """
    out: list[pafs.FileInfo] = []
    top = os.path.realpath(root)
    seen_dirs = {top}
    seen_files: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        with os.scandir(folder) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.name.startswith("."):
                    continue
                try:
                    if entry.is_dir():
                        real = os.path.realpath(entry.path)
                        # A link to an ancestor of the root would list the root again (and more).
                        if real not in seen_dirs and not top.startswith(real.rstrip("/") + "/"):
                            seen_dirs.add(real)
                            stack.append(entry.path)
                    elif entry.is_file():
                        st = entry.stat()
                        if (st.st_dev, st.st_ino) not in seen_files:
                            seen_files.add((st.st_dev, st.st_ino))
                            out.append(
                                pafs.FileInfo(
                                    entry.path,
                                    pafs.FileType.File,
                                    size=st.st_size,
                                    mtime_ns=st.st_mtime_ns,
                                )
                            )
                except OSError:  # a dangling or unreadable link: not a file we can list
                    continue
    return out


def delete_dir(uri: str) -> None:
    fs, path = resolve(uri)
    if fs.get_file_info(path).type != pafs.FileType.NotFound:
        fs.delete_dir(path)
