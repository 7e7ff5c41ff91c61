"""prometheus-client's multiprocess metric files, read and written so that a full, read-only
or vanished directory is an ``OSError``, never a ``SIGBUS``.

The format is the one prometheus-client documents for its ``MmapedDict``: a 4-byte count
of the bytes used, 4 bytes of padding, then one entry per series: a 4-byte key length,
the key (UTF-8 JSON) padded with spaces to an 8-byte boundary, then the value and its
timestamp as two doubles (native byte order, as prometheus-client writes them).

Why not prometheus-client's own writer: it grows a file with ``truncate()``, which on a
full tmpfs succeeds and leaves a hole, and the first write into that hole through the
mmap kills the process with ``SIGBUS`` (a worker on a hot path, or the gunicorn master
while it compacts). Here:

- readers (scrapes, compaction in the master) use plain ``read()``;
- compaction writes a whole file with ordinary writes to a temporary name, then renames
  it over the old one (``ENOSPC`` is an ``OSError``; a reader sees the old or the new file);
- a worker's own files (:class:`MappedFile`) reserve their blocks with
  ``posix_fallocate`` before the map covers them, so every byte written through the map
  is backed: growth fails with ``ENOSPC`` at :meth:`MappedFile.write`, before any write.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import struct
from collections.abc import Iterable

#: The size a new file gets (prometheus-client's too), doubled when it is full.
INITIAL_SIZE = 1 << 16
_USED = struct.Struct("i")
_LENGTH = struct.Struct("i")
_VALUE = struct.Struct("dd")
_HEADER_SIZE = 8

#: Reasons (the ``reason`` label of ``obskit_dropped_total{signal="metrics"}``) for errnos.
_REASONS = {
    errno.ENOSPC: "dir_full",
    errno.EDQUOT: "dir_full",
    errno.EFBIG: "dir_full",
    errno.EROFS: "dir_read_only",
    errno.EACCES: "dir_read_only",
    errno.EPERM: "dir_read_only",
    errno.ENOENT: "dir_missing",
    errno.ENOTDIR: "dir_missing",
    errno.ESTALE: "dir_missing",
}
#: Every reason :func:`reason_of` returns.
REASONS = ("dir_full", "dir_read_only", "dir_missing", "dir_error")


def reason_of(error: BaseException) -> str:
    """The short reason for an error on the directory: ``dir_full``, ``dir_read_only``,
    ``dir_missing`` or ``dir_error``."""
    number = error.errno if isinstance(error, OSError) else None
    return _REASONS.get(number or 0, "dir_error")


def entry(key: str, value: float, timestamp: float) -> bytes:
    """One entry of a metric file."""
    encoded = key.encode("utf-8")
    padded = encoded + b" " * (8 - (len(encoded) + 4) % 8)
    return _LENGTH.pack(len(encoded)) + padded + _VALUE.pack(value, timestamp)


def parse(data: bytes | mmap.mmap) -> list[tuple[str, float, float, int]]:
    """Every entry of a metric file's contents as (key, value, timestamp, value offset).

    A file cut short or damaged yields the entries before the damage (a scrape or a
    compaction never fails on one file).
    """
    found: list[tuple[str, float, float, int]] = []
    if len(data) < _HEADER_SIZE:
        return found
    (used,) = _USED.unpack_from(data, 0)
    used = min(used, len(data))
    position = _HEADER_SIZE
    while position + 4 <= used:
        (length,) = _LENGTH.unpack_from(data, position)
        padded = length + (8 - (length + 4) % 8)
        start = position + 4
        value_at = start + padded
        if length < 0 or value_at + 16 > used:
            break
        try:
            key = bytes(data[start : start + length]).decode("utf-8")
        except UnicodeDecodeError:
            break
        value, timestamp = _VALUE.unpack_from(data, value_at)
        found.append((key, value, timestamp, value_at))
        position = value_at + 16
    return found


def read_entries(path: str) -> list[tuple[str, float, float]]:
    """The entries of the file at ``path``, read with ``read()`` (never mapped).

    Raises:
        OSError: the file cannot be opened or read.
    """
    with open(path, "rb") as handle:
        head = handle.read(mmap.PAGESIZE)
        if len(head) >= 4:
            (used,) = _USED.unpack_from(head, 0)
            if used > len(head):
                head += handle.read(used - len(head))
    return [(key, value, timestamp) for key, value, timestamp, _ in parse(head)]


def encode(entries: Iterable[tuple[str, float, float]]) -> bytes:
    """A whole metric file holding ``entries``."""
    body = b"".join(entry(key, value, timestamp) for key, value, timestamp in entries)
    return _USED.pack(_HEADER_SIZE + len(body)) + b"\0" * 4 + body


def write_file(path: str, data: bytes) -> None:
    """Replace the file at ``path`` by one holding ``data``: written with ordinary writes
    to ``path + ".tmp"`` (a name no collector reads), then renamed over ``path``.

    Raises:
        OSError: the directory is full, read-only or gone (nothing was replaced).
    """
    temporary = path + ".tmp"
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(handle, view) :]
        finally:
            os.close(handle)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def reserve(handle: int, size: int) -> None:
    """Make the first ``size`` bytes of the open file ``handle`` backed by storage.

    Raises:
        OSError: ``ENOSPC`` (or another error) when the storage cannot be had.
    """
    allocate = getattr(os, "posix_fallocate", None)
    if allocate is not None:
        try:
            allocate(handle, 0, size)
            return
        except OSError as error:
            if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
    # No fallocate here: write zeros over the part not written yet (ordinary writes,
    # so a full disk is an error now, not a signal later).
    current = os.fstat(handle).st_size
    zeros = b"\0" * 65536
    while current < size:
        current += os.pwrite(handle, zeros[: min(len(zeros), size - current)], current)


class MappedFile:
    """One process's metric file, mapped for in-place writes of its values.

    Every byte the map covers was reserved (:func:`reserve`) before it was mapped, so a
    write through the map never faults. Not thread-safe: the caller holds a lock.
    """

    def __init__(self, path: str) -> None:
        """Create ``path`` (which must not exist) and reserve its first block.

        Raises:
            FileExistsError: ``path`` exists (another writer's, or a dead process's).
            OSError: the directory is full, read-only or gone (nothing is left behind).
        """
        self.path = path
        handle = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            reserve(handle, INITIAL_SIZE)
            self._map = mmap.mmap(handle, INITIAL_SIZE)
        except BaseException:
            os.close(handle)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        self._handle = handle
        self._capacity = INITIAL_SIZE
        self._used = _HEADER_SIZE
        _USED.pack_into(self._map, 0, self._used)
        #: The offset of each key's value.
        self.positions: dict[str, int] = {}

    def write(self, key: str, value: float, timestamp: float) -> None:
        """Set ``key``'s value, appending the key first if it is new.

        Raises:
            OSError: a new key needs more room and the directory has none.
        """
        position = self.positions.get(key)
        if position is None:
            position = self._append(key)
        self._map[position : position + 16] = _VALUE.pack(value, timestamp)

    def _append(self, key: str) -> int:
        data = entry(key, 0.0, 0.0)
        end = self._used + len(data)
        if end > self._capacity:
            self._grow(end)
        self._map[self._used : end] = data
        self._used = end
        # Publish the entry only once it is written.
        self._map[0:4] = _USED.pack(end)
        position = end - 16
        self.positions[key] = position
        return position

    def _grow(self, needed: int) -> None:
        capacity = self._capacity
        while capacity < needed:
            capacity *= 2
        reserve(self._handle, capacity)  # raises (ENOSPC) before anything is mapped
        grown = mmap.mmap(self._handle, capacity)
        self._map.close()
        self._map = grown
        self._capacity = capacity

    def unlinked(self) -> bool:
        """True once the file was deleted (its directory removed or replaced)."""
        try:
            return os.fstat(self._handle).st_nlink == 0
        except OSError:
            return True

    def close(self) -> None:
        """Unmap and close the file (it stays on disk)."""
        with contextlib.suppress(Exception):
            self._map.close()
        with contextlib.suppress(OSError):
            os.close(self._handle)
