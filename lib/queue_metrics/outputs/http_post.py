"""The little HTTP/1.1 the OTLP output needs: POST a body, read the answer's status, and keep the
connection for the tick's next request.

Our own, not `http.client`: that imports the `email` package to parse headers we barely read, 1.6
MB of the web dyno's memory (BENCHMARKS.md, "What each dependency costs"). Answers are read as
OTLP receivers send them: a status line, headers, and a body of known length (`Content-Length`).
An answer of another shape (chunked, or ended by closing) is still read for its status, then the
connection is closed rather than reused.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Mapping, NamedTuple, Optional, Tuple

if TYPE_CHECKING:
    import ssl

# What we read of an answer: its headers, and a body we then throw away.
MAX_HEAD_BYTES = 65536
MAX_BODY_BYTES = 65536
RECEIVE_SIZE = 65536
DEFAULT_PORTS = {"http": 80, "https": 443}
# Answers that never have a body (RFC 9110).
NO_BODY = (204, 304)


class MalformedAnswer(ValueError):
    """What came back is not an HTTP/1.x answer."""


class Answer(NamedTuple):
    status: int
    reason: str
    # False: the server closes the connection, or its answer could not be read to the end.
    reusable: bool


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

    def post(self, target: str, headers: Mapping[str, str], body: bytes, timeout: float) -> Answer:
        """Sends the request and reads the answer, each socket wait bounded by `timeout`."""
        sock = self.sock
        if sock is None:
            raise ConnectionResetError("the connection is closed")
        sock.settimeout(timeout)
        lines = [f"POST {target} HTTP/1.1", f"Host: {self.host_header}", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        received = b""
        while b"\r\n\r\n" not in received:
            if len(received) > MAX_HEAD_BYTES:
                raise MalformedAnswer("an answer whose headers never end")
            chunk = sock.recv(RECEIVE_SIZE)
            if not chunk:
                raise ConnectionResetError("the server closed the connection without an answer")
            received += chunk
        head, _, rest = received.partition(b"\r\n\r\n")
        status_line, *field_lines = head.decode("latin-1").split("\r\n")
        status, reason, http11 = parse_status_line(status_line)
        fields = {}
        for line in field_lines:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        reusable = http11 and "close" not in fields.get("connection", "").lower()
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

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


def parse_status_line(line: str) -> Tuple[int, str, bool]:
    """(status, reason, is HTTP/1.1) from `HTTP/1.1 200 OK`."""
    version, _, rest = line.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise MalformedAnswer(f"an answer that is not HTTP/1.x ({line[:40]!r})")
    return int(code), reason.strip(), version == "HTTP/1.1"
