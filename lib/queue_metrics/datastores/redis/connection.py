"""The one connection the collector reads through: a socket, TLS when the URL says so, AUTH and
SELECT, and pipelined round trips of packed commands.

Our own, not redis-py's: the loop lives inside a customer's web dyno, and importing redis-py
costs more memory and start-up than the whole collector (BENCHMARKS.md, "The `run` process"), for
a connection that needs a hundred lines. Replies are parsed by `resp`.
"""

from __future__ import annotations

import socket
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Deque, List, NamedTuple, Optional, Sequence, Tuple
from urllib.parse import parse_qs, unquote, urlsplit

from queue_metrics.config import Settings
from queue_metrics.datastores.redis.resp import ReplyParser, pack_commands, receive
from queue_metrics.datastores.redis.url import describe_redis_url, passwords_of
from queue_metrics.errors import (
    MAX_CLIENTS_REPLY,
    ClosedUnanswered,
    RedisTimeout,
    RedisUnavailable,
    ReplyError,
    ServerClosed,
    describe_redis_error,
)
from queue_metrics.systems.contract import Batch

if TYPE_CHECKING:
    import ssl

DEFAULT_PORT = 6379
# Replies awaited at once in a stream: enough to keep a network 1 ms each way busy while the first
# half comes back (the window is refilled by halves; with 2,048 a tick of 1,000 Celery or RQ
# queues through such a network waited half again as long), few enough that a tick holds some
# hundreds of queues' replies at a time, not ten thousand.
WINDOW = 4096
# Bytes of commands gathered before a write.
SEND_SIZE = 1 << 16
# A stream that got replies it never asked for: no close, so no last words to look for.
MORE_REPLIES = "Redis sent more replies than commands"


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
    # The path's number, else `?db=`, as redis-py reads them (checked by redis_url).
    query_db = parse_qs(parts.query).get("db", ["0"])[0] or "0"
    if parts.scheme == "unix":
        return Address(None, 0, parts.path, False, username, password, int(query_db))
    database = int(parts.path.lstrip("/") or query_db)
    return Address(
        parts.hostname, parts.port or DEFAULT_PORT, None, parts.scheme == "rediss", username, password, database
    )


class RedisConnection:
    """Connects on first use and after any failure; every wait is bounded by the timeout."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.address = parse_address(settings.redis_url)
        self._sock: Optional[socket.socket] = None
        # Whether the server has sent anything on this connection; None: not connected. A TLS
        # port given plain text closes the connection before a word (see ClosedUnanswered).
        self._heard: Optional[bool] = None
        # True until the connection's first reply is in: a refusal comes in its place.
        self._fresh = False

    def round_trip(self, packed: Sequence[bytes], count: int, deadline: Optional[float] = None) -> List[Any]:
        """Send the packed commands and read their `count` replies (see `stream`)."""
        pending: Deque[Batch] = deque([Batch(b"".join(packed), count)])
        values: List[Any] = []
        self.stream(lambda: pending.popleft() if pending else None, values.extend, deadline=deadline)
        return values

    def stream(
        self,
        next_batch: Callable[[], Optional[Batch]],
        deliver: Callable[[List[Any]], None],
        window: int = WINDOW,
        deadline: Optional[float] = None,
    ) -> None:
        """Send the batches `next_batch` gives, pipelined, and hand each one's replies to
        `deliver`, in the order they were sent, as soon as they have all arrived.

        `next_batch` returns None when it has nothing more for now; `deliver` may give it more (a
        follow-up read), and the stream ends when it has nothing and every reply is in. At most
        `window` replies are awaited at once: a tick of ten thousand queues is still written
        without waiting for each answer, but only the replies in flight are ever held, not every
        reply of the tick (memory in the web dyno), and Redis gets the commands a slice at a
        time. A command that fails comes back as a ReplyError in its place; a connection that is
        not authenticated (NOAUTH), a lost connection or a timeout raise, and the next call
        starts afresh. A connection the server refused (`maxclients`), or closed after an error
        reply of its own, raises ServerClosed with the server's words.

        `deadline` (monotonic) cuts every wait short at that time, as a timeout: the keyspace
        walk between ticks must never hold the next tick up, whatever Redis does.
        """
        parser = ReplyParser()
        replies: List[Any] = []
        sock: Optional[socket.socket] = None
        try:
            sock = self._sock or self._connect(deadline)
            if deadline is not None:
                sock.settimeout(_wait_before(deadline, self.settings.timeout))
            awaited: Deque[int] = deque()  # reply counts of the batches sent, not yet delivered
            in_flight = 0
            first = True
            while True:
                outgoing: List[bytes] = []
                size = 0
                # Refilled only once half the window is in, a slice at a time: topping it up after
                # every reply would send Redis a write (and cost both sides a system call) per batch.
                refill = in_flight <= window // 2
                while refill and in_flight < window:
                    step = next_batch()
                    if step is None:
                        break
                    outgoing.append(step.packed)
                    awaited.append(step.replies)
                    in_flight += step.replies
                    size += len(step.packed)
                    if size >= SEND_SIZE:
                        _send(sock, outgoing)
                        outgoing, size = [], 0
                if outgoing:
                    _send(sock, outgoing)
                if not awaited:
                    break
                if len(replies) < awaited[0]:
                    if deadline is not None:
                        sock.settimeout(_wait_before(deadline, self.settings.timeout))
                    parser.feed(receive(sock), replies)
                    self._heard = True
                delivered = 0
                while awaited and len(replies) - delivered >= awaited[0]:
                    count = awaited.popleft()
                    values = replies[delivered : delivered + count]
                    delivered += count
                    in_flight -= count
                    if first and values and isinstance(values[0], ReplyError):
                        if values[0].code == "NOAUTH":
                            raise values[0]
                        if self._fresh and (values[0].text == MAX_CLIENTS_REPLY or values[0].code == "DENIED"):
                            # Not an answer: the server refused the connection on accepting it
                            # (maxclients, protected mode) and is closing it.
                            raise ServerClosed(values[0].text)
                    first = False
                    self._fresh = False
                    deliver(values)
                del replies[:delivered]
            if replies or parser.pending:
                raise RedisUnavailable(MORE_REPLIES)
            if deadline is not None:
                sock.settimeout(self.settings.timeout)
        except (RedisTimeout, ServerClosed, ClosedUnanswered):
            self.close()
            raise
        except RedisUnavailable as error:
            # The server may have said why before it closed: that, not the close, is the news.
            words = (
                None
                if sock is None or error.args == (MORE_REPLIES,)
                else _last_words(sock, parser, replies, self._fresh)
            )
            unanswered = self._heard is False
            self.close()
            if words is not None:
                raise ServerClosed(words) from error
            if unanswered and not self.address.tls and self.address.path is None:
                raise ClosedUnanswered(str(error)) from error
            raise
        except BaseException:
            # Whatever was left unread would answer the next commands: start afresh.
            self.close()
            raise

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None
        self._heard = None

    def _connect(self, deadline: Optional[float] = None) -> socket.socket:
        address = self.address
        timeout = self.settings.timeout if deadline is None else _wait_before(deadline, self.settings.timeout)
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
        self._sock, self._heard = sock, False
        self._fresh = True
        if address.password is not None:
            self._handshake(
                ("AUTH", address.username, address.password) if address.username else ("AUTH", address.password),
                deadline,
                fallback=("AUTH", address.password),
            )
        if address.database:
            self._handshake(("SELECT", address.database), deadline)
        return sock

    def _handshake(
        self,
        command: Tuple[object, ...],
        deadline: Optional[float],
        fallback: Optional[Tuple[object, ...]] = None,
    ) -> None:
        """One command of the connection's set-up, within the call's deadline (each round trip
        of it would otherwise get the time left at the start); its error reply fails the
        connection."""
        (reply,) = self.round_trip([pack_commands([command])], 1, deadline)
        if (
            isinstance(reply, ReplyError)
            and fallback is not None
            and fallback != command
            and "wrong number of arguments" in reply.text.lower()
        ):
            # Redis < 6 knows no user names: old URLs carry one (`redis://h:password@...`) that
            # its AUTH takes as an extra argument. Do as redis-py does: the password alone.
            (reply,) = self.round_trip([pack_commands([fallback])], 1, deadline)
        if isinstance(reply, ReplyError):
            self.close()
            raise reply

    def _tls_context(self) -> ssl.SSLContext:
        # Imported here: `ssl` loads OpenSSL (megabytes of the dyno's memory), which only a
        # rediss:// URL needs.
        import ssl

        if self.settings.tls_verify:
            return ssl.create_default_context(cafile=self.settings.tls_ca_file)
        # Heroku Key-Value Store presents self-signed certificates; Heroku's guidance for
        # Python clients is to skip verification (the connection is still encrypted). A
        # context that verifies nothing loads no CA store: that would cost megabytes for nothing.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context


# Bytes read at most, without waiting, for the server's last words once the connection failed.
LAST_WORDS_SIZE = 4096


# Error codes that, as a connection's very first reply, are the server refusing it: a proxy's or
# the server's `ERR ...`, protected mode's `DENIED ...`.
REFUSAL_CODES = ("ERR", "DENIED")


def _last_words(sock: socket.socket, parser: ReplyParser, replies: List[Any], fresh: bool) -> Optional[str]:
    """The error reply Redis sent as its reason before it closed the connection, if any: what it
    had sent and we had not read yet is taken without waiting (after a failed send it may still
    be there). A reason is the reply of a server at `maxclients`, or a generic error (`ERR`,
    `DENIED`) that is the connection's first reply (`fresh`: no reply was delivered on it yet).
    Any other error answered one command of a batch (an unknown LPOS, a WRONGTYPE): the
    connection was lost after it, not because of it."""
    try:
        sock.settimeout(0.0)
        chunk = sock.recv(LAST_WORDS_SIZE)
        if chunk:
            parser.feed(chunk, replies)
    except (OSError, ValueError, RedisUnavailable):
        pass  # nothing more to read, or nothing readable: what came before is all there is
    last = replies[-1] if replies else None
    if not isinstance(last, ReplyError):
        return None
    if last.text == MAX_CLIENTS_REPLY or (fresh and len(replies) == 1 and last.code in REFUSAL_CODES):
        return last.text
    return None


def _wait_before(deadline: float, timeout: float) -> float:
    """The longest a wait may take: the timeout, or less to end by `deadline` (monotonic)."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise RedisTimeout("no time left before the deadline")
    return min(timeout, left)


def _send(sock: socket.socket, packed: List[bytes]) -> None:
    try:
        sock.sendall(b"".join(packed))
    except socket.timeout as error:
        raise RedisTimeout("timed out sending") from error
    except OSError as error:
        raise RedisUnavailable("lost the connection") from error


def connect(settings: Settings) -> RedisConnection:
    """A connection that fails fast: bounded timeouts, no retries (the next tick is the retry)."""
    return RedisConnection(settings)


def round_trip(
    connection: RedisConnection, packed: Sequence[bytes], count: int, deadline: Optional[float] = None
) -> List[Any]:
    return connection.round_trip(packed, count, deadline)


def describe_error(error: BaseException, settings: Settings) -> str:
    """One line for a failed tick: where, and what went wrong, without the password."""
    try:
        has_password = parse_address(settings.redis_url).password is not None
    except ValueError:
        has_password = False
    message = describe_redis_error(
        error,
        describe_redis_url(settings.redis_url),
        settings.timeout,
        settings.redis_url.startswith("rediss://"),
        has_password,
    )
    # No reply holds the arguments an unknown command's reply quotes (`ReplyError`), AUTH's
    # password among them: this is the last line of defence, for foreign text (an exception).
    for password in passwords_of(settings.redis_url):
        message = message.replace(password, "***")
    return message
