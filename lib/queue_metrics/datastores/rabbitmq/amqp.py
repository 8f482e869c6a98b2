"""An AMQP 0-9-1 client that does one thing: passive `queue.declare`, for a broker without the
management API (`reader.py` falls back to it).

A passive declare creates nothing, takes no message and changes no counter: the broker answers
with the queue's ready messages and consumers (`queue.declare-ok`), or closes the channel with
404 when there is no such queue. Why our own client and not py-amqp (Celery's): it pipelines
every declare of a tick in one write and reads the answers in one round trip, where py-amqp
waits for each (one round trip per queue), and it costs the dyno a fraction of py-amqp's
imports (BENCHMARKS.md, "RabbitMQ without its management API").

One round trip whatever is missing: each queue is declared on a channel of its own, so the 404 of
a missing queue closes only that channel (the server drops every later method on a closed
channel until it gets `close-ok`). The `close-ok` is sent at once, and the channel is opened
again in the same write as its next declare.

Wire format (AMQP 0-9-1 spec, section 4.2.3): a frame is type (1 byte), channel (2), payload
size (4), payload, 0xCE. A method payload is class (2), method (2), then its arguments.

Standard library only; `ssl` is imported by the caller that makes the TLS context.
"""

from __future__ import annotations

import socket
import struct
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

from queue_metrics import __version__
from queue_metrics.errors import AmqpClosed, AmqpMalformed

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_METHOD = 1
FRAME_HEARTBEAT = 8
FRAME_END = b"\xce"
FRAME_HEAD = struct.Struct(">BHI")

CONNECTION_START = (10, 10)
CONNECTION_START_OK = (10, 11)
CONNECTION_TUNE = (10, 30)
CONNECTION_TUNE_OK = (10, 31)
CONNECTION_OPEN = (10, 40)
CONNECTION_OPEN_OK = (10, 41)
CONNECTION_CLOSE = (10, 50)
CONNECTION_CLOSE_OK = (10, 51)
CHANNEL_OPEN = (20, 10)
CHANNEL_OPEN_OK = (20, 11)
CHANNEL_CLOSE = (20, 40)
CHANNEL_CLOSE_OK = (20, 41)
QUEUE_DECLARE = (50, 10)
QUEUE_DECLARE_OK = (50, 11)

# queue.declare's bits: passive, durable, exclusive, auto-delete, no-wait. Only `passive` is set:
# the server then only checks that the queue exists; `no-wait` would make it answer nothing.
DECLARE_PASSIVE = 0x01
# What we offer in tune-ok when the server sets no limit (0).
CHANNEL_MAX = 2047
FRAME_MAX = 131072
# Bytes of one frame we accept from the server before calling it malformed.
MAX_FRAME = 1 << 20
# Only this capability: the server then says why a login failed (a `connection.close` with 403)
# instead of closing the socket. No `connection.blocked`: we publish nothing to be blocked for.
CAPABILITIES = {"authentication_failure_close": True}


class Declared(NamedTuple):
    """A queue's passive declare: its ready messages and consumers."""

    queue: str
    messages: int
    consumers: int


class Refused(NamedTuple):
    """The server closed the queue's channel instead (404 NOT_FOUND: no such queue; 403; 405)."""

    queue: str
    code: int
    text: str


Declaration = Union[Declared, Refused]


def shortstr(text: str) -> bytes:
    raw = text.encode("utf-8", "surrogateescape")
    if len(raw) > 255:
        raise ValueError("longer than 255 bytes")
    return bytes((len(raw),)) + raw


def longstr(raw: bytes) -> bytes:
    return struct.pack(">I", len(raw)) + raw


def table(fields: Dict[str, Any]) -> bytes:
    """A field table of strings, booleans and tables (all that client-properties needs)."""
    body = b""
    for name, value in fields.items():
        if isinstance(value, bool):
            body += shortstr(name) + b"t" + bytes((int(value),))
        elif isinstance(value, dict):
            body += shortstr(name) + b"F" + table(value)
        else:
            body += shortstr(name) + b"S" + longstr(str(value).encode())
    return longstr(body)


def method_frame(channel: int, method: Tuple[int, int], arguments: bytes = b"") -> bytes:
    payload = struct.pack(">HH", *method) + arguments
    return FRAME_HEAD.pack(FRAME_METHOD, channel, len(payload)) + payload + FRAME_END


def declare_frames(channel: int, queue: str, opening: bool) -> bytes:
    """The frames of one queue's declare: `channel.open` first when the channel is not open."""
    frames = method_frame(channel, CHANNEL_OPEN, shortstr("")) if opening else b""
    arguments = struct.pack(">H", 0) + shortstr(queue) + bytes((DECLARE_PASSIVE,)) + struct.pack(">I", 0)
    return frames + method_frame(channel, QUEUE_DECLARE, arguments)


class Reader:
    """Reads a method payload's fields in order."""

    __slots__ = ("data", "at")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, size: int) -> bytes:
        if self.at + size > len(self.data):
            raise AmqpMalformed("a method frame shorter than its arguments")
        part = self.data[self.at : self.at + size]
        self.at += size
        return part

    def octet(self) -> int:
        return self.take(1)[0]

    def short(self) -> int:
        return int(struct.unpack(">H", self.take(2))[0])

    def long(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def shortstr(self) -> str:
        return self.take(self.octet()).decode("utf-8", "surrogateescape")

    def longstr(self) -> bytes:
        return self.take(self.long())


def close_reason(arguments: Reader) -> Tuple[int, str]:
    """A `connection.close`'s or `channel.close`'s reply code and text."""
    code = arguments.short()
    return code, arguments.shortstr()


class AmqpConnection:
    """One AMQP connection to one virtual host, kept open between ticks. Not thread-safe."""

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        password: str,
        vhost: str,
        timeout: float,
        tls: Any = None,
        heartbeat: Optional[int] = None,
    ) -> None:
        self._buffer = b""
        self._open_channels: set = set()
        raw = socket.create_connection((host, port), timeout=timeout)
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._socket = tls.wrap_socket(raw, server_hostname=host) if tls is not None else raw
        except BaseException:
            raw.close()
            raise
        try:
            self._handshake(user, password, vhost, heartbeat)
        except BaseException:
            self._socket.close()
            raise

    # -- the handshake (spec 2.2.4): start, start-ok, tune, tune-ok, open, open-ok

    def _handshake(self, user: str, password: str, vhost: str, heartbeat: Optional[int]) -> None:
        self._socket.sendall(PROTOCOL_HEADER)
        arguments = self._expect(0, CONNECTION_START)
        arguments.take(2)  # version-major, version-minor
        arguments.longstr()  # server-properties (a table, skipped whole)
        mechanisms = arguments.longstr().split()
        if b"PLAIN" not in mechanisms:
            raise AmqpMalformed("the server offers no PLAIN login")
        properties = table(
            {"product": "queue-metrics", "version": __version__, "platform": "Python", "capabilities": CAPABILITIES}
        )
        response = longstr(b"\0" + user.encode() + b"\0" + password.encode())
        self._send(method_frame(0, CONNECTION_START_OK, properties + shortstr("PLAIN") + response + shortstr("en_US")))
        arguments = self._expect(0, CONNECTION_TUNE)
        channel_max, frame_max, server_heartbeat = arguments.short(), arguments.long(), arguments.short()
        self.channel_max = min(channel_max or CHANNEL_MAX, CHANNEL_MAX)
        # The server's heartbeat, or a longer one when the caller's ticks are further apart: the
        # declares of each tick are the traffic that keeps the connection alive.
        beat = server_heartbeat if heartbeat is None or server_heartbeat == 0 else max(server_heartbeat, heartbeat)
        tune = struct.pack(">HIH", self.channel_max, min(frame_max or FRAME_MAX, FRAME_MAX), beat)
        self._send(method_frame(0, CONNECTION_TUNE_OK, tune))
        self._send(method_frame(0, CONNECTION_OPEN, shortstr(vhost) + shortstr("") + b"\0"))
        self._expect(0, CONNECTION_OPEN_OK)

    # -- the one thing it does

    def declare(self, queues: Sequence[str]) -> List[Declaration]:
        """Each queue's passive declare, all sent in one write and read in one round trip."""
        if len(queues) >= self.channel_max:
            raise AmqpMalformed(f"{len(queues)} queues, more than the server's {self.channel_max - 1} channels")
        self._send(
            b"".join(
                declare_frames(channel, queue, channel not in self._open_channels)
                for channel, queue in enumerate(queues, start=1)
            )
        )
        results: Dict[int, Declaration] = {}
        replies: List[bytes] = []
        while len(results) < len(queues):
            channel, method, arguments = self._method()
            if channel == 0 and method == CONNECTION_CLOSE:
                self._connection_closed(arguments)
            if not 1 <= channel <= len(queues):
                continue
            queue = queues[channel - 1]
            if method == CHANNEL_OPEN_OK:
                self._open_channels.add(channel)
            elif method == QUEUE_DECLARE_OK:
                arguments.shortstr()
                results[channel] = Declared(queue, arguments.long(), arguments.long())
            elif method == CHANNEL_CLOSE:
                code, text = close_reason(arguments)
                self._open_channels.discard(channel)
                results[channel] = Refused(queue, code, text)
                replies.append(method_frame(channel, CHANNEL_CLOSE_OK))
        if replies:
            # No answer comes to close-ok: the channel can be opened again at the next tick.
            self._send(b"".join(replies))
        return [results[channel] for channel in range(1, len(queues) + 1)]

    def close(self) -> None:
        """Says goodbye (`connection.close`, not waiting for `close-ok`) and closes the socket."""
        try:
            self._send(method_frame(0, CONNECTION_CLOSE, struct.pack(">H", 200) + shortstr("") + b"\0\0\0\0"))
        except OSError:
            pass
        finally:
            self._socket.close()

    def set_timeout(self, seconds: float) -> None:
        self._socket.settimeout(max(0.001, seconds))

    # -- frames

    def _send(self, data: bytes) -> None:
        self._socket.sendall(data)

    def _expect(self, channel: int, method: Tuple[int, int]) -> Reader:
        while True:
            got_channel, got_method, arguments = self._method()
            if got_channel == 0 and got_method == CONNECTION_CLOSE:
                self._connection_closed(arguments)
            if (got_channel, got_method) == (channel, method):
                return arguments

    def _connection_closed(self, arguments: Reader) -> None:
        code, text = close_reason(arguments)
        try:
            self._send(method_frame(0, CONNECTION_CLOSE_OK))
        except OSError:
            pass
        raise AmqpClosed(code, text)

    def _method(self) -> Tuple[int, Tuple[int, int], Reader]:
        """The next method frame (heartbeats and content frames skipped)."""
        while True:
            kind, channel, payload = self._frame()
            if kind != FRAME_METHOD:
                continue
            if len(payload) < 4:
                raise AmqpMalformed("a method frame without its method")
            class_id, method_id = struct.unpack(">HH", payload[:4])
            return channel, (class_id, method_id), Reader(payload[4:])

    def _frame(self) -> Tuple[int, int, bytes]:
        head = self._read(FRAME_HEAD.size)
        if head.startswith(b"AMQP"):
            # The server's own protocol header: it speaks another AMQP version.
            raise AmqpMalformed("the server does not speak AMQP 0-9-1")
        kind, channel, size = FRAME_HEAD.unpack(head)
        if size > MAX_FRAME:
            raise AmqpMalformed(f"a frame of {size} bytes")
        payload = self._read(size + 1)
        if payload[-1:] != FRAME_END:
            raise AmqpMalformed("a frame without its end marker")
        return kind, channel, payload[:-1]

    def _read(self, size: int) -> bytes:
        while len(self._buffer) < size:
            chunk = self._socket.recv(65536)
            if not chunk:
                raise ConnectionResetError("the server closed the connection")
            self._buffer += chunk
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data
