"""RESP2 for one big pipeline: packing many commands and reading their replies, fast.

A tick's thousands of commands go through here: these functions spend about a microsecond of
CPU per command, where redis-py's pipeline spends ~20. Only what our read commands answer is parsed: simple
strings, errors, integers, bulk strings (nil included) and arrays of bulk strings or integers.
"""

from __future__ import annotations

import socket
from typing import List, Sequence, Tuple

from queue_metrics.errors import RedisTimeout, RedisUnavailable, ReplyError

CRLF = b"\r\n"
RECEIVE_SIZE = 1 << 16


def pack_commands(commands: Sequence[Sequence[object]]) -> bytes:
    parts: List[bytes] = []
    append = parts.append
    for command in commands:
        append(b"*%d\r\n" % len(command))
        for argument in command:
            if isinstance(argument, str):
                data = argument.encode("utf-8", "surrogateescape")
            elif isinstance(argument, int):
                data = b"%d" % argument
            else:
                data = bytes(argument)  # type: ignore[call-overload]
            append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class NeedMore(Exception):
    """The buffer ends before the reply does."""


def parse_reply(buffer, position: int) -> Tuple[object, int]:
    """One reply of `buffer` (bytes or bytearray) at `position`; returns it and the position after.

    Raises NeedMore when the buffer ends before the reply does.
    """
    end = buffer.find(CRLF, position)
    if end < 0:
        raise NeedMore()
    kind = buffer[position]
    if kind == 36:  # $ bulk string
        length = int(buffer[position + 1 : end])
        if length < 0:
            return None, end + 2
        stop = end + 2 + length
        if stop + 2 > len(buffer):
            raise NeedMore()
        return bytes(buffer[end + 2 : stop]), stop + 2
    if kind == 58:  # : integer
        return int(buffer[position + 1 : end]), end + 2
    if kind == 42:  # * array
        count = int(buffer[position + 1 : end])
        if count < 0:
            return None, end + 2
        items = []
        position = end + 2
        for _ in range(count):
            item, position = parse_reply(buffer, position)
            items.append(item)
        return items, position
    if kind == 43:  # + simple string
        return bytes(buffer[position + 1 : end]), end + 2
    if kind == 45:  # - error
        return ReplyError(bytes(buffer[position + 1 : end]).decode("utf-8", "replace")), end + 2
    raise RedisUnavailable(f"unexpected reply type byte {bytes([kind])!r} from Redis")


# Past this many parsed bytes the buffer is compacted, so a huge tick holds little at once.
COMPACT_AFTER = 1 << 20


def read_replies(sock: socket.socket, count: int) -> List[object]:
    """Read exactly `count` replies from the socket (its timeout bounds every wait)."""
    replies: List[object] = []
    append = replies.append
    buffer = bytearray()
    find = buffer.find
    position = 0
    while len(replies) < count:
        # Integers and bulk strings, nearly every reply of a tick, are parsed inline here;
        # the rest (and any reply cut off by the end of the buffer) by parse_reply.
        end = find(CRLF, position)
        if end > 0:
            kind = buffer[position]
            if kind == 58:  # :
                append(int(buffer[position + 1 : end]))
                position = end + 2
                continue
            if kind == 36:  # $
                length = int(buffer[position + 1 : end])
                if length < 0:
                    append(None)
                    position = end + 2
                    continue
                stop = end + 2 + length
                if stop + 2 <= len(buffer):
                    append(bytes(buffer[end + 2 : stop]))
                    position = stop + 2
                    continue
        try:
            reply, position = parse_reply(buffer, position)
        except NeedMore:
            if position > COMPACT_AFTER:
                del buffer[:position]
                position = 0
            buffer += _receive(sock)
            continue
        append(reply)
    if position != len(buffer):
        raise RedisUnavailable("Redis sent more replies than commands")
    return replies


def _receive(sock: socket.socket) -> bytes:
    try:
        chunk = sock.recv(RECEIVE_SIZE)
    except socket.timeout as error:
        raise RedisTimeout("timed out reading") from error
    except OSError as error:
        raise RedisUnavailable("lost the connection") from error
    if not chunk:
        raise RedisUnavailable("the server closed the connection")
    return chunk
