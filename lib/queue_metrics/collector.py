"""One tick: read every queue of every backend in at most three pipelined round trips.

Round trip 1 reads the registries (which queues exist), round trip 2 every queue's length and
oldest entry, round trip 3 only RQ's job hashes. Discovering Celery's exchanges needs a SCAN,
which costs O(keyspace): it runs on the first tick and then at most every discovery interval.
Only read commands are ever sent.
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

    def tick(self) -> TickReport:
        started = self._monotonic()
        self._round_trips = 0
        problems = Problems()
        try:
            self._maybe_scan_bindings(started)
            readers, queue_reads = self._discover(problems)
            samples = self._read_queues(queue_reads, problems)
        except redis.RedisError as error:
            problems.add(describe_error(error, self._settings))
            return TickReport((), tuple(problems.messages), (), self._monotonic() - started, False, self._round_trips)
        backends = tuple(reader.name for reader in readers)
        return TickReport(
            tuple(sample for sample in samples if sample is not None),
            tuple(problems.messages),
            backends,
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

    def _discover(self, problems: Problems) -> Tuple[list, List[Tuple[object, str]]]:
        """Round trip 1: the registries. Returns the backends in use and (reader, queue) pairs."""
        batches = [reader.registry_batch() for reader in self._readers]
        replies = self._execute(batches)
        in_use = []
        queue_reads: List[Tuple[object, str]] = []
        offset = 0
        for reader, registry in zip(self._readers, batches):
            reader_replies = replies.values[offset: offset + registry.count]
            offset += registry.count
            queues, detected = reader.queues_from_registry(reader_replies, problems)
            if reader is self._celery:
                self._celery_in_use = self._pinned or detected
            if self._pinned or detected:
                in_use.append(reader)
                queue_reads.extend((reader, queue) for queue in queues)
        return in_use, queue_reads

    def _read_queues(
        self, queue_reads: Sequence[Tuple[object, str]], problems: Problems
    ) -> List[Optional[QueueSample]]:
        """Round trips 2 and 3: every queue's reader advanced in lockstep."""
        results: List[Optional[QueueSample]] = [None] * len(queue_reads)
        pending: List[Tuple[int, QueueReader, Batch]] = []
        for index, (reader, queue) in enumerate(queue_reads):
            generator = reader.read_queue(queue, problems)
            pending.append((index, generator, next(generator)))
        while pending:
            replies = self._execute([step for _, _, step in pending])
            still_pending = []
            offset = 0
            for index, generator, step in pending:
                part = Replies(replies.values[offset: offset + step.count], replies.now)
                offset += step.count
                try:
                    still_pending.append((index, generator, generator.send(part)))
                except StopIteration as finished:
                    results[index] = finished.value
            pending = still_pending
        return results

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
