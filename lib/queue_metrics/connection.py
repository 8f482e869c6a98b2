"""The one connection the collector reads through: a socket, TLS when the URL says so, AUTH and
SELECT, and pipelined round trips of packed commands.

Our own, not redis-py's: the loop lives inside a customer's web dyno, and importing redis-py
costs more memory and start-up than the whole collector (BENCHMARKS.md, "The `run` process"), for
a connection that needs a hundred lines. Replies are parsed by `resp`.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any, List, NamedTuple, Optional, Sequence
from urllib.parse import parse_qs, unquote, urlsplit

from queue_metrics.config import Settings
from queue_metrics.errors import RedisTimeout, RedisUnavailable, ReplyError, describe_redis_error
from queue_metrics.redis_url import describe_redis_url
from queue_metrics.resp import pack_commands, read_replies

DEFAULT_PORT = 6379


class Address(NamedTuple):
    """Where and how to connect, from a Redis URL (already checked by `redis_url`)."""

    host: Optional[str]
    port: int
    path: Optional[str]  # a unix socket
    tls: bool
    username: Optional[str]
    password: Optional[str]
    database: int


def parse_address(url: str) -> Address:
    parts = urlsplit(url)
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if parts.scheme == "unix":
        database = int(parse_qs(parts.query).get("db", ["0"])[0] or 0)
        return Address(None, 0, parts.path, False, username, password, database)
    database = int(parts.path.lstrip("/") or 0)
    return Address(
        parts.hostname, parts.port or DEFAULT_PORT, None, parts.scheme == "rediss", username, password, database
    )


class RedisConnection:
    """Connects on first use and after any failure; every wait is bounded by the timeout."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.address = parse_address(settings.redis_url)
        self._sock: Optional[socket.socket] = None

    def round_trip(self, packed: Sequence[bytes], count: int) -> List[Any]:
        """Send the packed commands in one write and read their `count` replies.

        A command that fails comes back as a ReplyError in its place; a connection that is not
        authenticated (NOAUTH), a lost connection or a timeout raise, and the next call starts
        afresh.
        """
        try:
            sock = self._sock or self._connect()
            sock.sendall(b"".join(packed))
            values = read_replies(sock, count)
        except BaseException:
            # Whatever was left unread would answer the next commands: start afresh.
            self.close()
            raise
        if values and isinstance(values[0], ReplyError) and values[0].code == "NOAUTH":
            raise values[0]
        return values

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None

    def _connect(self) -> socket.socket:
        address, timeout = self.address, self.settings.timeout
        try:
            if address.path is not None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                sock.connect(address.path)
            else:
                sock = socket.create_connection((address.host, address.port), timeout=timeout)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if address.tls:
                    sock = self._tls_context().wrap_socket(sock, server_hostname=address.host)
        except socket.timeout as error:
            raise RedisTimeout("timed out connecting") from error
        except OSError as error:
            raise RedisUnavailable("cannot connect") from error
        sock.settimeout(timeout)
        self._sock = sock
        handshake = []
        if address.password is not None:
            credentials = (address.username, address.password) if address.username else (address.password,)
            handshake.append(("AUTH", *credentials))
        if address.database:
            handshake.append(("SELECT", address.database))
        if handshake:
            replies = self.round_trip([pack_commands(handshake)], len(handshake))
            failed = next((reply for reply in replies if isinstance(reply, ReplyError)), None)
            if failed is not None:
                self.close()
                raise failed
        return sock

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.settings.tls_ca_file)
        if not self.settings.tls_verify:
            # Heroku Key-Value Store presents self-signed certificates; Heroku's guidance for
            # Python clients is to skip verification (the connection is still encrypted).
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


def connect(settings: Settings) -> RedisConnection:
    """A connection that fails fast: bounded timeouts, no retries (the next tick is the retry)."""
    return RedisConnection(settings)


def round_trip(connection: RedisConnection, packed: Sequence[bytes], count: int) -> List[Any]:
    return connection.round_trip(packed, count)


def describe_error(error: BaseException, settings: Settings) -> str:
    """One line for a failed tick: where, and what went wrong, without any secret."""
    try:
        has_password = parse_address(settings.redis_url).password is not None
    except ValueError:
        has_password = False
    return describe_redis_error(
        error,
        describe_redis_url(settings.redis_url),
        settings.timeout,
        settings.redis_url.startswith("rediss://"),
        has_password,
    )
