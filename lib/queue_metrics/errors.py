"""Every error of the collector in one place: the exceptions, and the one-line messages users see.

Failures are classified by exception type and by the Redis error code that starts an error
reply (`NOAUTH`, `WRONGPASS`, `NOPERM`, `WRONGTYPE`, ...), never by searching the message text,
which carries host names (`redis-ssl.example.com` is no TLS error).

Standard library only: the build step imports the settings, which import this module, with a
Python that has no packages.
"""

from __future__ import annotations

import json
import socket
import sys
from typing import List, Optional


class QueueMetricsError(Exception):
    """Base of the collector's own exceptions."""


class ConfigError(QueueMetricsError, ValueError):
    """A setting that cannot be used; the message is one line and names the variable."""


class RedisURLError(QueueMetricsError, ValueError):
    """A Redis URL that cannot be used; the message never quotes the URL itself."""


class PayloadError(QueueMetricsError, ValueError):
    """A job payload or timestamp we cannot read; the message is one short line."""


class ReplyError(QueueMetricsError):
    """An error reply to one command of a pipeline; it stands in that command's place."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text
        # Redis error replies start with an upper-case code: "WRONGTYPE Operation against ...".
        first = text.split(" ", 1)[0]
        self.code = first if first.isupper() else "ERR"


def describe_reply_error(reply: ReplyError, expected: str = "a list") -> str:
    """One short phrase for an error reply to one read."""
    if reply.code == "WRONGTYPE":
        return f"its key holds the wrong type of value (expected {expected})"
    if reply.code == "NOPERM":
        return "the Redis user may not run this read (NOPERM): grant it +@read"
    return reply.text.split("\n", 1)[0][:200] or reply.code


# What each system's keyspace walk finds that its registries do not, for the line that says the
# walk cannot run.
WALK_FINDS = {"celery": "Celery queues bound to exchanges other than the default 'celery'"}


def is_unknown_command(reply: ReplyError) -> bool:
    """The server has no such command (renamed away or disabled in its config): the reply is
    `ERR unknown command 'SCAN', with args ...`, the one case Redis marks with no code of its own."""
    return reply.code == "ERR" and reply.text[4:].lower().startswith("unknown command")


def describe_walk_refusal(system: str, reply: ReplyError) -> str:
    """One line for a keyspace walk step (SCAN) answered with an error."""
    if is_unknown_command(reply):
        finds = WALK_FINDS.get(system, f"{system} queues that no registry lists")
        problem = (
            f"this Redis has no SCAN command (the server renamed or disabled it: {reply.text.split(',', 1)[0][:80]}), "
            f"so {finds} may be missing: name them in QUEUE_METRICS_{system.upper()}_QUEUES"
        )
    else:
        problem = describe_reply_error(reply)
    return f"cannot look for queues in the keyspace (SCAN): {problem}"


def readable_name(name: str) -> str:
    """A name as text: the undecodable bytes it keeps as surrogates shown as \\xNN escapes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def show_name(name: str, limit: int = 80) -> str:
    """A name quoted on one line: control characters and odd bytes escaped, long names cut."""
    shown = json.dumps(readable_name(name))
    if len(shown) > limit:
        shown = shown[: limit - 4] + '..."'
    return shown


class ErrorLog:
    """Collects the one-line error messages of a tick."""

    __slots__ = ("messages",)

    def __init__(self) -> None:
        self.messages: List[str] = []

    def add(self, message: str) -> None:
        self.messages.append(message)

    def about_queue(self, backend: str, queue: str, message: str) -> None:
        self.messages.append(f"{backend} queue {show_name(queue)}: {message}")

    def about_reply(self, backend: str, what: str, reply: ReplyError, expected: str = "a list") -> None:
        self.messages.append(f"{backend} {what}: {describe_reply_error(reply, expected)}")


class RedisUnavailable(QueueMetricsError):
    """The connection failed or was lost; the OSError behind it is its cause."""


class RedisTimeout(RedisUnavailable):
    """Redis did not answer within the timeout."""


# Replies to AUTH when the URL has a password the server does not expect (Redis >= 6, then older).
NO_PASSWORD_SET_REPLIES = (
    "AUTH <password> called without any password configured for the default user. "
    "Are you sure your configuration is correct?",
    "Client sent AUTH, but no password is set",
)


def _chain(error: BaseException) -> List[BaseException]:
    """The error and the exceptions it was raised from or while handling."""
    seen: List[BaseException] = []
    current: Optional[BaseException] = error
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _first(chain: List[BaseException], kind: type) -> Optional[BaseException]:
    return next((item for item in chain if isinstance(item, kind)), None)


def describe_redis_error(error: BaseException, where: str, timeout: float, tls: bool, has_password: bool) -> str:
    """One line for a tick that failed as a whole: where, what, and what to do; no secret.

    `where` is the URL without its credentials.
    """
    if isinstance(error, ReplyError):
        return _describe_reply(error, where, has_password)
    chain = _chain(error)
    # `ssl` is imported by a TLS connection only (it costs megabytes): without it, no error
    # can be a TLS one.
    ssl = sys.modules.get("ssl")
    rejected = _first(chain, ssl.SSLCertVerificationError) if ssl else None
    if rejected is not None:
        reason = getattr(rejected, "verify_message", None) or "the server's certificate was not accepted"
        return (
            f"TLS with Redis at {where} failed: certificate verify failed: {reason} "
            f"(QUEUE_METRICS_TLS_VERIFY is on: set QUEUE_METRICS_TLS_CA_FILE to the server's CA, "
            f"or turn verification off)"
        )
    ssl_error = _first(chain, ssl.SSLError) if ssl else None
    if ssl_error is not None:
        reason = getattr(ssl_error, "reason", None) or type(ssl_error).__name__
        return f"TLS with Redis at {where} failed: {reason} (is that port really TLS?)"
    if isinstance(error, RedisTimeout) or _first(chain, socket.timeout) is not None:
        hint = " (is that port really TLS?)" if tls else ""
        return f"Redis at {where} did not answer within {timeout:g} s (timeout){hint}"
    if _first(chain, socket.gaierror) is not None:
        return f"cannot resolve the host of Redis at {where} (DNS lookup failed)"
    if _first(chain, ConnectionRefusedError) is not None:
        return f"cannot connect to Redis at {where}: connection refused (is it running?)"
    if _first(chain, FileNotFoundError) is not None:
        return f"cannot connect to Redis at {where}: no such socket file"
    if isinstance(error, RedisUnavailable):
        os_error = _first(chain, OSError)
        reason = str(error) or "connection lost"
        if isinstance(os_error, OSError):
            reason = os_error.strerror or type(os_error).__name__
        return f"lost the connection to Redis at {where}: {reason}"
    text = str(error).strip().split("\n", 1)[0][:200] or type(error).__name__
    return f"Redis at {where}: {text}"


def _describe_reply(error: ReplyError, where: str, has_password: bool) -> str:
    """An error reply that failed the whole tick: to AUTH or SELECT, or NOAUTH to a read."""
    body = error.text[len(error.code) + 1 :] if error.text.startswith(error.code + " ") else error.text
    if body in NO_PASSWORD_SET_REPLIES:
        return f"Redis at {where} has no password set, but the URL has one (remove it from the URL)"
    if error.code == "NOAUTH" or (error.code == "WRONGPASS" and not has_password):
        return f"Redis at {where} needs a password and the URL has none"
    if error.code == "WRONGPASS" or body == "invalid password":
        return f"Redis at {where} rejected the password (check the URL's credentials)"
    if error.code == "NOPERM":
        if "'select'" in body.lower():
            return f"Redis at {where} refused SELECT: grant the user +select to read a database other than 0"
        return f"Redis at {where} refused a read: the user lacks permission (grant it +@read)"
    if body.startswith(("DB index is out of range", "invalid DB index")):
        return f"Redis at {where}: that database number does not exist on this server"
    return f"Redis at {where}: {error.text.split(chr(10), 1)[0][:200]}"
