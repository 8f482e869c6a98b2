"""The little HTTP/1.1 the collector needs: the OTLP output's POST and the RabbitMQ management
API's GET, each on one kept connection (the tick's next request, or the next tick's, reuses it).

Our own, not `http.client`: that imports the `email` package to parse headers we barely read, 1.6
MB of the web dyno's memory (BENCHMARKS.md, "What each dependency costs"). Answers are read as
the servers we talk to send them: a status line, headers, and a body of known length
(`Content-Length`); a GET also reads a chunked body (`Transfer-Encoding: chunked`). An answer of
another shape (ended by closing, or longer than the caller reads) is still read for its status,
then the connection is closed rather than reused.
"""

from __future__ import annotations

import socket
import time
from typing import TYPE_CHECKING, Dict, Mapping, NamedTuple, Optional, Tuple

if TYPE_CHECKING:
    import ssl

# What we read of an answer: its headers, and (POST) a body we then throw away.
MAX_HEAD_BYTES = 65536
MAX_BODY_BYTES = 65536
RECEIVE_SIZE = 65536
DEFAULT_PORTS = {"http": 80, "https": 443}
# Answers that never have a body (RFC 9110).
NO_BODY = (204, 304)
# A chunk-size line longer than this is no chunk-size line.
MAX_CHUNK_LINE = 256


class MalformedAnswer(ValueError):
    """What came back is not an HTTP/1.x answer."""


class BodyTooLarge(ValueError):
    """An answer's body is longer than the caller reads."""


class Answer(NamedTuple):
    status: int
    reason: str
    # False: the server closes the connection, or its answer could not be read to the end.
    reusable: bool
    # The header fields, names in lower case (only what `get` reads; empty for `post`).
    fields: Mapping[str, str] = {}
    # The body as sent (still gzip-compressed when `Content-Encoding: gzip`); empty for `post`.
    body: bytes = b""


class HttpConnection:
    """One connection to one host, opened at once (TLS when a context is given)."""

    def __init__(
        self, host: str, port: Optional[int], scheme: str, timeout: float, tls: Optional[ssl.SSLContext] = None
    ) -> None:
        port = port or DEFAULT_PORTS[scheme]
        shown = f"[{host}]" if ":" in host else host
        self.host_header = shown if port == DEFAULT_PORTS[scheme] else f"{shown}:{port}"
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:
                sock = tls.wrap_socket(sock, server_hostname=host)
        except BaseException:
            sock.close()
            raise
        self.sock: Optional[socket.socket] = sock
        self._deadline: Optional[float] = None

    def post(self, target: str, headers: Mapping[str, str], body: bytes, timeout: float) -> Answer:
        """Sends the request and reads the answer's status, each socket wait bounded by `timeout`;
        the body is read (up to MAX_BODY_BYTES, of known length) only to keep the connection."""
        sock = self._socket(timeout, None)
        lines = [f"POST {target} HTTP/1.1", f"Host: {self.host_header}", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        status, reason, reusable, fields, rest = self._head(sock)
        if status in NO_BODY or 100 <= status < 200:
            return Answer(status, reason, reusable and not rest)
        length = fields.get("content-length", "")
        if "transfer-encoding" in fields or not length.isdigit() or int(length) > MAX_BODY_BYTES:
            return Answer(status, reason, False)
        remaining = int(length) - len(rest)
        while remaining > 0:
            chunk = sock.recv(min(remaining, RECEIVE_SIZE))
            if not chunk:
                return Answer(status, reason, False)
            remaining -= len(chunk)
        return Answer(status, reason, reusable and remaining == 0)

    def get(self, target: str, headers: Mapping[str, str], deadline: float, max_body: int) -> Answer:
        """Sends a GET and reads the whole answer by `deadline` (monotonic), whatever the server
        does: socket.timeout past it. A body longer than `max_body` raises BodyTooLarge."""
        sock = self._socket(deadline - time.monotonic(), deadline)
        lines = [f"GET {target} HTTP/1.1", f"Host: {self.host_header}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        status, reason, reusable, fields, rest = self._head(sock)
        if status in NO_BODY or 100 <= status < 200:
            return Answer(status, reason, reusable and not rest, fields)
        if "chunked" in fields.get("transfer-encoding", "").lower():
            body, rest = self._chunked(sock, rest, max_body)
            return Answer(status, reason, reusable and not rest, fields, body)
        length = fields.get("content-length", "")
        if not length.isdigit():
            # Ended by closing: read to the end, and the connection is done.
            body = self._until_closed(sock, rest, max_body)
            return Answer(status, reason, False, fields, body)
        if int(length) > max_body:
            raise BodyTooLarge(f"an answer of {int(length)} bytes (at most {max_body} are read)")
        body = self._exactly(sock, rest, int(length))
        if len(body) < int(length):
            raise ConnectionResetError("the server closed the connection in the middle of its answer")
        return Answer(status, reason, reusable and len(body) == int(length), fields, body[: int(length)])

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def _socket(self, timeout: float, deadline: Optional[float]) -> socket.socket:
        sock = self.sock
        if sock is None:
            raise ConnectionResetError("the connection is closed")
        if timeout <= 0:
            raise socket.timeout("timed out")
        sock.settimeout(timeout)
        self._deadline = deadline
        return sock

    def _recv(self, sock: socket.socket, size: int) -> bytes:
        """One read; with a deadline, each wait is bounded by what is left of it."""
        if self._deadline is not None:
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("timed out")
            sock.settimeout(left)
        return sock.recv(size)

    def _head(self, sock: socket.socket) -> Tuple[int, str, bool, Dict[str, str], bytes]:
        """(status, reason, reusable as far as the head says, fields, what came after the head)."""
        received = b""
        while b"\r\n\r\n" not in received:
            if len(received) > MAX_HEAD_BYTES:
                raise MalformedAnswer("an answer whose headers never end")
            chunk = self._recv(sock, RECEIVE_SIZE)
            if not chunk:
                raise ConnectionResetError("the server closed the connection without an answer")
            received += chunk
        head, _, rest = received.partition(b"\r\n\r\n")
        status_line, *field_lines = head.decode("latin-1").split("\r\n")
        status, reason, http11 = parse_status_line(status_line)
        fields: Dict[str, str] = {}
        for line in field_lines:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        reusable = http11 and "close" not in fields.get("connection", "").lower()
        return status, reason, reusable, fields, rest

    def _exactly(self, sock: socket.socket, start: bytes, length: int) -> bytes:
        """`length` bytes, `start` first; fewer when the server closes early."""
        parts, have = [start], len(start)
        while have < length:
            chunk = self._recv(sock, min(length - have, RECEIVE_SIZE))
            if not chunk:
                break
            parts.append(chunk)
            have += len(chunk)
        return b"".join(parts)

    def _until_closed(self, sock: socket.socket, start: bytes, max_body: int) -> bytes:
        parts, have = [start], len(start)
        while True:
            chunk = self._recv(sock, RECEIVE_SIZE)
            if not chunk:
                return b"".join(parts)
            have += len(chunk)
            if have > max_body:
                raise BodyTooLarge(f"an answer of more than {max_body} bytes")
            parts.append(chunk)

    def _chunked(self, sock: socket.socket, buffer: bytes, max_body: int) -> Tuple[bytes, bytes]:
        """A chunked body (RFC 9112 7.1), its trailer fields skipped; (body, bytes after it)."""
        parts, have = [], 0
        while True:
            line, buffer = self._line(sock, buffer, MAX_CHUNK_LINE, "a chunked answer with a malformed chunk size")
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise MalformedAnswer("a chunked answer with a malformed chunk size") from None
            if size == 0:
                break
            have += size
            if have > max_body:
                raise BodyTooLarge(f"an answer of more than {max_body} bytes")
            while len(buffer) < size + 2:
                buffer += self._more(sock)
            parts.append(buffer[:size])
            buffer = buffer[size + 2 :]
        # The trailer section: field lines, then an empty line.
        while True:
            line, buffer = self._line(sock, buffer, MAX_HEAD_BYTES, "a chunked answer whose trailer never ends")
            if not line:
                return b"".join(parts), buffer

    def _line(self, sock: socket.socket, buffer: bytes, limit: int, malformed: str) -> Tuple[bytes, bytes]:
        """The next CRLF-ended line of `buffer`, read on as needed; (line, the bytes after it)."""
        while b"\r\n" not in buffer:
            if len(buffer) > limit:
                raise MalformedAnswer(malformed)
            buffer += self._more(sock)
        line, _, buffer = buffer.partition(b"\r\n")
        return line, buffer

    def _more(self, sock: socket.socket) -> bytes:
        chunk = self._recv(sock, RECEIVE_SIZE)
        if not chunk:
            raise ConnectionResetError("the server closed the connection in the middle of its answer")
        return chunk


def parse_status_line(line: str) -> Tuple[int, str, bool]:
    """(status, reason, is HTTP/1.1) from `HTTP/1.1 200 OK`."""
    version, _, rest = line.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise MalformedAnswer(f"an answer that is not HTTP/1.x ({line[:40]!r})")
    return int(code), reason.strip(), version == "HTTP/1.1"


def gunzipped(body: bytes, max_size: int) -> bytes:
    """A gzip body decompressed, at most `max_size` bytes of it (BodyTooLarge beyond); zlib is
    imported only here, by a datastore that asked for gzip."""
    import zlib

    decompressor = zlib.decompressobj(wbits=31)  # 16 + 15: the gzip wrapper
    try:
        data = decompressor.decompress(body, max_size)
    except zlib.error as error:
        raise MalformedAnswer(f"a gzip body that does not decompress ({error})") from None
    if decompressor.unconsumed_tail:
        raise BodyTooLarge(f"an answer of more than {max_size} bytes once decompressed")
    return data
