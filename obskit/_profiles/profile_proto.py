"""Google's pprof ``profile.proto`` as protobuf message classes, built at first use.

The schema (package ``perftools.profiles``: ``Profile``, ``ValueType``, ``Sample``,
``Label``, ``Mapping``, ``Location``, ``Line``, ``Function``, with the field numbers of
github.com/google/pprof's ``proto/profile.proto``) is declared below as data, turned into
a ``FileDescriptorProto``, added to a descriptor pool of obskit's own (so it never
collides with another copy of the schema in the default pool) and made into classes by
the installed protobuf package, which then does all the encoding. No generated
``_pb2`` module: generated code is tied to the protobuf runtime that generated it, and
the ``profiles`` extra allows every protobuf from 3.19 to the newest.

protobuf is imported when :func:`message_class` is first called, never at import.
"""

from __future__ import annotations

import threading
from typing import Any

from obskit._lifecycle import after_fork

__all__ = ["FILE_NAME", "PACKAGE", "message_class"]

PACKAGE = "perftools.profiles"
#: The name of the schema file in obskit's descriptor pool.
FILE_NAME = "obskit/profiles/profile.proto"

# FieldDescriptorProto's type numbers (stable since proto2).
_INT64, _UINT64, _BOOL, _STRING, _MESSAGE = 3, 4, 8, 9, 11

#: message -> its fields as (name, number, type, repeated, message type).
_SCHEMA: dict[str, tuple[tuple[str, int, int, bool, str | None], ...]] = {
    "Profile": (
        ("sample_type", 1, _MESSAGE, True, "ValueType"),
        ("sample", 2, _MESSAGE, True, "Sample"),
        ("mapping", 3, _MESSAGE, True, "Mapping"),
        ("location", 4, _MESSAGE, True, "Location"),
        ("function", 5, _MESSAGE, True, "Function"),
        ("string_table", 6, _STRING, True, None),
        ("drop_frames", 7, _INT64, False, None),
        ("keep_frames", 8, _INT64, False, None),
        ("time_nanos", 9, _INT64, False, None),
        ("duration_nanos", 10, _INT64, False, None),
        ("period_type", 11, _MESSAGE, False, "ValueType"),
        ("period", 12, _INT64, False, None),
        ("comment", 13, _INT64, True, None),
        ("default_sample_type", 14, _INT64, False, None),
    ),
    "ValueType": (
        ("type", 1, _INT64, False, None),
        ("unit", 2, _INT64, False, None),
    ),
    "Sample": (
        ("location_id", 1, _UINT64, True, None),
        ("value", 2, _INT64, True, None),
        ("label", 3, _MESSAGE, True, "Label"),
    ),
    "Label": (
        ("key", 1, _INT64, False, None),
        ("str", 2, _INT64, False, None),
        ("num", 3, _INT64, False, None),
        ("num_unit", 4, _INT64, False, None),
    ),
    "Mapping": (
        ("id", 1, _UINT64, False, None),
        ("memory_start", 2, _UINT64, False, None),
        ("memory_limit", 3, _UINT64, False, None),
        ("file_offset", 4, _UINT64, False, None),
        ("filename", 5, _INT64, False, None),
        ("build_id", 6, _INT64, False, None),
        ("has_functions", 7, _BOOL, False, None),
        ("has_filenames", 8, _BOOL, False, None),
        ("has_line_numbers", 9, _BOOL, False, None),
        ("has_inline_frames", 10, _BOOL, False, None),
    ),
    "Location": (
        ("id", 1, _UINT64, False, None),
        ("mapping_id", 2, _UINT64, False, None),
        ("address", 3, _UINT64, False, None),
        ("line", 4, _MESSAGE, True, "Line"),
        ("is_folded", 5, _BOOL, False, None),
    ),
    "Line": (
        ("function_id", 1, _UINT64, False, None),
        ("line", 2, _INT64, False, None),
        ("column", 3, _INT64, False, None),
    ),
    "Function": (
        ("id", 1, _UINT64, False, None),
        ("name", 2, _INT64, False, None),
        ("system_name", 3, _INT64, False, None),
        ("filename", 4, _INT64, False, None),
        ("start_line", 5, _INT64, False, None),
    ),
}

_lock = threading.Lock()
_classes: dict[str, Any] = {}


@after_fork.in_child
def _renew_lock() -> None:
    global _lock  # (a thread building the classes at fork holds it in the child forever)
    _lock = threading.Lock()


def message_class(name: str) -> Any:
    """The protobuf message class of ``perftools.profiles.<name>`` (``"Profile"``, ...).

    Raises:
        ImportError: protobuf is not installed (``pip install 'obskit-sdk[profiles]'``).
        KeyError: ``name`` is not a message of the schema.
    """
    if not _classes:
        with _lock:
            if not _classes:
                _classes.update(_build())
    return _classes[name]


def file_descriptor_proto() -> Any:
    """The schema as a ``google.protobuf.descriptor_pb2.FileDescriptorProto``."""
    from google.protobuf import descriptor_pb2

    proto = descriptor_pb2.FileDescriptorProto(name=FILE_NAME, package=PACKAGE, syntax="proto3")
    field_type = descriptor_pb2.FieldDescriptorProto
    for message_name, fields in _SCHEMA.items():
        message = proto.message_type.add(name=message_name)
        for field_name, number, kind, repeated, type_name in fields:
            field = message.field.add(
                name=field_name,
                number=number,
                type=kind,
                label=field_type.LABEL_REPEATED if repeated else field_type.LABEL_OPTIONAL,
            )
            if type_name is not None:
                field.type_name = f".{PACKAGE}.{type_name}"
    return proto


def _build() -> dict[str, Any]:
    try:
        from google.protobuf import descriptor_pool, message_factory
    except ImportError as error:
        raise ImportError(
            "profiles need the protobuf package: pip install 'obskit-sdk[profiles]'"
        ) from error
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(file_descriptor_proto().SerializeToString())
    get_class = getattr(message_factory, "GetMessageClass", None)
    if get_class is None:  # protobuf before 4.22
        get_class = message_factory.MessageFactory(pool).GetPrototype
    return {name: get_class(pool.FindMessageTypeByName(f"{PACKAGE}.{name}")) for name in _SCHEMA}
