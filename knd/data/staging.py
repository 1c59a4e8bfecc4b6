"""The one staging protocol of the stages that write in parts: a killed run keeps whole parts, a
rerun finds them, one commit publishes the output.

A stage that writes its output in parts (``knd prepare``'s shards, ``knd score``'s row chunks)
stages them in a folder named by a key: a hash of what defines the output (:func:`staging_key`),
so a rerun of an interrupted run, and only such a rerun, finds the same folder. A part is written
atomically (:meth:`Staging.write`: a temporary name, then a rename), so a part that is listed is
whole; a file a part depends on (a shard beside its record) is written before the part. On
resume the stage lists the finished parts (:meth:`Staging.finished`), reads them
(:meth:`Staging.read_finished`, which discards a part that cannot be read) and does only the
rest; a part whose work failed is discarded (:meth:`Staging.discard`). The output is then
published once: the folder renamed into place (:meth:`Staging.commit_folder`) or the parts
written into one file (:meth:`Staging.commit_file`).

What a part holds and what makes it reusable stays with its stage.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO, TypeVar

import pyarrow.fs as pafs

from knd.data import storage

log = logging.getLogger(__name__)

Part = TypeVar("Part")


def staging_key(identity: Any) -> str:
    """The hex sha256 of ``identity`` (JSON-plain): equal keys mean the same output."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


class Staging:
    """A staging folder (local or ``s3://``) and the protocol over its parts.

    Args:
        uri: the folder; it need not exist yet.
    """

    def __init__(self, uri: str):
        self.uri = uri
        self.fs, self.root = storage.resolve(uri)

    def create(self) -> None:
        self.fs.create_dir(self.root, recursive=True)

    def names(self) -> set[str]:
        """The names of every file in the folder (none when it does not exist)."""
        selector = pafs.FileSelector(self.root, allow_not_found=True)
        infos = self.fs.get_file_info(selector)
        return {i.base_name for i in infos if i.type == pafs.FileType.File}

    def finished(self, prefix: str = "", suffix: str = "") -> list[str]:
        """The finished parts (names starting with ``prefix``, ending with ``suffix``), in the
        order they sort (the order a stage names them by, e.g. a counter)."""
        return sorted(n for n in self.names() if n.startswith(prefix) and n.endswith(suffix))

    def uri_of(self, name: str) -> str:
        return storage.join(self.uri, name)

    def path_of(self, name: str) -> str:
        """``name``'s path inside :attr:`fs` (for writers that take a filesystem and a path)."""
        return f"{self.root}/{name}"

    def write(self, name: str, data: bytes) -> None:
        """Write a part so that a reader sees nothing or all of it."""
        storage.write_bytes(self.uri_of(name), data)

    def read_finished(
        self, names: list[str], parse: Callable[[bytes], Part], workers: int = 1
    ) -> Iterator[tuple[str, Part]]:
        """``(name, parse(its bytes))`` of each finished part in ``names``, in that order.

        A part that cannot be read or parsed (``parse`` raises) is discarded with a warning, so
        its work is done again. ``workers`` reads that many parts at a time (one GET each on S3:
        overlap them when parts are small); 1 holds one part in memory at a time.
        """

        def load(name: str) -> tuple[str, Part | None, Exception | None]:
            try:
                with self.fs.open_input_stream(self.path_of(name)) as stream:
                    return name, parse(stream.read()), None
            except Exception as e:  # noqa: BLE001 - whatever is wrong with it, it is not reused
                return name, None, e

        if workers > 1:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                loaded: Iterator = iter(list(pool.map(load, names)))
        else:
            loaded = map(load, names)
        for name, part, error in loaded:
            if error is None:
                yield name, part
                continue
            log.warning("discarding the unreadable staged part %s (%s)", self.uri_of(name), error)
            self.discard(name)

    def discard(self, *names: str) -> None:
        """Delete parts (and files beside them), in the order given; a missing one is fine."""
        for name in names:
            with contextlib.suppress(OSError):  # already gone: nothing to discard
                self.fs.delete_file(self.path_of(name))

    def keep_only(self, names: set[str]) -> None:
        """Delete every file but ``names``: records, and parts of work that died unreported."""
        self.discard(*sorted(self.names() - names))

    def remove(self) -> None:
        """Delete the folder and everything in it."""
        storage.delete_dir(self.uri)

    def commit_folder(self, final: str) -> Staging:
        """Publish the folder as ``final`` in one step, replacing a folder already there.

        Locally that is one rename. On S3 a rename is a copy of every object, so there a stage
        stages straight into ``final`` (``final`` is this folder) and commits by a file of its own
        (prepare's manifest).
        """
        if storage.absolute(final) == storage.absolute(self.uri):
            return self
        storage.delete_dir(final)
        target = Staging(final)
        self.fs.move(self.root, target.root)
        return target

    def commit_file(self, output: str, write: Callable[[BinaryIO], None]) -> None:
        """Publish the parts as one file: ``write(stream)`` fills a temporary file beside
        ``output``, renamed over it (locally) or copied to its key (S3), so a reader sees the old
        output or the whole new one, never a part of it. Then the folder goes."""
        fs, path = storage.resolve(output)
        head, name = path.rsplit("/", 1)
        tmp = f"{head}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with fs.open_output_stream(tmp) as stream:
                write(stream)
            if storage.is_remote(output):
                fs.copy_file(tmp, path)
            else:
                os.replace(tmp, path)
        finally:
            if fs.get_file_info(tmp).type != pafs.FileType.NotFound:
                fs.delete_file(tmp)
        self.remove()
