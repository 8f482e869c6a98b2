"""One tick: read every queue of every backend in at most three pipelined round trips.

Round trip 1 reads the registries (which queues exist) and, along with them, the length and
oldest entry of every queue the previous tick found; round trip 2 reads the queues that are new
this tick, RQ's job hashes and Celery's non-empty priority lists; round trip 3 only what new
queues need after that. So a steady tick is one round trip (two with RQ) and never more than
three, however many queues. Reads of a queue that left its registry are dropped unreported.

Discovering Celery's exchanges needs a SCAN, which costs O(keyspace): it runs on the first tick
and then at most every discovery interval. Only read commands are ever sent.
"""

from __future__ import annotations

import time
from typing import Callable, List, Optional, Sequence, Tuple

import redis

from queue_metrics.celery import CeleryReader
from queue_metrics.config import Settings
from queue_metrics.connection import describe_error, take_connection
from queue_metrics.reading import Batch, Problems, QueueReader, Replies
from queue_metrics.resp import read_replies
from queue_metrics.rq import RQReader
from queue_metrics.sample import QueueSample, TickReport
from queue_metrics.sidekiq import SidekiqReader

SCAN_COUNT = 1000


def make_readers(settings: Settings) -> list:
    readers = {
        "sidekiq": SidekiqReader(settings.sidekiq_namespace, settings.sidekiq_queues),
        "rq": RQReader(settings.rq_queues),
        "celery": CeleryReader(
            settings.celery_sep,
            settings.celery_priority_steps,
            settings.celery_keyprefix,
            settings.celery_queues,
        ),
    }
    chosen = settings.backends or tuple(readers)
    return [readers[name] for name in chosen]


class Collector:
    """Reads all queues each tick; keeps only what discovery learnt between ticks."""

    def __init__(
        self,
        settings: Settings,
        client: "redis.Redis",
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._client = client
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._readers = make_readers(settings)
        self._pinned = settings.backends is not None
        self._celery: Optional[CeleryReader] = next(
            (reader for reader in self._readers if isinstance(reader, CeleryReader)), None
        )
        self._next_scan_at: Optional[float] = None  # None: scan on the first tick
        self._celery_in_use = self._pinned and self._celery is not None
        self._round_trips = 0
        # (reader, queue) pairs the last tick found: read at once with the next registries.
        self._known: List[Tuple[object, str]] = []

    def tick(self) -> TickReport:
        started = self._monotonic()
        self._round_trips = 0
        problems = Problems()
        reads: List[_QueueRead] = []
        try:
            self._maybe_scan_bindings(started)
            registries = [reader.registry_batch() for reader in self._readers]
            early = {key: _QueueRead(*key) for key in self._known}
            replies = self._execute(registries + [read.step for read in early.values()])
            split = sum(registry.count for registry in registries)
            in_use, listed = self._discover(replies.values[:split], registries, problems)
            _advance(list(early.values()), Replies(replies.values[split:], replies.now))
            reads = [early.get(key) or _QueueRead(*key) for key in listed]
            pending = [read for read in reads if read.step is not None]
            while pending:
                _advance(pending, self._execute([read.step for read in pending]))
                pending = [read for read in pending if read.step is not None]
            self._known = listed
        except redis.RedisError as error:
            problems.add(describe_error(error, self._settings))
            return TickReport((), tuple(problems.messages), (), self._monotonic() - started, False, self._round_trips)
        for read in reads:
            problems.messages.extend(read.problems.messages)
        return TickReport(
            tuple(read.sample for read in reads if read.sample is not None),
            tuple(problems.messages),
            tuple(reader.name for reader in in_use),
            self._monotonic() - started,
            True,
            self._round_trips,
        )

    def _maybe_scan_bindings(self, now: float) -> None:
        if self._celery is None:
            return
        first = self._next_scan_at is None
        if not first and (not self._celery_in_use or now < self._next_scan_at):
            return
        found = []
        cursor = 0
        while True:
            cursor, keys = self._client.scan(cursor, match=self._celery.binding_scan_pattern, count=SCAN_COUNT)
            self._round_trips += 1
            found.extend(key.decode("utf-8", "surrogateescape") for key in keys)
            if cursor == 0:
                break
        self._celery.add_binding_keys(found)
        self._next_scan_at = now + self._settings.discovery_interval

    def _discover(self, values: list, registries: Sequence[Batch], problems: Problems) -> Tuple[list, list]:
        """The backends in use and their (reader, queue) pairs, from the registries' replies."""
        in_use = []
        listed: List[Tuple[object, str]] = []
        offset = 0
        for reader, registry in zip(self._readers, registries):
            queues, detected = reader.queues_from_registry(values[offset: offset + registry.count], problems)
            offset += registry.count
            if reader is self._celery:
                self._celery_in_use = self._pinned or detected
            if self._pinned or detected:
                in_use.append(reader)
                listed.extend((reader, queue) for queue in queues)
        return in_use, listed

    def _execute(self, batches: Sequence[Batch]) -> Replies:
        """One round trip; a failing command comes back as its exception, in its place.

        redis-py connects (TLS, AUTH, SELECT, timeouts); the commands and replies themselves go
        through `resp`, which costs a fraction of redis-py's pipeline per command.
        """
        count = sum(step.count for step in batches)
        if not count:
            return Replies([], self._wall_clock())
        connection = take_connection(self._client)
        try:
            connection.send_packed_command([b"".join(step.packed for step in batches)], check_health=False)
            values = read_replies(connection._sock, count)
        except BaseException:
            # Whatever was left unread would answer the next tick's commands: start afresh.
            connection.disconnect()
            raise
        finally:
            self._client.connection_pool.release(connection)
        self._round_trips += 1
        return Replies(values, self._wall_clock())


class _QueueRead:
    """One queue's reader during one tick: its next batch, its problems, and its result."""

    __slots__ = ("generator", "problems", "step", "sample")

    def __init__(self, reader, queue: str) -> None:
        # Problems of its own: a read dropped because its queue left the registry says nothing.
        self.problems = Problems()
        self.generator: QueueReader = reader.read_queue(queue, self.problems)
        self.step: Optional[Batch] = next(self.generator)
        self.sample: Optional[QueueSample] = None


def _advance(reads: Sequence[_QueueRead], replies: Replies) -> None:
    """Hand each read the replies to its batch; each then has a next batch or its sample."""
    values, now = replies.values, replies.now
    offset = 0
    for read in reads:
        count = read.step.count
        try:
            read.step = read.generator.send(Replies(values[offset: offset + count], now))
        except StopIteration as finished:
            read.step = None
            read.sample = finished.value
        offset += count
