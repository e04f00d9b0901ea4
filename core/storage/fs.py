"""The file-system seam under the WAL and the snapshot store.

``FileSystem`` is the small set of operations durable storage needs; ``OsFileSystem``
performs them with os-level calls, ``MemoryFileSystem`` simulates them for deterministic
tests and the cluster simulator. The simulated disk tracks, per file, which bytes are
durable (fsynced) and which are only written, and per directory which entry changes are
durable (directory fsynced); ``crash(rng)`` then keeps exactly what a real disk may keep.

This module knows nothing of WAL records or snapshots, and it must never swallow an
fsync error: a failed fsync raises ``OSError`` and the caller treats it as fatal.
"""

from __future__ import annotations

import errno
import os
import posixpath
import random
import threading
from collections.abc import Callable
from typing import Protocol

import attrs

__all__ = [
    "AppendFile",
    "FileSystem",
    "MemoryFileSystem",
    "OsFileSystem",
    "SimulatedCrash",
]


class AppendFile(Protocol):
    """A file opened for appending. ``sync`` is fdatasync: data and the size, not mtime.

    The file may be longer than what was written to it: ``extend`` zero-fills it ahead
    of the writes (preallocation), so that a later write lands inside the file and its
    fdatasync has no file size to persist - on ext4 that halves it (a journal commit
    less)."""

    @property
    def size(self) -> int:
        """Bytes written (the next write goes there), including what is not yet synced."""
        ...

    @property
    def allocated(self) -> int:
        """The file's length: ``size`` plus any zero-filled space ahead of the writes."""
        ...

    def write(self, data: bytes) -> None: ...

    def sync(self) -> None: ...

    def extend(self, length: int) -> None:
        """Zero-fill the file to ``length`` bytes (no-op if it is that long already);
        durable after the next ``sync``."""
        ...

    def close(self) -> None: ...


class FileSystem(Protocol):
    """What the WAL and the snapshot store need. Paths are plain strings."""

    def open_append(self, path: str, position: int | None = None) -> AppendFile:
        """Open ``path`` for appending, creating it (empty) if missing. Creating a file
        is a directory change: durable only after ``fsync_dir`` of its directory.
        ``position``: where writes go (default: the end of the file); what follows it
        is zero-filled space (see ``AppendFile``)."""
        ...

    def read_file(self, path: str) -> bytes: ...

    def truncate(self, path: str, size: int) -> None:
        """Cut the file to ``size`` bytes (durable after a sync of the file)."""
        ...

    def sync_file(self, path: str) -> None:
        """fsync a file that is not held open (used after ``truncate``)."""
        ...

    def rename(self, source: str, target: str) -> None:
        """Atomically replace ``target`` by ``source`` (same directory)."""
        ...

    def remove(self, path: str) -> None: ...

    def list_dir(self, path: str) -> list[str]:
        """Names (not paths) in the directory, sorted."""
        ...

    def fsync_dir(self, path: str) -> None: ...

    def exists(self, path: str) -> bool: ...

    def mkdir(self, path: str) -> None:
        """Create the directory and its parents if missing."""
        ...


# --- The real disk -----------------------------------------------------------------------


_ZERO_CHUNK = bytes(1 << 20)


def _write_at(fd: int, data: bytes, offset: int) -> int:
    """Write all of ``data`` at ``offset``; the offset after it."""
    view = memoryview(data)
    # os.pwrite may write less than asked (signals, big buffers): loop until done.
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
    return offset


@attrs.define
class _OsAppendFile:
    _fd: int
    _size: int
    _allocated: int

    @property
    def size(self) -> int:
        return self._size

    @property
    def allocated(self) -> int:
        return self._allocated

    def write(self, data: bytes) -> None:
        self._size = _write_at(self._fd, data, self._size)
        self._allocated = max(self._allocated, self._size)

    def sync(self) -> None:
        os.fdatasync(self._fd)

    def extend(self, length: int) -> None:
        while self._allocated < length:
            chunk = _ZERO_CHUNK[: min(len(_ZERO_CHUNK), length - self._allocated)]
            self._allocated = _write_at(self._fd, chunk, self._allocated)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@attrs.define
class OsFileSystem:
    """The operating system's file system (POSIX; fdatasync and directory fsync)."""

    def open_append(self, path: str, position: int | None = None) -> AppendFile:
        # Not O_APPEND: writes go to the end of what was written, which is not the end of
        # the file once it is preallocated.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        length = os.fstat(fd).st_size
        return _OsAppendFile(fd, length if position is None else position, length)

    def read_file(self, path: str) -> bytes:
        with open(path, "rb") as file:
            return file.read()

    def truncate(self, path: str, size: int) -> None:
        os.truncate(path, size)

    def sync_file(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def rename(self, source: str, target: str) -> None:
        os.replace(source, target)

    def remove(self, path: str) -> None:
        os.remove(path)

    def list_dir(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def fsync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def mkdir(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)


# --- The simulated disk ------------------------------------------------------------------


class SimulatedCrash(BaseException):
    """Raised by a ``MemoryFileSystem`` armed with ``crash_after``: the process "dies"
    before the operation. A ``BaseException`` so that no ``except Exception`` in the code
    under test can mistake it for an error to handle."""


@attrs.define(eq=False)
class _Inode:
    data: bytearray = attrs.Factory(bytearray)
    durable: bytes = b""


@attrs.define(eq=False)
class _Directory:
    entries: dict[str, _Inode] = attrs.Factory(dict)
    durable: dict[str, _Inode] = attrs.Factory(dict)
    # Entry changes since the last fsync of this directory, in order: ("link", name,
    # inode), ("unlink", name, None), ("rename", source, target name as str). A crash
    # keeps a random prefix of them, as an ordered metadata journal would.
    pending: list[tuple[str, str, _Inode | str | None]] = attrs.Factory(list)


@attrs.define(eq=False)
class _MemoryAppendFile:
    _fs: MemoryFileSystem
    _path: str
    _inode: _Inode
    _generation: int
    _position: int
    _closed: bool = False

    @property
    def size(self) -> int:
        return self._position

    @property
    def allocated(self) -> int:
        return len(self._inode.data)

    def write(self, data: bytes) -> None:
        with self._fs._lock:
            self._check()
            self._fs._step("write", self._path)
            end = self._position + len(data)
            self._inode.data[self._position : end] = data
            self._position = end

    def extend(self, length: int) -> None:
        with self._fs._lock:
            self._check()
            missing = length - len(self._inode.data)
            if missing > 0:
                self._fs._step("write", self._path)
                self._inode.data += bytes(missing)

    def sync(self) -> None:
        self._fs._before_fsync(self._path)
        with self._fs._lock:
            self._check()
            self._fs._step("sync", self._path)
            self._fs._fsync(self._path)
            self._inode.durable = bytes(self._inode.data)

    def close(self) -> None:
        self._closed = True

    def _check(self) -> None:
        if self._closed or self._generation != self._fs._generation:
            raise OSError(errno.EBADF, "file handle closed or lost in a crash", self._path)


def _apply(directory: _Directory, change: tuple[str, str, _Inode | str | None]) -> None:
    kind, name, argument = change
    if kind == "link":
        assert isinstance(argument, _Inode)
        directory.durable[name] = argument
    elif kind == "unlink":
        directory.durable.pop(name, None)
    else:
        assert isinstance(argument, str)
        inode = directory.durable.pop(name, None)
        if inode is not None:
            directory.durable[argument] = inode


@attrs.define(eq=False)
class MemoryFileSystem:
    """A deterministic in-memory disk with crash semantics.

    Model: each file has a current content (what reads see) and a durable content (as of
    its last fsync). Each directory has current entries and durable entries (as of its
    last fsync); directories themselves are durable as soon as ``mkdir`` returns (a
    simplification: pnyx creates its data directory once, before anything else).

    ``crash(rng)`` loses every open handle and keeps per file its durable content,
    plus, when ``torn``, a random prefix of the unsynced tail (possibly padded with
    zeros, as when the size reached the disk but the data did not; a file written over
    in place keeps its synced length and bytes past that prefix); per directory it
    keeps the durable entries plus, when ``lose_directory_changes``, only a random prefix
    of the changes made since the directory was last fsynced (all of them otherwise).

    Fault injection: ``fail_fsync`` makes the next fsyncs raise ``OSError(EIO)``;
    ``crash_after(n)`` raises ``SimulatedCrash`` instead of performing the (n+1)-th
    mutating operation; ``on_fsync`` is called before each fsync, outside the lock
    (tests use it to hold one thread inside an fsync while others go on). Counters:
    ``fsync_count``, ``operation_count``.
    Thread-safe (one lock), so a writer thread and a test thread may share it.
    """

    fsync_count: int = 0
    operation_count: int = 0
    on_fsync: Callable[[str], None] | None = None
    _directories: dict[str, _Directory] = attrs.Factory(lambda: {"/": _Directory()})
    _generation: int = 0
    _failing_fsyncs: int = 0
    _crash_countdown: int | None = None
    _lock: threading.RLock = attrs.Factory(threading.RLock)

    # -- fault injection --

    def fail_fsync(self, count: int = 1) -> None:
        """Make the next ``count`` fsyncs (file or directory) fail with EIO."""
        with self._lock:
            self._failing_fsyncs = count

    def crash_after(self, operations: int | None) -> None:
        """Arm (or with None, disarm) a crash before the (operations+1)-th mutating
        operation: write, sync, truncate, rename, remove, create, directory fsync."""
        with self._lock:
            self._crash_countdown = operations

    def crash(
        self, rng: random.Random, *, torn: bool = True, lose_directory_changes: bool = True
    ) -> None:
        """Power loss: keep what a real disk may keep (see the class docstring)."""
        with self._lock:
            self._generation += 1
            self._crash_countdown = None
            self._failing_fsyncs = 0
            for path in sorted(self._directories):
                directory = self._directories[path]
                keep = len(directory.pending)
                if lose_directory_changes:
                    keep = rng.randint(0, keep)
                for change in directory.pending[:keep]:
                    _apply(directory, change)
                directory.pending.clear()
                directory.entries = dict(directory.durable)
            inodes: dict[int, _Inode] = {}
            for path in sorted(self._directories):
                for name in sorted(self._directories[path].entries):
                    inode = self._directories[path].entries[name]
                    inodes.setdefault(id(inode), inode)
            for inode in inodes.values():
                content = _surviving_content(inode, rng, torn=torn)
                inode.data = bytearray(content)
                inode.durable = content

    # -- FileSystem --

    def open_append(self, path: str, position: int | None = None) -> AppendFile:
        with self._lock:
            directory, name = self._parent(path)
            inode = directory.entries.get(name)
            if inode is None:
                self._step("create", path)
                inode = _Inode()
                directory.entries[name] = inode
                directory.pending.append(("link", name, inode))
            length = len(inode.data)
            return _MemoryAppendFile(
                self, path, inode, self._generation, length if position is None else position
            )

    def read_file(self, path: str) -> bytes:
        with self._lock:
            return bytes(self._inode(path).data)

    def truncate(self, path: str, size: int) -> None:
        with self._lock:
            inode = self._inode(path)
            self._step("truncate", path)
            del inode.data[size:]

    def sync_file(self, path: str) -> None:
        self._before_fsync(path)
        with self._lock:
            inode = self._inode(path)
            self._step("sync", path)
            self._fsync(path)
            inode.durable = bytes(inode.data)

    def rename(self, source: str, target: str) -> None:
        with self._lock:
            directory, name = self._parent(source)
            target_directory, target_name = self._parent(target)
            if target_directory is not directory:
                raise OSError(errno.EXDEV, "MemoryFileSystem renames within a directory")
            inode = self._inode(source)
            self._step("rename", source)
            del directory.entries[name]
            directory.entries[target_name] = inode
            directory.pending.append(("rename", name, target_name))

    def remove(self, path: str) -> None:
        with self._lock:
            directory, name = self._parent(path)
            self._inode(path)
            self._step("remove", path)
            del directory.entries[name]
            directory.pending.append(("unlink", name, None))

    def list_dir(self, path: str) -> list[str]:
        with self._lock:
            return sorted(self._directory(path).entries)

    def fsync_dir(self, path: str) -> None:
        self._before_fsync(path)
        with self._lock:
            directory = self._directory(path)
            self._step("fsync_dir", path)
            self._fsync(path)
            directory.durable = dict(directory.entries)
            directory.pending.clear()

    def exists(self, path: str) -> bool:
        with self._lock:
            path = _normalize(path)
            if path in self._directories:
                return True
            parent = self._directories.get(posixpath.dirname(path))
            return parent is not None and posixpath.basename(path) in parent.entries

    def mkdir(self, path: str) -> None:
        with self._lock:
            path = _normalize(path)
            while path not in self._directories:
                self._directories[path] = _Directory()
                path = posixpath.dirname(path)

    # -- helpers for tests --

    def durable_content(self, path: str) -> bytes:
        """The file's content as of its last fsync."""
        with self._lock:
            return self._inode(path).durable

    def corrupt(self, path: str, offset: int, xor: int = 0xFF) -> None:
        """Flip bits of one byte, in both the current and the durable content (bit rot)."""
        with self._lock:
            inode = self._inode(path)
            inode.data[offset] ^= xor
            durable = bytearray(inode.durable)
            if offset < len(durable):
                durable[offset] ^= xor
                inode.durable = bytes(durable)

    # -- internals --

    def _step(self, operation: str, path: str) -> None:
        self.operation_count += 1
        if self._crash_countdown is not None:
            if self._crash_countdown <= 0:
                raise SimulatedCrash(f"crash before {operation} {path}")
            self._crash_countdown -= 1

    def _before_fsync(self, path: str) -> None:
        # Outside the lock: a test holding one thread in its fsync must not stop the
        # others (a snapshot file's fsync, say, must not hold up the WAL's).
        hook = self.on_fsync
        if hook is not None:
            hook(path)

    def _fsync(self, path: str) -> None:
        self.fsync_count += 1
        if self._failing_fsyncs > 0:
            self._failing_fsyncs -= 1
            raise OSError(errno.EIO, "injected fsync failure", path)

    def _directory(self, path: str) -> _Directory:
        directory = self._directories.get(_normalize(path))
        if directory is None:
            raise FileNotFoundError(errno.ENOENT, "no such directory", path)
        return directory

    def _parent(self, path: str) -> tuple[_Directory, str]:
        path = _normalize(path)
        return self._directory(posixpath.dirname(path)), posixpath.basename(path)

    def _inode(self, path: str) -> _Inode:
        directory, name = self._parent(path)
        inode = directory.entries.get(name)
        if inode is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", path)
        return inode


def _normalize(path: str) -> str:
    return posixpath.normpath(posixpath.join("/", path))


def _surviving_content(inode: _Inode, rng: random.Random, *, torn: bool) -> bytes:
    durable, current = inode.durable, bytes(inode.data)
    if not torn or durable == current:
        return durable
    common = 0
    limit = min(len(durable), len(current))
    while common < limit and durable[common] == current[common]:
        common += 1
    if common < len(durable) and rng.random() < 0.5:
        # The file was cut or rewritten since its last fsync and none of it stuck.
        return durable
    length = rng.randint(common, len(current))
    survivor = current[:length]
    if length < len(durable):
        # Written over in place (a preallocated file): the file keeps its synced length,
        # and past the prefix that stuck, its synced bytes (zeros ahead of the writes).
        survivor += durable[length:]
    elif length < len(current) and rng.random() < 0.25:
        # The size reached the disk, the data did not: the rest reads as zeros.
        survivor += bytes(rng.randint(0, len(current) - length))
    return survivor
