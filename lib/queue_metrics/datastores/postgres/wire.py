"""A PostgreSQL client that does what the collector needs and nothing more: connect (TLS, every
password method a Heroku or self-hosted server asks for), then run read-only SELECTs.

Why our own and not psycopg or pg8000: the collector lives in the customer's web dyno, and
importing a driver costs it more memory than the whole collector (BENCHMARKS.md, "A Postgres
driver in the web dyno": psycopg 3 +18 MB, pg8000 +12.7 MB resident, against some 0.5 MB for
this module). Only the simple query protocol is spoken (PostgreSQL docs, "Frontend/Backend
Protocol", 55.2.2), with text results.

Read-only by construction: the session starts with `default_transaction_read_only=on` and a
`statement_timeout` (startup parameters, so no statement of ours sets them), every query is a
single SELECT in its own implicit transaction, and nothing here can open a transaction block,
take a lock (`FOR UPDATE`, advisory locks) or write.

Through a pooler (PgBouncer refuses startup parameters but the few it tracks: "unsupported
startup parameter", 08P01; the caller connects again with `pooled`), the session starts with
those few, and each query is sent with its limits set in its own transaction: `SET LOCAL` of the
timeouts, `jit` and TimeZone (a pooler may not pass it on), `SET TRANSACTION READ ONLY`, then
the SELECT, in one Query message, which the server runs as one implicit transaction. Nothing
outlives it on the server connection the pooler hands to the app's transactions next.

One round trip for all queries: each is its own `Query` message and all of them go in one write;
the server answers them in order, each up to its `ReadyForQuery`. An error (a missing column,
the timeout) ends that query only: the others are answered as ever.

Standard library only, nothing done at import time; `ssl` is imported by the caller that makes
the TLS context.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import socket
import struct
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

from queue_metrics.errors import PostgresError, PostgresMalformed

PROTOCOL_VERSION = 196608  # 3.0
SSL_REQUEST = struct.pack(">II", 8, 80877103)
HEAD = struct.Struct(">cI")
# Bytes of one message we accept from the server before calling it malformed (a result row of
# ours is a queue name and a few numbers).
MAX_MESSAGE = 16 << 20

AUTH_OK = 0
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12
SCRAM = "SCRAM-SHA-256"
# How PgBouncer refuses a startup parameter it does not track (SQLSTATE 08P01).
UNSUPPORTED_STARTUP = "unsupported startup parameter"
# The startup parameters a pooler tracks (PgBouncer's track_extra_parameters default and its
# fixed ones): the only ones of ours a pooled session starts with.
POOLED_STARTUP = ("user", "database", "application_name", "client_encoding", "TimeZone")

Row = Tuple[Optional[str], ...]


class Rows(NamedTuple):
    """One query's result: its column names and rows (text values, None for NULL)."""

    columns: Tuple[str, ...]
    rows: List[Row]


QueryResult = Union[Rows, PostgresError]


def message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack(">I", len(body) + 4) + body


def cstring(text: str) -> bytes:
    return text.encode("utf-8") + b"\0"


def startup_message(parameters: Dict[str, str]) -> bytes:
    pairs = b"".join(cstring(name) + cstring(value) for name, value in parameters.items())
    body = struct.pack(">I", PROTOCOL_VERSION) + pairs + b"\0"
    return struct.pack(">I", len(body) + 4) + body


def query_message(sql: str) -> bytes:
    return message(b"Q", cstring(sql))


def error_fields(body: bytes) -> Dict[str, str]:
    """An ErrorResponse's fields by their code (`S` severity, `C` SQLSTATE, `M` message...)."""
    fields: Dict[str, str] = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields


def as_error(body: bytes) -> PostgresError:
    fields = error_fields(body)
    # `V` is the severity never translated (PostgreSQL 9.6+): `S` follows lc_messages.
    severity = fields.get("V") or fields.get("S", "ERROR")
    return PostgresError(fields.get("C", ""), fields.get("M", "no message"), severity)


def md5_password(user: str, password: str, salt: bytes) -> bytes:
    """`md5` + md5(md5(password + user) + salt), in hex (the protocol's MD5 method)."""
    inner = hashlib.md5((password + user).encode("utf-8")).hexdigest().encode("ascii")  # noqa: S324 (the protocol's)
    return b"md5" + hashlib.md5(inner + salt).hexdigest().encode("ascii")  # noqa: S324


class Scram:
    """The client side of SCRAM-SHA-256 (RFC 5802, RFC 7677), without channel binding."""

    def __init__(self, password: str, nonce: Optional[str] = None) -> None:
        self._password = password.encode("utf-8")
        self.nonce = nonce or base64.b64encode(os.urandom(18)).decode("ascii")
        # The user name goes in the startup message; SCRAM's is left empty, as libpq does.
        self.first_bare = f"n=,r={self.nonce}"
        self._server_signature = b""

    def first(self) -> bytes:
        return ("n,," + self.first_bare).encode("ascii")

    def final(self, server_first: bytes) -> bytes:
        text = server_first.decode("ascii")
        fields = dict(item.split("=", 1) for item in text.split(","))
        nonce, salt, iterations = fields.get("r", ""), fields.get("s", ""), fields.get("i", "")
        if not nonce.startswith(self.nonce) or not salt or not iterations.isdigit():
            raise PostgresMalformed("the server's SCRAM challenge is not one")
        salted = hashlib.pbkdf2_hmac("sha256", self._password, base64.b64decode(salt), int(iterations))
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self.first_bare},{text},{without_proof}".encode("ascii")
        signature = hmac.digest(stored_key, auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.digest(salted, b"Server Key", "sha256")
        self._server_signature = hmac.digest(server_key, auth_message, "sha256")
        return f"{without_proof},p={base64.b64encode(proof).decode('ascii')}".encode("ascii")

    def verify(self, server_final: bytes) -> None:
        fields = dict(item.split("=", 1) for item in server_final.decode("ascii").split(",") if "=" in item)
        if "e" in fields:
            raise PostgresError("28P01", f"SCRAM authentication failed: {fields['e']}", "FATAL")
        if base64.b64decode(fields.get("v", "")) != self._server_signature:
            raise PostgresMalformed("the server's SCRAM signature does not match: it does not know the password")


class PostgresConnection:
    """One session, kept open between ticks. Not thread-safe."""

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        password: str,
        database: str,
        timeout: float,
        statement_timeout_ms: int,
        lock_timeout_ms: int,
        tls: Any = None,
        tls_required: bool = True,
        pooled: bool = False,
    ) -> None:
        """`tls`: an ssl.SSLContext to ask for TLS with (None: never); `tls_required`: fail
        when the server has no TLS (sslmode=require), else go on in the clear (prefer);
        `pooled`: a pooler's session, the limits set in each query's transaction (see above)."""
        self._buffer = b""
        self._prefix = (
            f"SET LOCAL statement_timeout = {int(statement_timeout_ms)}; SET LOCAL lock_timeout = "
            f"{int(lock_timeout_ms)}; SET LOCAL jit = off; SET LOCAL TimeZone = 'UTC'; SET TRANSACTION READ ONLY; "
            if pooled
            else ""
        )
        self.tls = False
        raw = socket.create_connection((host, port), timeout=timeout)
        self._socket: Any = raw
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:
                raw.sendall(SSL_REQUEST)
                answer = raw.recv(1)
                if answer == b"S":
                    self._socket = tls.wrap_socket(raw, server_hostname=host)
                    self.tls = True
                elif answer != b"N":
                    raise PostgresMalformed("the server answered the TLS request with what PostgreSQL never sends")
                elif tls_required:
                    raise PostgresError("", "the server does not support TLS, and TLS is required (sslmode)", "FATAL")
            self._start(user, password, database, statement_timeout_ms, lock_timeout_ms)
        except BaseException:
            self._socket.close()
            raise

    def _start(self, user: str, password: str, database: str, statement_timeout_ms: int, lock_timeout_ms: int) -> None:
        parameters = {
            "user": user,
            "database": database,
            "application_name": "queue-metrics",
            "client_encoding": "UTF8",
            # Rails writes `timestamp without time zone` columns in UTC: read them so.
            "TimeZone": "UTC",
            # A query the planner costs high would be JIT-compiled at every tick (tens of
            # milliseconds of the database's CPU, more than the query itself).
            "jit": "off",
            # Every transaction of the session read-only, and no query longer than this.
            "default_transaction_read_only": "on",
            "statement_timeout": str(statement_timeout_ms),
            "lock_timeout": str(lock_timeout_ms),
        }
        if self._prefix:
            parameters = {name: value for name, value in parameters.items() if name in POOLED_STARTUP}
        self._send(startup_message(parameters))
        scram: Optional[Scram] = None
        while True:
            kind, body = self._message()
            if kind == b"E":
                raise as_error(body)
            if kind == b"Z":
                return
            if kind != b"R":
                continue  # ParameterStatus, BackendKeyData, NoticeResponse
            (code,) = struct.unpack(">I", body[:4])
            if code == AUTH_OK:
                continue
            if code == AUTH_CLEARTEXT:
                self._send(message(b"p", cstring(password)))
            elif code == AUTH_MD5:
                self._send(message(b"p", md5_password(user, password, body[4:8]) + b"\0"))
            elif code == AUTH_SASL:
                mechanisms = [part.decode("ascii", "replace") for part in body[4:].split(b"\0") if part]
                if SCRAM not in mechanisms:
                    raise PostgresMalformed(f"the server offers no {SCRAM} login (it offers {', '.join(mechanisms)})")
                scram = Scram(password)
                first = scram.first()
                self._send(message(b"p", cstring(SCRAM) + struct.pack(">I", len(first)) + first))
            elif code == AUTH_SASL_CONTINUE and scram is not None:
                self._send(message(b"p", scram.final(body[4:])))
            elif code == AUTH_SASL_FINAL and scram is not None:
                scram.verify(body[4:])
            else:
                raise PostgresMalformed(f"the server asks for a login method this client does not speak ({code})")

    def queries(self, sqls: Sequence[str]) -> List[QueryResult]:
        """Each query's rows (or its error), all sent in one write: one round trip."""
        self._send(b"".join(query_message(self._prefix + sql) for sql in sqls))
        results: List[QueryResult] = []
        columns: Tuple[str, ...] = ()
        rows: List[Row] = []
        error: Optional[PostgresError] = None
        while len(results) < len(sqls):
            kind, body = self._message()
            if kind == b"T":
                columns, rows = _columns(body), []
            elif kind == b"D":
                rows.append(_row(body))
            elif kind == b"E":
                error = as_error(body)
                if error.severity in ("FATAL", "PANIC"):
                    raise error
            elif kind == b"Z":
                results.append(error if error is not None else Rows(columns, rows))
                columns, rows, error = (), [], None
        return results

    def set_timeout(self, seconds: float) -> None:
        self._socket.settimeout(max(0.001, seconds))

    def close(self) -> None:
        try:
            self._send(message(b"X", b""))
        except OSError:
            pass
        finally:
            self._socket.close()

    def _send(self, data: bytes) -> None:
        self._socket.sendall(data)

    def _message(self) -> Tuple[bytes, bytes]:
        kind, size = HEAD.unpack(self._read(5))
        if size < 4 or size > MAX_MESSAGE:
            raise PostgresMalformed(f"a message of {size} bytes")
        return kind, self._read(size - 4)

    def _read(self, size: int) -> bytes:
        while len(self._buffer) < size:
            chunk = self._socket.recv(max(65536, size - len(self._buffer)))
            if not chunk:
                raise ConnectionResetError("the server closed the connection")
            self._buffer += chunk
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


def _columns(body: bytes) -> Tuple[str, ...]:
    (count,) = struct.unpack(">H", body[:2])
    names = []
    at = 2
    for _ in range(count):
        end = body.index(b"\0", at)
        names.append(body[at:end].decode("utf-8", "replace"))
        at = end + 1 + 18  # table oid, column number, type oid, size, modifier, format
    return tuple(names)


def _row(body: bytes) -> Row:
    (count,) = struct.unpack(">H", body[:2])
    values: List[Optional[str]] = []
    at = 2
    for _ in range(count):
        (size,) = struct.unpack(">i", body[at : at + 4])
        at += 4
        if size < 0:
            values.append(None)
        else:
            values.append(body[at : at + size].decode("utf-8", "surrogateescape"))
            at += size
    return tuple(values)
