"""What one tick produces: small immutable values, formatted elsewhere.

Every output (log lines, JSON, StatsD, OTLP) is a pure function of a `TickReport`:
- a `QueueSample` per queue: size, latency, and the queue system's per-queue `figures`;
- a `SystemSample` per queue system in use: its system-wide `figures` (retry set, busy workers...);
- the tick's own figures (queues read, errors, duration, round trips).
"""

from __future__ import annotations

from typing import FrozenSet, Iterator, NamedTuple, Optional, Sequence, Tuple

# A gauge is a reading at the tick's moment; a counter is how many happened since the last tick
# (l2met `count#`, StatsD `|c`, an OTLP delta sum).
GAUGE = "gauge"
COUNTER = "counter"

# Units as OpenTelemetry spells them (UCUM): `{job}` is a count of jobs, `s` seconds, `1` a ratio.
UNIT_JOBS = "{job}"
UNIT_SECONDS = "s"
UNIT_RATIO = "1"

# Where a latency came from: a publish time the message carries, the loop's own observation, or
# an estimate from a broker's counters (RabbitMQ's management API: publish count and ready count);
# or, with no latency, why none will come: the messages carry no publish time and this Redis has no
# LPOS to observe it with (before 6.0.6, or renamed away).
LATENCY_FROM_STAMP = "stamp"
LATENCY_OBSERVED = "observed"
LATENCY_ESTIMATED = "estimated"
LATENCY_UNOBSERVABLE = "unobservable"
# No latency as the datastore is read now: a RabbitMQ without its management API (passive declares
# tell sizes and consumers only).
LATENCY_UNAVAILABLE = "unavailable"


class Figure(NamedTuple):
    """One named number beside size and latency, e.g. ("retry", 3, "{job}", GAUGE)."""

    name: str
    value: float
    unit: str = UNIT_JOBS
    kind: str = GAUGE


class QueueSample(NamedTuple):
    """One queue's reading. `latency` is None when it cannot be known (never made up).

    A NamedTuple: immutable like a frozen dataclass, and several times cheaper to create, which
    counts at ten thousand queues a tick.
    """

    backend: str
    queue: str
    size: int
    latency: Optional[float]
    # The queue system's own per-queue figures (RQ's registries, Celery's unacked messages).
    figures: Tuple[Figure, ...] = ()
    # LATENCY_FROM_STAMP, LATENCY_OBSERVED, LATENCY_ESTIMATED, LATENCY_UNOBSERVABLE, or None when
    # there is no latency or one kind only.
    latency_source: Optional[str] = None


class SystemSample(NamedTuple):
    """System-wide figures of one queue system (Sidekiq's retry set, RQ's busy workers, ...)."""

    backend: str
    figures: Tuple[Figure, ...]


class DatastoreSection(NamedTuple):
    """One datastore's part of a tick: its samples are the next `queues` of the report's samples,
    its system figures the next `systems` of its systems (datastores in the settings' order)."""

    label: str
    kind: str
    # Where it is (a URL without credentials) and where that came from (a variable's name).
    where: str
    source: str
    # False when it could not be read this tick.
    ok: bool
    queues: int
    systems: int
    errors: int
    # The (system, queue) pairs and the systems whose names carry the label: a datastore earlier
    # in the settings' order holds the same (see `collector.Naming`).
    labeled_queues: FrozenSet[Tuple[str, str]] = frozenset()
    labeled_systems: FrozenSet[str] = frozenset()


class TickReport(NamedTuple):
    """Everything one tick read, and every problem it met on the way."""

    samples: Tuple[QueueSample, ...]
    errors: Tuple[str, ...]
    # The queue systems the tick covered (pinned, or detected from their keys).
    backends: Tuple[str, ...]
    # Seconds the tick took, from its first command to its last reply.
    duration: float
    # False when Redis could not be reached or answered nothing usable.
    redis_ok: bool
    # Redis round trips the tick's reads made (at most three).
    round_trips: int = 0
    systems: Tuple[SystemSample, ...] = ()
    # Keyspace walk steps (SCAN) made within the tick: on the first tick only; later steps
    # happen between ticks.
    scan_round_trips: int = 0
    # Each datastore's part, in order; empty for one datastore's own report (a reader's).
    datastores: Tuple[DatastoreSection, ...] = ()


def sections(
    report: TickReport,
) -> Iterator[Tuple[Optional[DatastoreSection], Sequence[QueueSample], Sequence[SystemSample]]]:
    """Each datastore's section with its samples and system figures; one unnamed section (None)
    for a report without datastores."""
    if not report.datastores:
        yield None, report.samples, report.systems
        return
    queues = systems = 0
    for section in report.datastores:
        yield (
            section,
            report.samples[queues : queues + section.queues],
            report.systems[systems : systems + section.systems],
        )
        queues += section.queues
        systems += section.systems


def name_prefix(prefix: str, section: Optional[DatastoreSection], backend: str, queue: Optional[str] = None) -> str:
    """The metric names' first part for a queue (or, without `queue`, a system's figures):
    `<prefix>.<label>` when the datastore's names carry its label, else `<prefix>`."""
    if section is None:
        return prefix
    if queue is None:
        labeled = backend in section.labeled_systems
    else:
        labeled = (backend, queue) in section.labeled_queues
    return f"{prefix}.{section.label}" if labeled else prefix
