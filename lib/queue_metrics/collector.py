"""One tick: read every queue of every queue system in at most three pipelined round trips.

Round trip 1 reads every system's registries (which queues exist) and system-wide figures and,
along with them, every queue the previous tick found; round trip 2 reads the queues that are new
this tick and the follow-up reads of the others (RQ's job hashes, Celery's priority lists, the
hashes of Sidekiq processes and RQ workers that are new this tick); round trip 3 only what new
queues need after that. So a steady tick is one or two round trips, never more than three,
however many queues. At each step the system reads get their replies before the queue reads.
Reads of a queue that left its registry are dropped unreported.

Between ticks the keyspace walk (`discovery.KeyspaceWalk`) looks for the keys that reveal queues
no registry lists, a short SCAN at a time. The collector names no queue system: it drives
whatever `systems.SYSTEMS` holds. Only read commands are ever sent.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Dict, Generator, List, Optional, Sequence, Tuple

from queue_metrics.config import Settings
from queue_metrics.connection import RedisConnection, describe_error, round_trip
from queue_metrics.discovery import KeyspaceWalk
from queue_metrics.errors import ErrorLog, RedisUnavailable, ReplyError, describe_reply_error
from queue_metrics.plugin import Batch, Found, QueueSystem, Replies
from queue_metrics.sample import TickReport
from queue_metrics.systems import SYSTEMS

# How long the first tick may walk the keyspace before reading, in `run`; the rest of the walk
# happens between ticks. `once` walks it whole.
FIRST_WALK_SECONDS = 2.0


def make_systems(settings: Settings) -> List[QueueSystem]:
    specs = {spec.name: spec for spec in SYSTEMS}
    chosen = settings.backends or tuple(specs)
    return [specs[name].make(settings.of(name), settings.extras) for name in chosen]


class Collector:
    """Reads all queues each tick; keeps only what discovery learnt between ticks."""

    def __init__(
        self,
        settings: Settings,
        client: RedisConnection,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        first_walk_seconds: float = FIRST_WALK_SECONDS,
    ) -> None:
        self._settings = settings
        self._client = client
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._first_walk_seconds = first_walk_seconds
        self.systems = make_systems(settings)
        self._pinned = settings.backends is not None
        self.walks = [
            KeyspaceWalk(system.scan_pattern, settings.discovery_interval, system.found_keys)
            for system in self.systems
            if system.scan_pattern
        ]
        self._ticks = 0
        self._round_trips = 0
        self._walk_errors: Dict[str, str] = {}
        # (system, queue) pairs the last tick found: read at once with the next registries.
        self._known: List[Tuple[QueueSystem, str]] = []
        # What the last tick found of each system, for `doctor`.
        self.found: Dict[str, Found] = {}

    def tick(self) -> TickReport:
        started = self._monotonic()
        self._round_trips = 0
        errors = ErrorLog()
        reads: List[_Read] = []
        systems: List[_Read] = []
        scans = 0
        try:
            if self._ticks == 0:
                scans = self.walk(started + self._first_walk_seconds, sleep=None)
            self._ticks += 1
            errors.messages.extend(self._walk_errors.values())
            self._walk_errors.clear()
            registries = [system.registry_batch() for system in self.systems]
            early = {key: _queue_read(*key) for key in self._known}
            for system in self.systems:
                read = _Read(system, system.read_system)
                if read.step is not None:
                    systems.append(read)
            # At every step the system reads go before the queue reads: a queue's read can use
            # what its system's read found in the same round trip (Celery's held messages).
            replies = self._execute(
                registries
                + [
                    read.step
                    for read in (*systems, *early.values())  # type: ignore[misc]
                    if read.step is not None
                ]
            )
            split = sum(registry.replies for registry in registries)
            in_use, listed = self._in_use(replies.values[:split], registries, errors)
            _advance([*systems, *early.values()], Replies(replies.values[split:], replies.now))
            reads = [early.get(key) or _queue_read(*key) for key in listed]
            pending = [read for read in (*systems, *reads) if read.step is not None]
            while pending:
                _advance(pending, self._execute([read.step for read in pending]))  # type: ignore[misc]
                pending = [read for read in pending if read.step is not None]
            self._known = listed
        except (RedisUnavailable, ReplyError) as error:
            errors.add(describe_error(error, self._settings))
            return TickReport(
                (), tuple(errors.messages), (), self._monotonic() - started, False, self._round_trips, (), scans
            )
        used = {system.name for system in in_use}
        for read in (*reads, *systems):
            if read.system.name in used:
                errors.messages.extend(read.errors.messages)
        return TickReport(
            tuple(read.result for read in reads if read.result is not None),  # type: ignore[misc]
            tuple(errors.messages),
            tuple(system.name for system in in_use),
            self._monotonic() - started,
            True,
            self._round_trips,
            tuple(
                read.result  # type: ignore[misc]
                for read in systems
                if read.result is not None and read.system.name in used
            ),
            scans,
        )

    def reset(self) -> None:
        """Forget the connection and what the last tick found, after an unforeseen failure."""
        self._client.close()
        self._known = []

    def walk(self, deadline: float, sleep: Optional[Callable[[float], None]] = time.sleep) -> int:
        """Take keyspace walk steps until `deadline` (monotonic); returns the steps taken.

        With `sleep`, steps keep their pace and the call returns at the deadline; without, the
        walks run flat out until each has finished a pass (or the deadline comes first).
        """
        steps = 0
        while self.walks:
            if sleep is None:
                pending = [walk for walk in self.walks if walk.passes == 0 or walk.in_pass]
                if not pending or self._monotonic() >= deadline:
                    return steps
                walk = pending[0]
            else:
                walk = min(self.walks, key=lambda candidate: candidate.due)
                wait = walk.due - self._monotonic()
                if walk.due >= deadline:
                    sleep(max(0.0, deadline - self._monotonic()))
                    return steps
                if wait > 0:
                    sleep(wait)
            try:
                values = round_trip(self._client, [walk.command()], 2)
            except (RedisUnavailable, ReplyError, OSError):
                # The next tick says what is wrong with the connection; walk again after it.
                if sleep is not None:
                    sleep(max(0.0, deadline - self._monotonic()))
                return steps
            steps += 1
            failed = next((value for value in values if isinstance(value, ReplyError)), None)
            if failed is None:
                try:
                    walk.take(values, self._monotonic())
                    continue
                except (ValueError, TypeError) as error:  # not the replies SCAN and DBSIZE give
                    problem = f"unexpected reply ({error})"
            else:
                problem = describe_reply_error(failed)
            self._walk_errors[walk.pattern] = f"cannot look for queues in the keyspace (SCAN): {problem}"
            walk.restart(self._monotonic())
            if sleep is None:
                # No flat-out retries: the walk tries again a whole pass later, between ticks.
                return steps
        if sleep is not None:
            sleep(max(0.0, deadline - self._monotonic()))
        return steps

    def _in_use(
        self, values: list, registries: Sequence[Batch], errors: ErrorLog
    ) -> Tuple[List[QueueSystem], List[Tuple[QueueSystem, str]]]:
        """The systems in use and their (system, queue) pairs, from the registries' replies."""
        in_use = []
        listed: List[Tuple[QueueSystem, str]] = []
        offset = 0
        for system, registry in zip(self.systems, registries):
            # A registry's errors count only for a system in use: in auto mode, a key of the
            # wrong type named `queues` belongs to some other program, not to a broken Sidekiq.
            own = ErrorLog()
            found = system.queues(values[offset : offset + registry.replies], own)
            offset += registry.replies
            self.found[system.name] = found
            if self._pinned or found.evidence is not None:
                in_use.append(system)
                listed.extend((system, queue) for queue in found.queues)
                errors.messages.extend(own.messages)
        return in_use, listed

    def _execute(self, batches: Sequence[Batch]) -> Replies:
        """One round trip; a failing command comes back as its ReplyError, in its place."""
        count = sum(step.replies for step in batches)
        if not count:
            return Replies([], self._wall_clock())
        values = round_trip(self._client, [step.packed for step in batches], count)
        self._round_trips += 1
        return Replies(values, self._wall_clock())


class _Read:
    """One generator during one tick (a queue's or a system's): its next batch and its result."""

    __slots__ = ("system", "generator", "errors", "step", "result")

    def __init__(
        self, system: QueueSystem, start: Callable[[ErrorLog], Optional[Generator[Batch, Replies, Any]]]
    ) -> None:
        self.system = system
        # Errors of its own: a read dropped because its queue left the registry says nothing.
        self.errors = ErrorLog()
        self.generator = start(self.errors)
        self.step: Optional[Batch] = None if self.generator is None else next(self.generator)
        self.result: Optional[object] = None


def _queue_read(system: QueueSystem, queue: str) -> _Read:
    return _Read(system, lambda errors: system.read_queue(queue, errors))


def _advance(reads: Sequence[_Read], replies: Replies) -> None:
    """Hand each read the replies to its batch; each then has a next batch or its result."""
    values, now = replies.values, replies.now
    offset = 0
    for read in reads:
        count = read.step.replies  # type: ignore[union-attr]
        try:
            read.step = read.generator.send(Replies(values[offset : offset + count], now))  # type: ignore[union-attr]
        except StopIteration as finished:
            read.step = None
            read.result = finished.value
        except Exception as error:  # noqa: BLE001 (a defect in one read must not stop the rest)
            # Bad input the reader did not foresee: that one figure is lost, said in one line,
            # and every other queue is still reported.
            read.step = None
            read.result = None
            read.errors.add(f"{read.system.name}: a reply could not be read ({type(error).__name__}: {error})"[:300])
        offset += count
