"""Just enough of the protobuf wire format to write OTLP messages, without the protobuf package.

A message is the concatenation of its fields; each field is a key (field number and wire type)
and a value. We write four wire types: varint (ints, bools, enums), 64-bit (fixed64, sfixed64,
double), length-delimited (strings, bytes, nested messages). Fields left at their default value
may be omitted, as proto3 encoders do. Decoding is the tests' job, with the official schema.
"""

from __future__ import annotations

import functools
import struct
from typing import Iterable

VARINT = 0
FIXED64 = 1
LENGTH_DELIMITED = 2

_FIXED64 = struct.Struct("<Q")
_SFIXED64 = struct.Struct("<q")
_DOUBLE = struct.Struct("<d")
_ONE_BYTE = tuple(bytes((number,)) for number in range(0x80))


def varint(number: int) -> bytes:
    """Base-128 varint; a negative int64 is written as its 64-bit two's complement (10 bytes)."""
    if 0 <= number < 0x80:
        return _ONE_BYTE[number]
    if number < 0:
        number += 1 << 64
    out = bytearray()
    while number > 0x7F:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


@functools.lru_cache(maxsize=None)
def key(field: int, wire_type: int) -> bytes:
    return varint((field << 3) | wire_type)


def uint_field(field: int, number: int) -> bytes:
    """An int, enum or bool field; omitted when 0 (the proto3 default)."""
    return key(field, VARINT) + varint(number) if number else b""


def fixed64_field(field: int, number: int) -> bytes:
    return key(field, FIXED64) + _FIXED64.pack(number) if number else b""


def sfixed64_field(field: int, number: int) -> bytes:
    """Written even when 0: inside a `oneof` the field's presence is what says which one is set."""
    return key(field, FIXED64) + _SFIXED64.pack(number)


def double_field(field: int, number: float) -> bytes:
    """Written even when 0.0, for the same `oneof` reason."""
    return key(field, FIXED64) + _DOUBLE.pack(number)


def bytes_field(field: int, data: bytes) -> bytes:
    return key(field, LENGTH_DELIMITED) + varint(len(data)) + data


def string_field(field: int, text: str) -> bytes:
    # Queue names may hold undecodable bytes (kept as surrogates); protobuf strings must be UTF-8.
    return bytes_field(field, text.encode("utf-8", "replace"))


def message_field(field: int, body: bytes) -> bytes:
    """A nested message; written even when empty, since presence can matter (an empty Resource)."""
    return bytes_field(field, body)


def repeated_messages(field: int, bodies: Iterable[bytes]) -> bytes:
    return b"".join(message_field(field, body) for body in bodies)
