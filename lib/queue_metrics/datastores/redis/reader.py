"""One tick: read every queue of every queue system in one pipelined stream, at most three round
trips deep.

The stream starts with every system's registries (which queues exist) and system-wide figures
and, right behind them, every queue the previous tick found; the follow-up reads (RQ's job hashes,
Celery's priority lists, the hashes of Sidekiq processes and RQ workers new this tick) and the
queues new this tick go out as soon as the replies they depend on are in. So a steady tick waits
for one or two round trips, never more than three, however many queues; and since only the reads
in flight are alive (`RedisConnection.stream` keeps a window), memory does not grow with the
queues' replies. The system reads get their replies before the queue reads. Reads of a queue
that left its registry are dropped unreported.

Between ticks the keyspace walk (`discovery.KeyspaceWalk`) looks for the keys that reveal queues
no registry lists, a short SCAN at a time, paced from its first step: the first tick of `run`
takes one step, `once` and `doctor` walk a whole pass at one step every MIN_STEP_GAP. A tick waits
at most one timeout: once a read of it has failed, it sends nothing more. The collector names no
queue system: it drives whatever `systems.SYSTEMS` holds. Only read commands are ever sent.
"""

from __future__ import annotations

import math
import operator
import time
from collections import deque
from typing import Any, Callable, Deque, Dict, Generator, Iterator, List, Optional, Sequence, Set, Tuple

from queue_metrics.config import Settings
from queue_metrics.datastores import DEFAULT_SOURCE, Location, idle_until
from queue_metrics.datastores.redis.connection import RedisConnection, connect, describe_error, round_trip
from queue_metrics.datastores.redis.keyspace_walk import (
    MIN_STEP_GAP,
    KeyspaceWalk,
    paced_walk_notice,
    whole_walk_notice,
)
from queue_metrics.datastores.redis.url import describe_redis_url
from queue_metrics.errors import ErrorLog, RedisUnavailable, ReplyError, describe_walk_refusal, is_unknown_command
from queue_metrics.sample import QueueSample, TickReport
from queue_metrics.systems import SYSTEMS
from queue_metrics.systems.contract import Batch, Found, QueueSystem, Replies, joined

# `once` and `doctor` say how long their whole walk will take when it takes longer than this.
ANNOUNCE_WALK_SECONDS = 1.0


def make_systems(settings: Settings) -> List[QueueSystem]:
    """The queue systems a Redis holds (those pinned by QUEUE_METRICS_BACKENDS, else all)."""
    specs = {spec.name: spec for spec in SYSTEMS if spec.datastore == KIND}
    chosen = settings.backends or tuple(specs)
    return [specs[name].make(settings.of(name), settings.extras) for name in chosen if name in specs]


KIND = "redis"


def make_reader(
    settings: Settings, location: Location, whole_first_walk: bool, announce: Callable[[str], None]
) -> "RedisReader":
    """The reader of one Redis datastore (`datastores.KINDS`): its own settings carry its URL."""
    own = settings._replace(
        redis_url=location.url, redis_url_var=None if location.source == DEFAULT_SOURCE else location.source
    )
    return RedisReader(own, connect(own), whole_first_walk=whole_first_walk, announce=announce, location=location)


class RedisReader:
    """One Redis datastore: reads all its queues each tick; keeps only what discovery learnt
    between ticks. A `datastores.Datastore`."""

    def __init__(
        self,
        settings: Settings,
        client: RedisConnection,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        whole_first_walk: bool = False,
        sleep: Callable[[float], None] = time.sleep,
        announce: Callable[[str], None] = lambda notice: None,
        location: Optional[Location] = None,
    ) -> None:
        """`whole_first_walk`: the first tick walks a whole pass before reading (`once`,
        `doctor`); else it takes one step, and the walk goes on between ticks (`run`).
        `announce` gets a line for people when the first walk takes long."""
        self._settings = settings
        self._client = client
        self.location = location or settings.locations()[0]
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._whole_first_walk = whole_first_walk
        self._sleep = sleep
        self._announce = announce
        self.systems = make_systems(settings)
        self._pinned = settings.backends is not None
        walking = [system for system in self.systems if system.scan_pattern]
        self.walks = [
            KeyspaceWalk(
                system.scan_pattern,  # type: ignore[arg-type]
                settings.discovery_interval,
                system.found_keys,
                system.name,
                share=len(walking),
            )
            for system in walking
        ]
        self._ticks = 0
        self._round_trips = 0
        self._walk_errors: Dict[str, str] = {}
        # (system, queue) pairs the last tick found: read at once with the next registries. Kept,
        # with the registries' findings they were made from, for as long as those stay the same:
        # ten thousand queues are not listed again at every tick.
        self._known: List[Tuple[QueueSystem, str]] = []
        self._known_set: Set[Tuple[QueueSystem, str]] = set()
        self._known_from: Tuple[Found, ...] = ()
        # What the last tick found of each system, and the lines about registries this Redis
        # user may not read, for `doctor`.
        self.found: Dict[str, Found] = {}
        self.refused: Dict[str, List[Tuple[str, str]]] = {}
        # Systems whose walk stopped because the server has no SCAN and nothing was lost by it.
        self.without_scan: List[str] = []
        self._idle_blocked = False
        # The systems in use at the last tick (None: no tick yet): only theirs are read next.
        self._used_last: Optional[Set[str]] = None

    def tick(self) -> TickReport:
        started = self._monotonic()
        errors = ErrorLog()
        scans = 0
        reads = _TickReads(self, errors)
        self._idle_blocked = False
        try:
            first = self._ticks == 0
            self._ticks += 1
            if first:
                # A walk step that finds Redis hung or gone fails the tick: no second timeout.
                scans = self._first_walk()
                started = self._monotonic()  # the duration is the reads' (doctor times the walk)
            # Walks refused alike (an ACL denying SCAN) say it once.
            errors.messages.extend(dict.fromkeys(self._walk_errors.values()))
            self._walk_errors.clear()
            reads.start()
            self._client.stream(reads.next_batch, reads.deliver)
        except (RedisUnavailable, ReplyError) as error:
            errors.add(describe_error(error, self._settings))
            return TickReport(
                (), tuple(errors.messages), (), self._monotonic() - started, False, reads.round_trips, (), scans
            )
        if reads.listed is not self._known:
            self._known, self._known_set, self._known_from = reads.listed, reads.listed_set, reads.found
        used = {system.name for system in reads.in_use}
        self._used_last = used
        for key in reads.listed:
            errors.messages.extend(reads.queue_errors.get(key, ()))
        for read in reads.system_reads:
            if read.system.name in used:
                errors.messages.extend(read.errors.messages)
        return TickReport(
            tuple(reads.samples[key] for key in reads.listed if key in reads.samples),
            tuple(errors.messages),
            tuple(system.name for system in reads.in_use),
            self._monotonic() - started,
            True,
            reads.round_trips,
            tuple(
                read.result  # type: ignore[misc]
                for read in reads.system_reads
                if read.result is not None and read.system.name in used
            ),
            scans,
        )

    def reset(self) -> None:
        """Forget the connection and what the last tick found, after an unforeseen failure."""
        self._client.close()
        self._known, self._known_set, self._known_from = [], set(), ()

    def walk(self, deadline: float, sleep: Optional[Callable[[float], None]] = None) -> int:
        """Between ticks: walk steps at each walk's pace until `deadline` (monotonic), and return
        at the deadline; returns the steps taken. No step waits past the deadline, even on a hung
        Redis: the next tick starts on time and waits its own one timeout.
        """
        return idle_until([self], deadline, sleep or self._sleep, self._monotonic)

    @property
    def idle_due(self) -> float:
        """When the next walk step is due (monotonic); math.inf with no walk, or after a step
        found the connection failed (the next tick says what is wrong; walk again after it)."""
        if self._idle_blocked or not self.walks:
            return math.inf
        return min(walk.due for walk in self.walks)

    def idle_step(self, deadline: float) -> None:
        walk = min(self.walks, key=lambda candidate: candidate.due)
        try:
            self._step(walk, deadline)
        except (RedisUnavailable, ReplyError, OSError):
            self._idle_blocked = True

    def describe(self) -> str:
        return describe_redis_url(self._settings.redis_url)

    def close(self) -> None:
        self._client.close()

    def _first_walk(self) -> int:
        """The first tick's walk steps; a failed connection raises (the tick reports it).

        `run`: one step of each walk, which covers a keyspace of up to about a thousand keys;
        the rest between ticks at the walk's pace. `once`, `doctor`: each walk's whole first pass,
        a step every MIN_STEP_GAP, the most the walk between ticks ever takes.
        """
        steps = 0
        for walk in list(self.walks):  # _step may drop a walk (a server without SCAN)
            if steps and self._whole_first_walk:
                self._sleep(MIN_STEP_GAP)  # the walks one after the other, at the one pace
            steps += 1
            if not self._step(walk):
                continue
            if not self._whole_first_walk:
                if walk.in_pass:
                    self._announce(paced_walk_notice(walk))
                continue
            while walk.in_pass:
                self._sleep(MIN_STEP_GAP)
                started = self._monotonic()
                steps += 1
                if not self._step(walk):
                    break
                if walk.steps == 2:
                    # The first step told the keyspace's size; the second, without the connection's
                    # set-up (a TLS handshake), what a step takes here.
                    seconds = walk.steps_per_pass * (MIN_STEP_GAP + self._monotonic() - started)
                    if seconds >= ANNOUNCE_WALK_SECONDS:
                        self._announce(whole_walk_notice(walk, seconds))
        return steps

    def _step(self, walk: KeyspaceWalk, deadline: Optional[float] = None) -> bool:
        """One step of `walk`; False when Redis answered it with an error (said at the next
        tick, and the walk tries again a whole pass later). A failed connection raises."""
        values = round_trip(self._client, [walk.command()], 2, deadline)
        failed = next((value for value in values if isinstance(value, ReplyError)), None)
        if failed is None:
            try:
                walk.take(values, self._monotonic())
                return True
            except (ValueError, TypeError) as error:  # not the replies SCAN and DBSIZE give
                problem = f"cannot look for queues in the keyspace (SCAN): unexpected reply ({error})"
        else:
            system = next(system for system in self.systems if system.name == walk.system)
            lost = system.without_walk()
            if lost is None and is_unknown_command(failed):
                # No SCAN on this server, and the user named the queues it would find: nothing is
                # lost, so the walk stops for good and says nothing more (doctor tells of it).
                self.walks.remove(walk)
                self.without_scan.append(system.name)
                return False
            problem = describe_walk_refusal(failed, lost)
        self._walk_errors[walk.pattern] = problem
        walk.restart(self._monotonic())
        return False

    def _in_use(
        self, values: list, registries: Sequence[Batch], errors: ErrorLog
    ) -> Tuple[List[QueueSystem], List[Tuple[QueueSystem, str]], Tuple[Found, ...]]:
        """The systems in use and their (system, queue) pairs, from the registries' replies;
        the last tick's pairs when every system found the same as then."""
        in_use = []
        founds = []
        for system, registry, offset in zip(self.systems, registries, _offsets(registries)):
            # A registry's errors count only for a system in use: in auto mode, a key of the
            # wrong type named `queues` belongs to some other program, not to a broken Sidekiq.
            # But a registry this Redis user may not read (NOPERM) says nothing either way: the
            # system may be there, unseen, and that is always said.
            own = ErrorLog()
            found = system.queues(values[offset : offset + registry.replies], own)
            founds.append(found)
            self.found[system.name] = found
            self.refused[system.name] = own.refusals
            if self._pinned or found.evidence is not None:
                in_use.append(system)
                errors.messages.extend(own.messages)
            else:
                errors.messages.extend(message for _, message in own.refusals)
        found_now = tuple(founds)
        if len(found_now) == len(self._known_from) and all(map(operator.is_, found_now, self._known_from)):
            return in_use, self._known, found_now
        listed = [
            (system, queue) for system, found in zip(self.systems, founds) if system in in_use for queue in found.queues
        ]
        return in_use, listed, found_now


def _offsets(batches: Sequence[Batch]) -> List[int]:
    """Where each batch's replies start among the replies to them all."""
    offsets, offset = [], 0
    for part in batches:
        offsets.append(offset)
        offset += part.replies
    return offsets


class _Read:
    """One generator during one tick (a queue's or a system's): its next batch and its result."""

    __slots__ = ("system", "key", "generator", "errors", "step", "result", "depth")

    def __init__(
        self,
        system: QueueSystem,
        start: Callable[[ErrorLog], Optional[Generator[Batch, Replies, Any]]],
        key: Optional[Tuple[QueueSystem, str]] = None,
        depth: int = 0,
    ) -> None:
        self.system = system
        self.key = key  # (system, queue); None: the system's own read
        # Errors of its own: a read dropped because its queue left the registry says nothing.
        self.errors = ErrorLog()
        self.generator = start(self.errors)
        self.step: Optional[Batch] = None if self.generator is None else next(self.generator)
        self.result: Optional[object] = None
        # Round trips its batches have waited for, counting those it depends on (the registries).
        self.depth = depth

    def advance(self, replies: Replies) -> None:
        """Hand it the replies to its batch; it then has a next batch or its result."""
        try:
            self.step = self.generator.send(replies)  # type: ignore[union-attr]
        except StopIteration as finished:
            self.step = None
            self.result = finished.value
        except Exception as error:  # noqa: BLE001 (a defect in one read must not stop the rest)
            # Bad input the reader did not foresee: that one figure is lost, said in one line,
            # and every other queue is still reported.
            self.step = None
            self.result = None
            self.errors.add(f"{self.system.name}: a reply could not be read ({type(error).__name__}: {error})"[:300])


def _queue_read(key: Tuple[QueueSystem, str], depth: int = 0) -> _Read:
    system, queue = key
    return _Read(system, lambda errors: system.read_queue(queue, errors), key, depth)


class _TickReads:
    """A tick's reads as one stream of pipelined batches (`RedisConnection.stream`).

    Sent in this order: the registries, the system reads, then every queue the last tick found,
    each read made only when its batch is about to go; a read's follow-up goes as soon as its
    replies are in, and the queues new this tick once the registries have answered. Replies come
    back in the order sent, so the registries are read before any queue's replies, and a system's
    read before its queues' (Celery's held messages). Only the reads in flight are alive at once,
    and a finished read leaves only its sample. `round_trips` counts the longest chain of replies
    waited for: 1 for a queue read in one go, 2 with a follow-up (RQ's job hash) or for a queue
    new this tick, at most 3.
    """

    def __init__(self, collector: RedisReader, errors: ErrorLog) -> None:
        self._collector = collector
        self._errors = errors
        self._wall_clock = collector._wall_clock
        self._registries: List[Batch] = []
        self._registries_sent = False
        self._first: Deque[_Read] = deque()
        self._ready: Deque[_Read] = deque()  # reads with a follow-up to send
        self._known: Iterator[Tuple[QueueSystem, str]] = iter(collector._known)
        self._new: Iterator[Tuple[QueueSystem, str]] = iter(())
        self._sent: Deque[Optional[_Read]] = deque()  # None: the registries
        self.listed_set: Set[Tuple[QueueSystem, str]] = set()
        self.found: Tuple[Found, ...] = ()
        self.system_reads: List[_Read] = []
        self.listed: List[Tuple[QueueSystem, str]] = []
        self.in_use: List[QueueSystem] = []
        self.samples: Dict[Tuple[QueueSystem, str], QueueSample] = {}
        self.queue_errors: Dict[Tuple[QueueSystem, str], List[str]] = {}
        self.round_trips = 0

    def start(self) -> None:
        collector = self._collector
        self._registries = [system.registry_batch() for system in collector.systems]
        for system in collector.systems:
            # A system not in use at the last tick has its figures read once it is: a Redis that
            # holds no queues (an app's cache) costs the registries' reads only.
            if collector._used_last is not None and system.name not in collector._used_last:
                continue
            read = _Read(system, system.read_system)
            if read.step is not None:
                self.system_reads.append(read)
                self._first.append(read)

    def next_batch(self) -> Optional[Batch]:
        if not self._registries_sent:
            registries = joined(self._registries)
            self._registries_sent = True
            self._sent.append(None)
            self.round_trips = max(self.round_trips, 1)
            return registries
        if self._first:
            read: Optional[_Read] = self._first.popleft()
        elif self._ready:
            read = self._ready.popleft()
        else:
            read = self._next_queue_read()
        if read is None:
            return None
        read.depth += 1
        self.round_trips = max(self.round_trips, read.depth)
        self._sent.append(read)
        return read.step

    def _next_queue_read(self) -> Optional[_Read]:
        for key in self._known:
            read = _queue_read(key)
            if read.step is not None:
                return read
        for key in self._new:
            read = _queue_read(key, depth=1)  # it waited for the registries
            if read.step is not None:
                return read
        return None

    def deliver(self, values: List[Any]) -> None:
        read = self._sent.popleft()
        if read is None:
            self._take_registries(values)
            return
        key = read.key
        if key is not None and key not in self.listed_set:
            read.generator.close()  # type: ignore[union-attr] # its queue left the registry: dropped unreported
            return
        read.advance(Replies(values, self._wall_clock()))
        if read.step is not None:
            self._ready.append(read)
        elif key is not None:
            if read.result is not None:
                self.samples[key] = read.result  # type: ignore[assignment]
            if read.errors.messages:
                self.queue_errors[key] = read.errors.messages

    def _take_registries(self, values: List[Any]) -> None:
        collector = self._collector
        self.in_use, self.listed, self.found = collector._in_use(values, self._registries, self._errors)
        if self.listed is collector._known:
            self.listed_set = collector._known_set
        else:
            self.listed_set = set(self.listed)
            self._new = iter([key for key in self.listed if key not in collector._known_set])
