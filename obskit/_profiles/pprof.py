"""A :class:`~.window.Window` as a pprof profile: gzipped ``perftools.profiles.Profile``
bytes, what ``go tool pprof``, Grafana Pyroscope and every pprof reader take.

The profile, for a window of samples taken every ``period_ns`` nanoseconds:

- ``sample_type`` ``[samples/count, wall/nanoseconds]``, ``period_type``
  ``wall/nanoseconds``, ``period`` the sampling period: each sample's values are
  ``[count, count * period_ns]``. The sampler reads every thread's stack whether it runs
  or waits, so the time is wall-clock time. Pyroscope files a profile whose sample types
  include ``wall`` as the ``wall`` profile type (``wall:samples:count:wall:nanoseconds``
  and ``wall:wall:nanoseconds:wall:nanoseconds``); no ``default_sample_type`` is set, so
  readers show the last type, ``wall``, as pprof's own convention says;
- ``time_nanos``/``duration_nanos`` the window's start and length;
- one ``Function`` per distinct (function name, file name), one ``Location`` per distinct
  frame (function, file, line), ids counted from 1; Python frames have no addresses, so
  every location is in the one ``Mapping`` ``python``, marked as having functions, file
  names and line numbers (a reader then looks up no binary to symbolize it);
- each sample's ``location_id`` in the stack's order, innermost first (pprof's order);
- the window's labels (``trace_id``, ``span_id``, ``span_name``, ``http.route``,
  ``thread_name``) as string labels (``key``/``str``), which ``go tool pprof -tags`` and
  ``-tagfocus`` read and Pyroscope turns into series labels, ``span_id`` into its span
  profiles;
- the resource (``service.name``, ...) as ``comment`` lines ``key=value``, which
  ``go tool pprof -comments`` prints. pprof says comments are for people, and Pyroscope
  reads none: it takes the service from the ingest request's ``name`` (see
  :mod:`.export`), so the resource in the file only tells a person whose profile it is.

The samples of the "other stacks" frame (:data:`~.window.OVERFLOW_FRAME`) are ordinary
samples of a one-frame stack, so totals stay right in every reader.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Mapping
from typing import Any

from obskit._profiles.profile_proto import message_class
from obskit._profiles.window import Frame, Labels, Stack, Window

__all__ = ["MAX_DECODED_BYTES", "decode", "encode"]

#: The most a profile may take once unzipped in :func:`decode`.
MAX_DECODED_BYTES = 256 * 2**20


def encode(
    window: Window,
    *,
    labels_as_strings: bool = True,
    resource: Mapping[str, str] | None = None,
) -> bytes:
    """The window as a gzipped serialized pprof ``Profile``.

    Args:
        window: The samples.
        labels_as_strings: Write each sample's labels as pprof string labels (the one
            kind Pyroscope and ``go tool pprof -tags`` group by). ``False`` leaves the
            labels out, merging the samples of each stack into one.
        resource: Attributes of the process (``service.name``, ...), written as
            ``key=value`` comments, sorted by key.

    Raises:
        ImportError: protobuf is not installed.
    """
    profile = message_class("Profile")()
    strings: dict[str, int] = {"": 0}

    def index(text: str) -> int:
        found = strings.get(text)
        if found is None:
            found = strings[text] = len(strings)
        return found

    profile.sample_type.add(type=index("samples"), unit=index("count"))
    profile.sample_type.add(type=index("wall"), unit=index("nanoseconds"))
    profile.period_type.type = index("wall")
    profile.period_type.unit = index("nanoseconds")
    period = window.period_ns
    profile.period = period
    profile.time_nanos = window.start_ns
    profile.duration_nanos = max(0, window.end_ns - window.start_ns)

    # One mapping for the interpreter, marked symbolized: readers then look up no binary.
    profile.mapping.add(
        id=1,
        filename=index("python"),
        has_functions=True,
        has_filenames=True,
        has_line_numbers=True,
    )
    functions: dict[tuple[str, str], int] = {}
    locations: dict[Frame, int] = {}
    Line = message_class("Line")

    def location(frame: Frame) -> int:
        found = locations.get(frame)
        if found is None:
            name, filename, line = frame
            function = functions.get((name, filename))
            if function is None:
                function = functions[(name, filename)] = len(functions) + 1
                name_index = index(name)
                profile.function.add(
                    id=function, name=name_index, system_name=name_index, filename=index(filename)
                )
            found = locations[frame] = len(locations) + 1
            profile.location.add(
                id=found, mapping_id=1, line=[Line(function_id=function, line=line)]
            )
        return found

    merged: dict[tuple[Stack, Labels], int] = {}
    for (stack, labels), count in window.counts.items():
        if count > 0:
            kept = (stack, labels if labels_as_strings else ())
            merged[kept] = merged.get(kept, 0) + count
    for (stack, labels), count in merged.items():
        sample = profile.sample.add()
        sample.location_id.extend([location(frame) for frame in stack])
        sample.value.extend((count, count * period))
        for name, value in labels:
            sample.label.add(key=index(name), str=index(value))

    for name, value in sorted((resource or {}).items()):
        profile.comment.append(index(f"{name}={value}"))
    profile.string_table.extend(strings)  # (a dict keeps insertion order: the indexes)
    return gzip.compress(profile.SerializeToString(), compresslevel=6, mtime=0)


def decode(data: bytes, *, max_bytes: int = MAX_DECODED_BYTES) -> Any:
    """The pprof ``Profile`` message in ``data``, gzipped or not (for tests and tools).

    Raises:
        ValueError: the profile unzips to more than ``max_bytes``, or the gzip stream is
            cut short.
        google.protobuf.message.DecodeError: ``data`` is not a profile.
    """
    raw = data
    if data[:2] == b"\x1f\x8b":
        unzip = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        raw = unzip.decompress(data, max_bytes + 1)
        if len(raw) > max_bytes:
            raise ValueError(f"the profile unzips to more than {max_bytes} bytes")
        if not unzip.eof:
            raise ValueError("the gzip stream is cut short")
    return message_class("Profile").FromString(raw)
