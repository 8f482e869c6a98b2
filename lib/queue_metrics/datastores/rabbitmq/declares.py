"""RabbitMQ without its management API: Celery's queues read by passive `queue.declare` over AMQP.

A broker without the management plugin (or whose API this dyno cannot reach) still answers a
passive declare: each named queue's ready messages (`size`) and consumers. Nothing else: no held
messages, no latency, no queue that is not named. The queues are the ones
QUEUE_METRICS_CELERY_QUEUES names (Celery's default `celery` when it names none), never Celery's
plumbing: a passive declare renews a queue's `x-expires` lease, and Celery gives one to its
`*.pidbox`, reply and `celeryev.*` queues, which would then never expire. Such names are refused
with a line; the README says not to name a queue declared with `x-expires` (`Queue(expires=...)`),
which a broker without the API cannot tell us about.

Imported only when a reader falls back (`reader.py`): a dyno whose broker has the API never loads
the AMQP client.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, List, Optional, Sequence, Tuple
from urllib.parse import unquote, urlsplit

from queue_metrics.datastores.rabbitmq.amqp import AmqpConnection, Declared
from queue_metrics.datastores.rabbitmq.locations import AMQP_PORTS, describe_amqp_url, vhost_of
from queue_metrics.errors import AmqpClosed, describe_amqp_error, describe_declare_refusal, show_name
from queue_metrics.sample import LATENCY_UNAVAILABLE, Figure, QueueSample, SystemSample, TickReport
from queue_metrics.systems.rabbitmq import CELERY, CELERY_DEFAULT_QUEUE

UNIT_CONSUMERS = "{consumer}"
# Celery's plumbing, never declared (see the module's docstring): reply and control queues end in
# `.pidbox`, event queues start with `celeryev.`, server-named queues with `amq.gen-`.
PLUMBING_PREFIXES = ("celeryev.", "amq.gen-")
PLUMBING_SUFFIX = ".pidbox"


def declared_queues(named: Sequence[str]) -> Tuple[Tuple[str, ...], Tuple[str, ...]]:
    """The queues to declare, and the named ones refused (Celery's plumbing, names too long)."""
    wanted = tuple(dict.fromkeys(named or (CELERY_DEFAULT_QUEUE,)))
    refused = tuple(
        name
        for name in wanted
        if name.startswith(PLUMBING_PREFIXES)
        or name.endswith(PLUMBING_SUFFIX)
        or len(name.encode("utf-8", "surrogateescape")) > 255
    )
    return tuple(name for name in wanted if name not in refused), refused


class DeclareReader:
    """Sizes and consumers of the named queues, one round trip a tick on one kept connection."""

    def __init__(
        self,
        url: str,
        queues: Sequence[str],
        timeout: float,
        interval: float,
        extras: bool,
        tls_context: Callable[[], Any],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        parts = urlsplit(url)
        self._host = parts.hostname or ""
        self._port = parts.port or AMQP_PORTS[parts.scheme.lower()]
        self._tls = parts.scheme.lower() == "amqps"
        self._tls_context = tls_context
        self.user = unquote(parts.username or "guest")
        self._password = unquote(parts.password or "guest")
        self.vhost = vhost_of(url)
        self.where = describe_amqp_url(url)
        self.queues, self.refused = declared_queues(queues)
        self._timeout = timeout
        # The declares of each tick keep the connection alive: a heartbeat no shorter than twice
        # the interval (the server's, when longer).
        self._heartbeat = math.ceil(interval * 2)
        self._extras = extras
        self._monotonic = monotonic
        self._connection: Optional[AmqpConnection] = None
        # Ticks read this way since the reader last fell back (it asks the API again now and then).
        self.ticks = 0

    def tick(self) -> TickReport:
        started = self._monotonic()
        self.ticks += 1
        errors: List[str] = [
            f"queue {show_name(name)} is not declared: a passive declare would keep Celery's own "
            f"expiring queues (replies, control, events) alive"
            for name in self.refused
        ]
        try:
            results = self._declare(started + self._timeout)
        except Exception as error:  # noqa: BLE001 (every failure is one line; the loop goes on)
            self.close()
            errors.append(describe_amqp_error(error, self.where, self.user, self.vhost, self._timeout))
            return TickReport((), tuple(errors), (), self._monotonic() - started, False, 1)
        samples: List[QueueSample] = []
        consumers = 0
        for result in results:
            if not isinstance(result, Declared):
                errors.append(describe_declare_refusal(result.queue, result.code, result.text, self.user))
                continue
            figures = (Figure("consumers", result.consumers, UNIT_CONSUMERS),) if self._extras else ()
            latency, source = (0.0, None) if result.messages == 0 else (None, LATENCY_UNAVAILABLE)
            samples.append(QueueSample(CELERY, result.queue, result.messages, latency, figures, source))
            consumers += result.consumers
        systems = (SystemSample(CELERY, (Figure("consumers", consumers, UNIT_CONSUMERS),)),) if self._extras else ()
        return TickReport(
            tuple(samples), tuple(errors), (CELERY,), self._monotonic() - started, True, 1, systems if samples else ()
        )

    def _declare(self, deadline: float) -> list:
        """Every queue's declare; a kept connection the server closed meanwhile is opened anew
        once (a broker restart, an operator, a missed heartbeat)."""
        if not self.queues:
            return []
        for attempt in (1, 2):
            reused = self._connection is not None
            connection = self._connection or self._connect(deadline)
            connection.set_timeout(deadline - self._monotonic())
            try:
                return connection.declare(self.queues)
            except (OSError, AmqpClosed):
                # On a kept connection: the server closed it between ticks (AmqpClosed 320
                # CONNECTION_FORCED by an operator or a restart, said at our next read; a reset;
                # a TLS session ended without its close_notify, SSLEOFError).
                self.close()
                if reused and attempt == 1:
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _connect(self, deadline: float) -> AmqpConnection:
        self._connection = AmqpConnection(
            self._host,
            self._port,
            self.user,
            self._password,
            self.vhost,
            max(0.001, deadline - self._monotonic()),
            self._tls_context() if self._tls else None,
            self._heartbeat,
        )
        return self._connection

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
