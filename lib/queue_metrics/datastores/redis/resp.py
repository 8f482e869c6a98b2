"""RESP2 for one big pipeline: packing many commands and reading their replies, fast.

A tick's thousands of commands go through here: these functions spend about a microsecond of
CPU per command, where redis-py's pipeline spends ~20. Only what our read commands answer is parsed: simple
strings, errors, integers, bulk strings (nil included) and arrays of bulk strings or integers.
"""

from __future__ import annotations

import socket
from typing import Dict, List, NamedTuple, Sequence, Tuple, Union

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


class NameKey(NamedTuple):
    """A placeholder among a template's arguments: the key `before + name + after`, for the name
    given to `CommandsTemplate.pack` (each system's keys are a queue's name between fixed bytes)."""

    before: bytes
    after: bytes = b""


class CommandsTemplate:
    """Commands whose arguments are fixed but for some `NameKey`s, packed for a name by a single
    bytes formatting: each name length gets its own format once (lengths filled in, the name's
    places left as %b), so packing a queue's commands costs a dictionary lookup and one `%`."""

    # Formats kept at most: one per distinct name length, so a few dozen in practice.
    MAX_FORMATS = 256

    __slots__ = ("_parts", "_names", "_formats")

    def __init__(self, commands: Sequence[Sequence[object]]) -> None:
        # Fixed bytes (already packed as pack_commands would) and NameKeys, in order.
        self._parts: List[Union[bytes, NameKey]] = []
        for command in commands:
            self._parts.append(b"*%d\r\n" % len(command))
            for argument in command:
                if isinstance(argument, NameKey):
                    self._parts.append(argument)
                else:
                    self._parts.append(pack_commands([[argument]])[len(b"*1\r\n") :])
        self._names = sum(isinstance(part, NameKey) for part in self._parts)
        self._formats: Dict[int, bytes] = {}

    def pack(self, name: bytes) -> bytes:
        """The same bytes as `pack_commands` with each NameKey made `before + name + after`."""
        packed_format = self._formats.get(len(name))
        if packed_format is None:
            if len(self._formats) >= self.MAX_FORMATS:
                self._formats.clear()
            packed_format = self._formats[len(name)] = self._format_for(len(name))
        return packed_format % ((name,) * self._names)

    def _format_for(self, size: int) -> bytes:
        pieces = []
        for part in self._parts:
            if isinstance(part, NameKey):
                before, after = (piece.replace(b"%", b"%%") for piece in part)
                length = len(part.before) + size + len(part.after)
                pieces.append(b"$%d\r\n%b%%b%b\r\n" % (length, before, after))
            else:
                pieces.append(part.replace(b"%", b"%%"))
        return b"".join(pieces)


class ReplyParser:
    """Turns the bytes Redis sends into replies, however the network cuts them.

    Parsing resumes where it stopped: a reply cut off by the end of what has arrived (an array of
    ten thousand queue names, say) is never parsed again from its start, so a tick's replies cost
    the same whether they arrive in one piece or in a thousand.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._position = 0
        # Arrays being filled, innermost last: [their items so far, how many they will hold].
        self._open: List[list] = []

    @property
    def pending(self) -> bool:
        """True while a reply has begun to arrive but is not complete."""
        return bool(self._open) or self._position < len(self._buffer)

    def feed(self, data: bytes, replies: List[object]) -> None:
        """Appends to `replies` every reply that `data` completes."""
        buffer = self._buffer
        if self._position > COMPACT_AFTER:
            del buffer[: self._position]
            self._position = 0
        buffer += data
        position = self._position
        size = len(buffer)
        find = buffer.find
        opened = self._open
        append = replies.append
        while position < size:
            end = find(CRLF, position)
            if end < 0:
                break
            kind = buffer[position]
            if kind == 36:  # $ bulk string
                length = int(buffer[position + 1 : end])
                if length < 0:
                    value: object = None
                    position = end + 2
                else:
                    stop = end + 2 + length
                    if stop + 2 > size:
                        break
                    value = bytes(buffer[end + 2 : stop])
                    position = stop + 2
            elif kind == 58:  # : integer
                value = int(buffer[position + 1 : end])
                position = end + 2
            elif kind == 42:  # * array
                count = int(buffer[position + 1 : end])
                position = end + 2
                if count > 0:
                    opened.append([[], count])
                    continue
                value = None if count < 0 else []
            elif kind == 43:  # + simple string
                value = bytes(buffer[position + 1 : end])
                position = end + 2
            elif kind == 45:  # - error
                value = ReplyError(bytes(buffer[position + 1 : end]).decode("utf-8", "replace"))
                position = end + 2
            else:
                raise RedisUnavailable(f"unexpected reply type byte {bytes([kind])!r} from Redis")
            # A finished value completes its array, which may complete the one around it.
            while opened:
                items, count = opened[-1]
                items.append(value)
                if len(items) < count:
                    break
                opened.pop()
                value = items
            else:
                append(value)
        self._position = position


# Past this many parsed bytes the buffer is compacted, so a huge tick holds little at once.
COMPACT_AFTER = 1 << 20


def parse_replies(data: bytes) -> Tuple[List[object], bool]:
    """The complete replies in `data`, and whether an incomplete one follows them."""
    parser = ReplyParser()
    replies: List[object] = []
    parser.feed(data, replies)
    return replies, parser.pending


def receive(sock: socket.socket) -> bytes:
    """What the socket has now, at most RECEIVE_SIZE bytes (its timeout bounds the wait)."""
    try:
        chunk = sock.recv(RECEIVE_SIZE)
    except socket.timeout as error:
        raise RedisTimeout("timed out reading") from error
    except OSError as error:
        raise RedisUnavailable("lost the connection") from error
    if not chunk:
        raise RedisUnavailable("the server closed the connection")
    return chunk
