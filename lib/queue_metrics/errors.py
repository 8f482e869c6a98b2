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
from typing import List, Optional, Sequence, Tuple


class QueueMetricsError(Exception):
    """Base of the collector's own exceptions."""


class ConfigError(QueueMetricsError, ValueError):
    """A setting that cannot be used; the message is one line and names the variable."""


class RedisURLError(QueueMetricsError, ValueError):
    """A Redis URL that cannot be used; the message never quotes the URL itself."""


class PayloadError(QueueMetricsError, ValueError):
    """A job payload or timestamp we cannot read; the message is one short line."""


# How Redis goes on when it quotes the arguments of a command it does not know: "ERR unknown command
# 'AUTH', with args beginning with: 'default' '<the password, cut at 128 characters>'" (Redis 6:
# in backticks). Those are a password, job bytes: no reply is kept with them.
QUOTED_ARGUMENTS = ", with args beginning with:"


def without_quoted_arguments(text: str) -> str:
    """An error reply's text cut where it starts quoting the command's arguments."""
    cut = text.find(QUOTED_ARGUMENTS)
    return text if cut < 0 else text[:cut]


class ReplyError(QueueMetricsError):
    """An error reply to one command of a pipeline; it stands in that command's place. Its text
    never holds the arguments an unknown-command reply quotes (see QUOTED_ARGUMENTS)."""

    def __init__(self, text: str) -> None:
        text = without_quoted_arguments(text)
        super().__init__(text)
        self.text = text
        # Redis error replies start with an upper-case code: "WRONGTYPE Operation against ...".
        first = text.split(" ", 1)[0]
        self.code = first if first.isupper() else "ERR"


# How a NOPERM reply ends, by what the ACL denied: a key (the user's key patterns, `~rq:*`) or a
# command (its command rules, `+@read`). Redis 6 to 7.0 say "... to access one of the keys used as
# arguments" / "... to run the 'lindex' command [or its subcommand]"; 7.2 and later, and Valkey,
# "No permissions to access a key" / "User <name> has no permissions to run the 'lindex' command".
# Only the end is read: the user's name in the middle is anything.
KEY_DENIED_ENDINGS = ("a key", "keys used as arguments")
COMMAND_DENIED_ENDINGS = ("command", "command or its subcommand")


def permission_denied(reply: ReplyError) -> Optional[str]:
    """ "key" or "command": what a NOPERM reply says the ACL denied; None for any other reply."""
    if reply.code != "NOPERM":
        return None
    body = reply.text.split("\n", 1)[0].rstrip(". ")
    if body.endswith(KEY_DENIED_ENDINGS):
        return "key"
    if body.endswith(COMMAND_DENIED_ENDINGS):
        return "command"
    return None


def key_patterns_text(patterns: Sequence[str]) -> str:
    """ACL key patterns as ACL SETUSER takes them: `~queues ~queue:*`."""
    return " ".join(f"~{pattern}" for pattern in patterns)


def _denied_command(reply: ReplyError) -> str:
    """The command a NOPERM names ("run the 'lindex' command"), upper case; "a read" when none."""
    parts = reply.text.split("\n", 1)[0].rsplit("'", 2)
    return parts[1].upper() if len(parts) == 3 and parts[1] else "a read"


def describe_reply_error(reply: ReplyError, expected: str = "a list", patterns: Sequence[str] = ()) -> str:
    """One short phrase for an error reply to one read; `patterns`: ACL key patterns that match
    the key read (a NOPERM on the key names them)."""
    if reply.code == "WRONGTYPE":
        return f"its key holds the wrong type of value (expected {expected})"
    if reply.code == "NOPERM":
        denied = permission_denied(reply)
        if denied == "key":
            # The command passed the ACL (Redis checks it first): `+@read` would change nothing.
            if patterns:
                shown = key_patterns_text(patterns)
                plural = "s" if len(patterns) > 1 else ""
                return (
                    f"this Redis user may not read its key (NOPERM): add the key pattern{plural} {shown} "
                    f"to its ACL (ACL SETUSER <user> {shown})"
                )
            return (
                "this Redis user may not read its key (NOPERM): add a key pattern that matches it "
                "to its ACL (ACL SETUSER <user> ~<pattern>)"
            )
        if denied == "command":
            return (
                f"this Redis user may not run {_denied_command(reply)} (NOPERM): grant it +@read "
                f"(ACL SETUSER <user> +@read)"
            )
        return f"this Redis user may not do this read ({reply.text.split(chr(10), 1)[0][:200]})"
    return reply.text.split("\n", 1)[0][:200] or reply.code


def describe_registry_denial(backend: str, reply: ReplyError, patterns: Sequence[str], note: str = "") -> str:
    """A NOPERM on the key that lists a system's queues: none of its queues can be read, and
    nothing says whether the app uses it. `note`: what those patterns leave out."""
    if permission_denied(reply) != "key":
        return describe_reply_error(reply, "a set")
    shown = key_patterns_text(patterns)
    return (
        f"this Redis user may not read it (NOPERM), so the queues it lists cannot be read: let it read "
        f"{backend}'s keys (ACL SETUSER <user> {shown}), or leave {backend} out with QUEUE_METRICS_BACKENDS"
        + (f"; {note}" if note else "")
    )


def sidekiq_processes_note(pattern: str) -> str:
    """What Sidekiq's key patterns leave out: its processes' heartbeat hashes, named after them."""
    return (
        f"its processes' heartbeat hashes, named <hostname>:<pid>:<nonce>, need ~{pattern} too "
        f"(any key with two colons), else the processes are unknown"
    )


def sidekiq_due_unread(shown_set: str, total: int, limit: int, oldest_age: float) -> str:
    """More due jobs wait in a Sidekiq set than a tick reads: where each goes is unknown."""
    return (
        f"sidekiq {shown_set}: {total} jobs are due and not in their queue, more than the {limit} read a tick, "
        f"so due and due_age per queue are unknown; the earliest fell due {oldest_age:.0f} s ago "
        f"(is any Sidekiq process running, and its scheduler?)"
    )


def no_consumer(backend: str, queue: str, size: int) -> str:
    """A queue holds jobs and no running worker is configured to take it (`consumers` is 0)."""
    jobs = "1 job" if size == 1 else f"{size} jobs"
    return f"{backend}: queue {show_name(queue)} has {jobs} and no worker listens to it"


def no_consumer_more(count: int) -> str:
    """The rest of a tick's queues with jobs and no worker, counted (doctor lists every one)."""
    return f"and {count} more queues have jobs and no worker listens to them (queue-metrics doctor lists them)"


def describe_unreadable_members(
    backend: str,
    what: str,
    count: int,
    example: str,
    reply: ReplyError,
    patterns: Sequence[str],
    lost: str,
    expected: str = "a hash",
) -> str:
    """Keys of a system's workers (Sidekiq's processes, rq's workers: hashes; Resque's: strings)
    that cannot be read: the figures summed over them are unknown, and left out rather than
    counted short."""
    return (
        f"{backend} {what}: {count} cannot be read ({example}: {describe_reply_error(reply, expected, patterns)}), "
        f"so {lost} are unknown (left out of the report)"
    )


def is_unknown_command(reply: ReplyError) -> bool:
    """The server has no such command (renamed away or disabled in its config): the reply is
    `ERR unknown command 'SCAN', with args ...`, the one case Redis marks with no code of its own."""
    return reply.code == "ERR" and reply.text[4:].lower().startswith("unknown command")


# What each read command the server may lack costs (doctor); the others: the reads that use it.
LACKING_COSTS = {
    "LPOS": (
        "the latency of Celery messages and Resque jobs without a stamp cannot be observed "
        "(Redis before 6.0.6 has none)"
    ),
    "SCAN": "queues that no registry lists can be missing (said below)",
}


def describe_lacking_commands(commands: Sequence[str]) -> str:
    """Doctor's line for read commands the server does not have (older than them, or renamed or
    disabled in its config): what each costs; no ACL grant would bring them back."""
    costs = "; ".join(f"{command}: {LACKING_COSTS.get(command, 'the reads that use it fail')}" for command in commands)
    return f"This server lacks {', '.join(commands)} (older than the command, or renamed or disabled): {costs}"


def rq_key_prefix_unusable(variable: str, text: str) -> str:
    """QUEUE_METRICS_RQ_KEY_PREFIX that rq could not have written keys with (a usage error)."""
    return f"{variable} may hold only letters, digits and _ . : - {{ }} (as rq), got {text!r}"


def rq_key_prefix_ignored(text: str, default: str) -> str:
    """The app's RQ_KEY_PREFIX, when rq 3 would refuse it (rq before 3 reads no such variable):
    not ours to refuse, so it is said and left unused."""
    return (
        f"RQ_KEY_PREFIX {text!r} is not used: rq 3 itself refuses it (only letters, digits and _ . : - {{ }}, "
        f"no spaces), and rq before 3 ignores it; keys are read with rq's default prefix {default!r} "
        f"(QUEUE_METRICS_RQ_KEY_PREFIX sets another)"
    )


def celery_queues_unseen_without_walk(default_exchange: str) -> str:
    """What a server without SCAN costs Celery (its `without_walk`), and the fix."""
    return (
        f"Celery queues bound to exchanges other than the default {default_exchange!r} may be missing: "
        f"name them in QUEUE_METRICS_CELERY_QUEUES"
    )


def bullmq_queues_unseen_without_walk() -> str:
    """What a server without SCAN costs BullMQ and Bull (its `without_walk`), and the fix."""
    return "BullMQ and Bull queues have no registry and cannot be found: name them in QUEUE_METRICS_BULLMQ_QUEUES"


def dramatiq_queues_unseen_without_walk() -> str:
    """What a server without SCAN costs Dramatiq (its `without_walk`), and the fix: it lists its
    queues nowhere in Redis."""
    return "Dramatiq queues are found only by walking the keyspace: name them in QUEUE_METRICS_DRAMATIQ_QUEUES"


def describe_walk_refusal(reply: ReplyError, lost: Optional[str]) -> str:
    """One line for a keyspace walk step (SCAN) answered with an error; `lost`: what a server
    without SCAN costs the system, and the fix (its `without_walk`)."""
    if is_unknown_command(reply):
        problem = (
            f"this Redis has no SCAN command (the server renamed or disabled it: {reply.text.split(',', 1)[0][:80]}), "
            f"so {lost or 'queues that no registry lists may be missing'}"
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


def queue_subject(backend: str, queue: str) -> str:
    """How a message about one queue starts (`rq queue "default"`): the table finds a queue's
    reasons by it."""
    return f"{backend} queue {show_name(queue)}"


class ErrorLog:
    """Collects the one-line error messages of a tick.

    `refusals` are those of them about a key that lists a system's queues and that this Redis user
    may not read, with the key: they count even for a system that shows no sign of use (see
    `RedisReader._in_use`).
    """

    __slots__ = ("messages", "refusals")

    def __init__(self) -> None:
        self.messages: List[str] = []
        self.refusals: List[Tuple[str, str]] = []

    def add(self, message: str) -> None:
        self.messages.append(message)

    def refused(self, key: str, message: str) -> None:
        self.messages.append(message)
        self.refusals.append((key, message))

    def about_queue(self, backend: str, queue: str, message: str) -> None:
        self.messages.append(f"{queue_subject(backend, queue)}: {message}")

    def about_reply(self, backend: str, what: str, reply: ReplyError, expected: str = "a list") -> None:
        self.messages.append(f"{backend} {what}: {describe_reply_error(reply, expected)}")


class RedisUnavailable(QueueMetricsError):
    """The connection failed or was lost; the OSError behind it is its cause."""


class RedisTimeout(RedisUnavailable):
    """Redis did not answer within the timeout."""


class ClosedUnanswered(RedisUnavailable):
    """A new plain-TCP connection was closed or reset before the server sent a single byte: what a
    TLS port does with the plain text of a redis:// URL (Redis resets it at once)."""


class ServerClosed(RedisUnavailable):
    """Redis closed the connection after an error reply of its own, its last words (`text`): a
    server at `maxclients` answers a new connection so and closes it."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


# What Redis (and Valkey) send a connection beyond `maxclients` before closing it.
MAX_CLIENTS_REPLY = "ERR max number of clients reached"


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


def _tls_failure(chain: List[BaseException], subject: str, fix: str, protocol: str) -> Optional[str]:
    """A TLS failure in `chain`, said of `subject` (`Redis at ...`), or None. `ssl` is imported by
    a TLS connection only (it costs megabytes): without it, no error can be a TLS one."""
    ssl = sys.modules.get("ssl")
    if ssl is None:
        return None
    rejected = _first(chain, ssl.SSLCertVerificationError)
    if rejected is not None:
        reason = getattr(rejected, "verify_message", None) or "the server's certificate was not accepted"
        return f"TLS with {subject} failed: certificate verify failed: {reason} ({fix})"
    ssl_error = _first(chain, ssl.SSLError)
    if ssl_error is not None:
        reason = getattr(ssl_error, "reason", None) or type(ssl_error).__name__
        return f"TLS with {subject} failed: {reason} (is that port really {protocol}?)"
    return None


def describe_redis_error(error: BaseException, where: str, timeout: float, tls: bool, has_password: bool) -> str:
    """One line for a tick that failed as a whole: where, what, and what to do; no secret.

    `where` is the URL without its credentials.
    """
    if isinstance(error, ReplyError):
        return _describe_reply(error, where, has_password)
    if isinstance(error, ServerClosed):
        if error.text == MAX_CLIENTS_REPLY:
            return (
                f"Redis at {where} refused the connection: it has reached its maximum number of clients "
                f"(maxclients); on a small Heroku Key-Value Store (Redis) plan that limit is low: close idle "
                f"connections (each process of each dyno holds its own) or upgrade the plan"
            )
        return f"Redis at {where} closed the connection, saying: {error.text.split(chr(10), 1)[0][:200]}"
    chain = _chain(error)
    tls_failure = _tls_failure(
        chain,
        f"Redis at {where}",
        "QUEUE_METRICS_TLS_VERIFY is on: set QUEUE_METRICS_TLS_CA_FILE to the server's CA, or turn verification off",
        "TLS",
    )
    if tls_failure is not None:
        return tls_failure
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
        hint = " (is it a TLS port? use rediss://)" if isinstance(error, ClosedUnanswered) and not tls else ""
        return f"lost the connection to Redis at {where}: {reason}{hint}"
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
        return f"Redis at {where} refused a read: the user lacks permission: {describe_reply_error(error)}"
    if body.startswith(("DB index is out of range", "invalid DB index")):
        return f"Redis at {where}: that database number does not exist on this server"
    return f"Redis at {where}: {error.text.split(chr(10), 1)[0][:200]}"


class ApiRefused(QueueMetricsError):
    """The RabbitMQ management API answered a GET with an error status; `reason` is the API's own
    (`{"error": ..., "reason": "Not management user"}`), cut to one short line."""

    def __init__(self, status: int, reason: str, from_api: bool = True) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status
        self.reason = reason
        # False: the body was not the API's JSON (whatever answered is not the management API).
        self.from_api = from_api


class WarningNotice(str):
    """A notice for people that is a warning (the runner prints it as one), not an error of a
    tick: something works less well than it could, and the line says how to fix it."""


class ApiMalformed(QueueMetricsError):
    """What the management API sent is not the JSON it sends."""


class AmqpClosed(QueueMetricsError):
    """The AMQP server closed the connection, with its reply code and text (403 ACCESS_REFUSED: a
    login refused; 530 NOT_ALLOWED: no such vhost, or no access to it)."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code}: {text}")
        self.code = code
        self.text = text


class AmqpMalformed(QueueMetricsError):
    """What the AMQP server sent is not AMQP 0-9-1 as we read it."""


class PostgresError(QueueMetricsError):
    """PostgreSQL's ErrorResponse: its SQLSTATE `code` (28P01: wrong password; 53300: too many
    connections; 57014: statement_timeout; 42P01/42703: no such table/column), `text` and
    `severity` (FATAL ends the session)."""

    def __init__(self, code: str, text: str, severity: str = "ERROR") -> None:
        super().__init__(f"{code}: {text}" if code else text)
        self.code = code
        self.text = text
        self.severity = severity


class TableShapeError(QueueMetricsError):
    """A queue system's table is there, but not of a shape the system knows (a column missing:
    a migration not yet run); the message names what is missing."""


class PostgresMalformed(QueueMetricsError):
    """What the server sent is not PostgreSQL's protocol as we read it."""


# The management API's 401 reasons (rabbit_mgmt_util): the user or password is wrong; the user has
# no management tag; the user has no permission entry on the vhost.
LOGIN_FAILED = "Login failed"
NOT_MANAGEMENT_USER = "Not management user"
VHOST_DENIED = "User not authorised to access virtual host"


def describe_rabbitmq_error(error: BaseException, where: str, user: str, vhost: str, timeout: float) -> str:
    """One line for a RabbitMQ tick that failed as a whole: where, what, and what to do; no
    password (`where` is the API's URL without credentials)."""
    subject = f"the RabbitMQ management API at {where}"
    shown_vhost = json.dumps(vhost)
    if isinstance(error, ApiRefused):
        if error.status == 401 and error.reason == NOT_MANAGEMENT_USER:
            return (
                f"{subject} refused user {user!r}: {NOT_MANAGEMENT_USER} (401): give it the monitoring tag "
                f"(rabbitmqctl set_user_tags {user} monitoring; on CloudAMQP: the console's Users page)"
            )
        if error.status == 401 and error.reason == VHOST_DENIED:
            return (
                f"{subject} refused user {user!r} on vhost {shown_vhost} (401: {VHOST_DENIED}): give it an "
                f"entry, even an empty one (rabbitmqctl set_permissions -p {shown_vhost} {user} '^$' '^$' '^$')"
            )
        if error.status == 401:
            return (
                f"{subject} rejected the credentials of user {user!r} (401: {error.reason}): "
                f"check the URL's user and password"
            )
        if error.status == 404:
            return (
                f"{subject} has no vhost {shown_vhost} (404: {error.reason}): check the AMQP URL's path "
                f"(a vhost named / is written %2F), or QUEUE_METRICS_RABBITMQ_API_URL"
            )
        return f"{subject} answered HTTP {error.status}: {error.reason}"
    if isinstance(error, ApiMalformed):
        return f"{subject} sent what the management API does not send ({error}): is that its URL?"
    fix = "set QUEUE_METRICS_TLS_CA_FILE to the server's CA, or QUEUE_METRICS_TLS_VERIFY=false"
    refused = (
        " (a self-hosted broker: enable the plugin, rabbitmq-plugins enable rabbitmq_management, and set "
        "QUEUE_METRICS_RABBITMQ_API_URL)"
    )
    return describe_connection_failure(error, subject, timeout, fix, "https", refused, http=True)


def describe_connection_failure(
    error: BaseException,
    subject: str,
    timeout: float,
    tls_fix: str,
    protocol: str,
    refused_hint: str = "",
    http: bool = False,
) -> str:
    """One line for a connection to `subject` that failed below its protocol: TLS, a timeout, DNS,
    a refusal (`refused_hint` added), a lost connection (for the RabbitMQ API, AMQP and Postgres
    clients); `http`: the HTTP client's unreadable answers (ValueError) said as such."""
    chain = _chain(error)
    tls_failure = _tls_failure(chain, subject, tls_fix, protocol)
    if tls_failure is not None:
        return tls_failure
    if _first(chain, socket.timeout) is not None:
        return f"{subject} did not answer within {timeout:g} s (timeout)"
    if _first(chain, socket.gaierror) is not None:
        return f"cannot resolve the host of {subject} (DNS lookup failed)"
    if _first(chain, ConnectionRefusedError) is not None:
        return f"cannot connect to {subject}: connection refused{refused_hint}"
    if http and isinstance(error, ValueError):  # MalformedAnswer, BodyTooLarge
        return f"{subject} sent an answer that cannot be read: {str(error)[:200]}"
    os_error = _first(chain, OSError)
    if isinstance(os_error, OSError):
        reason = os_error.strerror or str(os_error)[:200] or type(os_error).__name__
        return f"lost the connection to {subject}: {reason}"
    return f"{subject}: {str(error).strip()[:200] or type(error).__name__}"


def describe_amqp_error(error: BaseException, where: str, user: str, vhost: str, timeout: float) -> str:
    """One line for a tick of the AMQP fallback (passive declares) that failed as a whole: where,
    what, and what to do; no password (`where` is the AMQP URL without credentials)."""
    subject = f"the AMQP server at {where}"
    shown_vhost = json.dumps(vhost)
    if isinstance(error, AmqpClosed):
        text = error.text.replace("\n", " ")[:200]
        if error.code == 403:
            return f"{subject} refused user {user!r} ({error.code}: {text}): check the URL's user and password"
        if error.code == 530:
            return (
                f"{subject} has no vhost {shown_vhost} for user {user!r} ({error.code}: {text}): check the AMQP "
                f"URL's path (a vhost named / is written %2F) and the user's permissions"
            )
        return f"{subject} closed the connection ({error.code}: {text})"
    if isinstance(error, AmqpMalformed):
        return f"{subject} sent what an AMQP 0-9-1 server does not send ({error}): is that its URL?"
    return describe_connection_failure(
        error,
        subject,
        timeout,
        "set QUEUE_METRICS_TLS_CA_FILE to the server's CA, or QUEUE_METRICS_TLS_VERIFY=false",
        "amqps",
    )


def describe_declare_refusal(queue: str, code: int, text: str, user: str) -> str:
    """A queue's passive declare that the server refused (its channel closed), one line."""
    text = text.replace("\n", " ")[:200]
    if code == 404:
        return f"no queue {show_name(queue)} on the broker (404): check QUEUE_METRICS_CELERY_QUEUES"
    if code == 403:
        return (
            f"user {user!r} may not declare queue {show_name(queue)} passively ({code}: {text}): RabbitMQ 4.3 and "
            f"later need one of configure, write or read permission on it"
        )
    return f"queue {show_name(queue)}: the broker refused a passive declare ({code}: {text})"


# SQLSTATEs said in words (PostgreSQL docs, Appendix A).
PG_WRONG_PASSWORD = "28P01"
PG_NO_LOGIN = "28000"
PG_TOO_MANY_CONNECTIONS = "53300"
PG_NO_DATABASE = "3D000"
PG_CANCELED = "57014"
PG_LOCK_TIMEOUT = "55P03"
PG_NO_TABLE = "42P01"
PG_NO_COLUMN = "42703"
PG_NO_PRIVILEGE = "42501"


def describe_postgres_error(error: BaseException, where: str, user: str, timeout: float) -> str:
    """One line for a Postgres tick that failed as a whole: where, what, and what to do; no
    password (`where` is the URL without credentials)."""
    subject = f"Postgres at {where}"
    if isinstance(error, PostgresError):
        text = error.text.replace("\n", " ")[:200]
        if error.code == PG_WRONG_PASSWORD:
            return f"{subject} refused user {user!r}: wrong password ({error.code}): check the URL's password"
        if error.code == PG_NO_LOGIN:
            return f"{subject} refused user {user!r} ({error.code}: {text}): check pg_hba.conf or the role's LOGIN"
        if error.code == PG_TOO_MANY_CONNECTIONS:
            return (
                f"{subject} refused the connection: it has reached its connection limit ({error.code}: {text}); "
                f"every dyno's processes hold theirs (Heroku Postgres plans cap them: Essential at 20), so close "
                f"idle ones (a smaller pool), use PgBouncer, or upgrade the plan"
            )
        if error.code == PG_NO_DATABASE:
            return f"{subject} has no such database ({error.code}: {text}): check the URL's path"
        return f"{subject}: {text} ({error.code or error.severity})"
    if isinstance(error, PostgresMalformed):
        return f"{subject} sent what PostgreSQL does not send ({error}): is that its URL?"
    return describe_connection_failure(
        error, subject, timeout, "set QUEUE_METRICS_TLS_CA_FILE to the server's CA, or use sslmode=require", "TLS"
    )


def describe_postgres_query_error(error: PostgresError, timeout: float) -> str:
    """One line for one system's SELECT that failed (the others are read as ever)."""
    text = error.text.replace("\n", " ")[:200]
    if error.code == PG_CANCELED:
        return f"its query was cancelled by statement_timeout ({timeout:g} s, QUEUE_METRICS_TIMEOUT) ({text})"
    if error.code == PG_LOCK_TIMEOUT:
        return f"its tables are locked (a migration?): the query gave up waiting ({text})"
    if error.code in (PG_NO_TABLE, PG_NO_COLUMN):
        return f"its tables are not of the shape it knows ({error.code}: {text}): a migration not yet run?"
    if error.code == PG_NO_PRIVILEGE:
        return f"the user may not read its tables ({error.code}: {text}): GRANT SELECT on them"
    return f"its query failed ({error.code}: {text})"
