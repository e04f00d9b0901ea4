"""Snapshot files: ``snap-<term:016x>-<index:016x>.snap`` in the data directory.

A file is ``magic (8 bytes) | body length: u64 | crc32 (zlib) of body: u32 | body`` with
the body a msgpack array ``[index, term, voters, learners, data]``. Files are written
atomically: a ``.tmp`` file is written and fsynced, renamed over the final name, then
the directory is fsynced; a crash leaves either the whole new file or none of it, and a
leftover ``.tmp`` is removed when the store opens.

This module never deletes a snapshot that is not older than the ``keep`` newest, and
never returns a snapshot that fails its checksum: a damaged file raises
``CorruptionError`` and the caller (``Storage``) falls back to an older one.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from collections.abc import Callable
from typing import TypeVar

import attrs
import msgpack  # type: ignore[import-untyped]  # ships no type information

from pnyx.core.errors import CorruptionError, StorageError
from pnyx.core.raft.types import ConfState, Snapshot, SnapshotMetadata
from pnyx.core.storage.fs import FileSystem

__all__ = [
    "SnapshotFile",
    "SnapshotStore",
    "decode_snapshot",
    "encode_snapshot",
    "encode_snapshot_parts",
]

_MAGIC = b"PNYXSNP1"
_HEADER = struct.Struct("<8sQI")
_NAME = re.compile(r"^snap-([0-9a-f]{16})-([0-9a-f]{16})\.snap$")
_TEMPORARY_SUFFIX = ".tmp"
_SYNC_EVERY_BYTES = 8 << 20

T = TypeVar("T")


@attrs.frozen(order=True)
class SnapshotFile:
    """A snapshot file's identity, from its name. Orders oldest first."""

    index: int
    term: int

    @property
    def name(self) -> str:
        return f"snap-{self.term:016x}-{self.index:016x}.snap"


def encode_snapshot(snapshot: Snapshot) -> bytes:
    return b"".join(encode_snapshot_parts(snapshot))


def encode_snapshot_parts(snapshot: Snapshot) -> tuple[bytes, bytes, bytes]:
    """The file's bytes in three parts (header, the body up to the data, the data), to
    write one after the other: a snapshot's data can be hundreds of megabytes, and
    joining would copy it twice more while holding the GIL. The body is the msgpack
    array documented above, its last element's bin header written by hand."""
    metadata = snapshot.metadata
    data = snapshot.data
    head: bytes = msgpack.packb(
        (
            metadata.index,
            metadata.term,
            sorted(metadata.conf_state.voters),
            sorted(metadata.conf_state.learners),
            b"",
        )
    )
    prefix = head[: -len(_EMPTY_BIN)] + _bin_header(len(data))
    length = len(prefix) + len(data)
    crc = zlib.crc32(data, zlib.crc32(prefix))
    return _HEADER.pack(_MAGIC, length, crc), prefix, data


_EMPTY_BIN = b"\xc4\x00"


def _bin_header(size: int) -> bytes:
    """msgpack's header of a bin value of ``size`` bytes (bin 8, 16 or 32)."""
    if size < 1 << 8:
        return struct.pack(">BB", 0xC4, size)
    if size < 1 << 16:
        return struct.pack(">BH", 0xC5, size)
    return struct.pack(">BI", 0xC6, size)


def decode_snapshot(data: bytes, where: str) -> Snapshot:
    """The snapshot in ``data``; ``CorruptionError`` naming ``where`` if damaged."""
    if len(data) < _HEADER.size:
        raise CorruptionError(f"{where}: snapshot file cut short at offset {len(data)}")
    magic, length, crc = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise CorruptionError(f"{where}: not a pnyx snapshot (bad magic at offset 0)")
    body = memoryview(data)[_HEADER.size :]
    if len(body) != length:
        raise CorruptionError(
            f"{where}: snapshot body is {len(body)} bytes, expected {length} "
            f"(at offset {_HEADER.size})"
        )
    if zlib.crc32(body) != crc:
        raise CorruptionError(f"{where}: snapshot checksum mismatch (body at offset 8)")
    try:
        index, term, voters, learners, payload = msgpack.unpackb(body, use_list=False)
        metadata = SnapshotMetadata(
            index=index,
            term=term,
            conf_state=ConfState(voters=frozenset(voters), learners=frozenset(learners)),
        )
        return Snapshot(metadata=metadata, data=payload)
    except (ValueError, TypeError, msgpack.UnpackException) as error:
        raise CorruptionError(f"{where}: undecodable snapshot body ({error})") from error


@attrs.define
class SnapshotStore:
    """The snapshot files of one data directory. Not thread-safe (one owner)."""

    _fs: FileSystem
    _directory: str

    @classmethod
    def open(cls, fs: FileSystem, directory: str) -> SnapshotStore:
        """Open the store, removing temporary files a crash left behind."""
        store = cls(fs, directory)
        leftovers = [name for name in fs.list_dir(directory) if name.endswith(_TEMPORARY_SUFFIX)]
        for name in leftovers:
            store._remove(name)
        if leftovers:
            store._io(lambda: fs.fsync_dir(directory), "fsync the data directory")
        return store

    def files(self) -> list[SnapshotFile]:
        """The snapshot files present, newest (highest index, then term) first."""
        files = []
        for name in self._fs.list_dir(self._directory):
            match = _NAME.match(name)
            if match is not None:
                files.append(SnapshotFile(index=int(match[2], 16), term=int(match[1], 16)))
        return sorted(files, reverse=True)

    def load(self, file: SnapshotFile) -> Snapshot:
        path = self._path(file.name)
        data = self._io(lambda: self._fs.read_file(path), f"read {path}")
        snapshot = decode_snapshot(data, path)
        if (snapshot.metadata.index, snapshot.metadata.term) != (file.index, file.term):
            raise CorruptionError(f"{path}: metadata does not match the file name (offset 16)")
        return snapshot

    def save(self, snapshot: Snapshot) -> SnapshotFile:
        """Write ``snapshot`` durably and atomically; returns its file."""
        file = SnapshotFile(index=snapshot.metadata.index, term=snapshot.metadata.term)
        path = self._path(file.name)
        temporary = path + _TEMPORARY_SUFFIX
        parts = encode_snapshot_parts(snapshot)
        if self._fs.exists(temporary):
            self._io(lambda: self._fs.remove(temporary), "remove a temporary file")
        handle = self._io(lambda: self._fs.open_append(temporary), "create a snapshot file")
        try:
            # In slices, each made durable before the next: one fsync of hundreds of
            # megabytes at the end would queue them all ahead of the WAL's next fsync
            # (same disk), and a leader waiting that long for its own write sends no
            # heartbeats.
            unsynced = 0
            for part in parts:
                for start in range(0, len(part), _SYNC_EVERY_BYTES):
                    piece = (
                        part
                        if len(part) <= _SYNC_EVERY_BYTES
                        else part[start : start + _SYNC_EVERY_BYTES]
                    )
                    self._io(lambda piece=piece: handle.write(piece), "write a snapshot file")  # type: ignore[misc]
                    unsynced += len(piece)
                    if unsynced >= _SYNC_EVERY_BYTES:
                        self._io(handle.sync, "fsync a snapshot file")
                        unsynced = 0
            self._io(handle.sync, "fsync a snapshot file")
        finally:
            handle.close()
        self._io(lambda: self._fs.rename(temporary, path), "rename a snapshot file")
        self._io(lambda: self._fs.fsync_dir(self._directory), "fsync the data directory")
        return file

    def set_aside(self, file: SnapshotFile, reason: str) -> None:
        """Rename a snapshot that must not be used to ``<name>.<reason>`` (kept for a
        post-mortem, never loaded again)."""
        path = self._path(file.name)
        self._io(lambda: self._fs.rename(path, f"{path}.{reason}"), "set a snapshot aside")
        self._io(lambda: self._fs.fsync_dir(self._directory), "fsync the data directory")

    def prune(self, keep: int) -> list[SnapshotFile]:
        """Delete all but the ``keep`` newest snapshot files; returns those kept."""
        files = self.files()
        for file in files[keep:]:
            self._remove(file.name)
        if files[keep:]:
            self._io(lambda: self._fs.fsync_dir(self._directory), "fsync the data directory")
        return files[:keep]

    def _remove(self, name: str) -> None:
        path = self._path(name)
        self._io(lambda: self._fs.remove(path), f"remove {path}")

    def _path(self, name: str) -> str:
        return os.path.join(self._directory, name)

    def _io(self, operation: Callable[[], T], what: str) -> T:
        try:
            return operation()
        except OSError as error:
            raise StorageError(f"could not {what} ({error})") from error
