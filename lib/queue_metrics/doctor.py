"""`queue-metrics doctor`: what the collector sees, for people, with a remedy for every problem.

Builds lines only; the CLI prints them. Everything it sends is a read, like the collector.
"""

from __future__ import annotations

import time
from typing import Callable, Dict, List, NamedTuple, Tuple

from queue_metrics.config import Settings
from queue_metrics.datastores import DEFAULT_SOURCE, Location, make_reader
from queue_metrics.datastores.redis.connection import RedisConnection, connect, describe_error, round_trip
from queue_metrics.datastores.redis.reader import RedisReader
from queue_metrics.datastores.redis.resp import pack_commands
from queue_metrics.datastores.redis.url import describe_redis_url
from queue_metrics.errors import (
    RedisUnavailable,
    ReplyError,
    WarningNotice,
    describe_lacking_commands,
    describe_reply_error,
    is_unknown_command,
    no_consumer,
    permission_denied,
    show_name,
)
from queue_metrics.outputs.format import table_lines
from queue_metrics.sample import LATENCY_OBSERVED, LATENCY_UNOBSERVABLE, TickReport

# Every command the collector may send, tried on a key that does not exist.
PROBE_KEY = "queue-metrics:doctor:no-such-key"
READ_COMMANDS: Tuple[Tuple[object, ...], ...] = (
    ("SMEMBERS", PROBE_KEY),
    ("LLEN", PROBE_KEY),
    ("LINDEX", PROBE_KEY, -1),
    ("STRLEN", PROBE_KEY),
    ("LRANGE", PROBE_KEY, -2, -1),
    ("LPOS", PROBE_KEY, "m"),
    ("HGET", PROBE_KEY, "f"),
    ("HMGET", PROBE_KEY, "f"),
    ("HGETALL", PROBE_KEY),
    ("HLEN", PROBE_KEY),
    ("HSCAN", PROBE_KEY, 0, "COUNT", 1),
    ("ZCARD", PROBE_KEY),
    ("ZRANGE", PROBE_KEY, 0, 0, "WITHSCORES"),
    ("ZCOUNT", PROBE_KEY, "-inf", 0),
    ("ZRANGEBYSCORE", PROBE_KEY, "-inf", 0, "LIMIT", 0, 1),
    ("GET", PROBE_KEY),
    ("EXISTS", PROBE_KEY),
    ("SCAN", 0, "MATCH", PROBE_KEY, "COUNT", 1),
    ("DBSIZE",),
)


NO_QUEUES_ANYWHERE = (
    "no queue of a system this reads found (Sidekiq, RQ, Celery, Resque, BullMQ, Dramatiq on Redis; Celery "
    "on RabbitMQ; Solid Queue, GoodJob, Delayed Job, Que, procrastinate, Django tasks on Postgres): is this "
    "where your jobs live? (the app's variables are read: REDIS_URL, HEROKU_REDIS_<COLOR>_URL, "
    "REDIS_PROVIDER, CLOUDAMQP_URL, DATABASE_URL, ...; QUEUE_METRICS_DATASTORES names them)"
)


class Checkup(NamedTuple):
    lines: List[str]
    healthy: bool
    # Whether the datastore holds any queue system's keys.
    holds_queues: bool = True


def checkup_all(settings: Settings, announce: Callable[[str], None] = lambda notice: None) -> Checkup:
    """Every datastore the settings name, one after the other: each one's lines, a blank line
    between them; healthy when all are."""
    lines: List[str] = []
    healthy = True
    locations = settings.locations()
    alone = len(locations) == 1
    holding = []
    for location in locations:
        if lines:
            lines.append("")
        if not alone:
            lines.append(f"== Datastore {location.label} ==")
        if location.kind != "redis":
            result = checkup_other(settings, location)
            lines.extend(result.lines)
            healthy = healthy and result.healthy
            if result.holds_queues:
                holding.append(location.label)
            continue
        own = settings._replace(
            redis_url=location.url, redis_url_var=None if location.source == DEFAULT_SOURCE else location.source
        )
        result = checkup(own, connect(own), announce, location.label, alone)
        lines.extend(result.lines)
        healthy = healthy and result.healthy
        if result.holds_queues:
            holding.append(location.label)
    if not alone and not holding:
        # One datastore without queues is an app's cache; none with any is a problem.
        lines.extend(["", f"Problem: {NO_QUEUES_ANYWHERE}"])
        healthy = False
    return Checkup(lines, healthy)


def checkup_other(settings: Settings, location: Location) -> Checkup:
    """A datastore of another kind than Redis (a RabbitMQ management API): one tick of its
    reader, what it found and every error line."""
    notices: List[str] = []
    reader = make_reader(settings, location, True, notices.append)
    try:
        report = reader.tick()
    finally:
        reader.close()
    lines = [f"{location.kind} at {reader.describe()} (from {location.source})"]
    # The reader's warnings (no management API: passive declares over AMQP instead), once each.
    lines.extend(f"Warning: {notice}" for notice in notices if isinstance(notice, WarningNotice))
    if report.redis_ok:
        by_system: Dict[str, int] = {}
        for sample in report.samples:
            by_system[sample.backend] = by_system.get(sample.backend, 0) + 1
        found = ", ".join(f"{system}: {count} queue{'s' if count != 1 else ''}" for system, count in by_system.items())
        lines.append(f"Read in {report.duration * 1000:.0f} ms: {found or 'no queue'}")
    # What the datastore found of each system (a Postgres database: its tables and their version).
    findings = getattr(reader, "findings", None)
    if findings is not None and report.redis_ok:
        lines.extend(findings())
    # Queues whose latency cannot be estimated (a priority queue, no publish counter): a note each.
    notes = getattr(reader, "latency_notes", {})
    lines.extend(f"Note: queue {show_name(queue)} has no latency: {reason}" for queue, reason in sorted(notes.items()))
    unlistened = unlistened_queues(report)
    lines.extend(f"Problem: {problem}" for problem in [*unlistened, *report.errors])
    healthy = report.redis_ok and not report.errors and not unlistened
    return Checkup(lines, healthy, bool(report.backends) or not report.redis_ok)


def checkup(
    settings: Settings,
    client: RedisConnection,
    announce: Callable[[str], None] = lambda notice: None,
    label: str = "redis",
    alone: bool = True,
) -> Checkup:
    """One Redis datastore. `announce` gets a line at once when the keyspace walk will keep the
    person waiting."""
    lines = [
        f"Redis: {describe_redis_url(settings.redis_url)} (from {settings.redis_url_var or 'the default'}; "
        f"label {label})"
    ]
    problems: List[str] = []
    try:
        lines.append(f"Server: {_server_version(client)}")
        replies = round_trip(client, [pack_commands(READ_COMMANDS)], len(READ_COMMANDS))
    except (RedisUnavailable, ReplyError) as error:
        lines.append(f"Problem: {describe_error(error, settings)}")
        return Checkup(lines, False)
    # A NOPERM on the probe's key means the command itself passed the ACL (Redis checks it first):
    # the user is limited by key patterns, which the systems' lines below tell about. A command
    # the server lacks (older than it, or renamed or disabled in its config) is no ACL matter:
    # what it costs is said, and no grant would help.
    lacking = [
        str(command[0])
        for command, reply in zip(READ_COMMANDS, replies)
        if isinstance(reply, ReplyError) and is_unknown_command(reply)
    ]
    denied = [
        str(command[0])
        for command, reply in zip(READ_COMMANDS, replies)
        if isinstance(reply, ReplyError) and permission_denied(reply) != "key" and str(command[0]) not in lacking
    ]
    if denied:
        problems.append(
            f"the Redis user may not run {', '.join(denied)}: grant it +@read (e.g. ACL SETUSER <user> +@read)"
        )
    else:
        allowed = [str(command[0]) for command in READ_COMMANDS if str(command[0]) not in lacking]
        lines.append(f"Read commands allowed: {', '.join(allowed)}")
    if lacking:
        lines.append(describe_lacking_commands(lacking))
    if any(isinstance(reply, ReplyError) and permission_denied(reply) == "key" for reply in replies):
        lines.append("Keys: this user may read only the keys of its ACL key patterns (NOPERM on a probe key)")

    collector = RedisReader(settings, client, whole_first_walk=True, announce=announce)
    started = time.monotonic()
    report = collector.tick()
    lines.append(
        f"Tick: {report.round_trips} round trip(s) in {report.duration * 1000:.1f} ms, after a keyspace "
        f"walk of {report.scan_round_trips} step(s), paced ({(time.monotonic() - started) * 1000:.0f} ms in all)"
    )
    for system in collector.systems:
        found = collector.found.get(system.name)
        if found is None:
            continue
        refused = collector.refused.get(system.name)
        if found.evidence:
            state = f"in use: {found.evidence}"
        elif refused:
            keys = ", ".join(show_name(key) for key, _ in refused)
            state = f"not readable by this user (NOPERM on {keys}): it may be in use; see the problem below"
        else:
            state = "not detected (no registry key, no queue setting)"
        if settings.backends is not None:
            state = f"pinned by QUEUE_METRICS_BACKENDS; {state}"
        lines.append(f"{system.name}: {state}")
        # Celery's lines describe an app that uses it (key prefixes, priority lists, stamps), so
        # none for a Redis without one; Sidekiq's name the setting that lets it be detected.
        if system.name != "celery" or found.evidence or settings.backends is not None:
            lines.extend(f"  {line}" for line in system.describe())
        if system.name in collector.without_scan:
            lines.append(
                "  this Redis has no SCAN command: only the queues its registries list and its queue setting "
                "names are read"
            )
    holds_queues = bool(report.backends) or not report.redis_ok
    if not holds_queues:
        if alone:
            problems.append(NO_QUEUES_ANYWHERE)
        else:
            # Beside another datastore that holds queues, a Redis without any is the app's cache:
            # the collector reads its registries and prints nothing of it.
            lines.append("Holds no queue of a system this reads (an app's cache?): nothing of it is printed")
    # Unstamped Celery messages: `run` observes their latency from its second tick on (one tick
    # cannot), unless LPOS, which observing needs, is missing or denied. Queues whose latency is
    # unknown for another reason (a malformed message, a refused read) have their own problem.
    # Resque's jobs without an enqueue stamp are observed the same way.
    observed = [
        sample
        for sample in report.samples
        if sample.latency is None and sample.latency_source in (LATENCY_OBSERVED, LATENCY_UNOBSERVABLE)
    ]
    unknown = [sample for sample in observed if sample.backend != "resque"]
    notes = []
    without_lpos = "this Redis has no LPOS" if "LPOS" in lacking else "this Redis user may not run LPOS"
    resque_unknown = len(observed) - len(unknown)
    if resque_unknown and ("LPOS" in lacking or "LPOS" in denied):
        problems.append(
            f"{resque_unknown} Resque queue(s) report no latency: their oldest jobs carry no enqueue time "
            f"(ActiveJob's enqueued_at, judoscale-resque's timestamp), and {without_lpos}, so it cannot be observed"
        )
    elif resque_unknown:
        notes.append(
            f"{resque_unknown} Resque queue(s) show no latency in this one tick: their oldest jobs carry no "
            f"enqueue time (ActiveJob's enqueued_at, judoscale-resque's timestamp), so `run` observes it over "
            f"ticks, as for Celery messages without a stamp"
        )
    if unknown and ("LPOS" in lacking or "LPOS" in denied):
        problems.append(
            f"{len(unknown)} Celery queue(s) report no latency: their messages carry no publish stamp, and "
            f"{without_lpos}, so it cannot be observed; "
            f"add `queue_metrics.celery.install(app)` where the Celery app is created"
        )
    elif unknown:
        notes.append(
            f"{len(unknown)} Celery queue(s) show no latency in this one tick: their messages carry no publish "
            f"stamp, so `run` observes it over ticks (from its second tick, a lower bound that is within one "
            f"interval of the truth once it has seen the list empty or the message arrive); "
            f"`queue_metrics.celery.install(app)` where the Celery app is created gives it to the millisecond "
            f"from the first tick"
        )
    idle = _idle(collector, report)
    problems.extend(idle.values())
    # A system with no worker running at all is said once above, not for each of its queues.
    problems.extend(line for line in unlistened_queues(report) if not any(line.startswith(f"{name}:") for name in idle))
    lines.append("")
    lines.extend(table_lines(report))
    problems.extend(report.errors)
    lines.append("")
    lines.extend(f"Note: {note}" for note in notes)
    if problems:
        lines.extend(f"Problem: {problem}" for problem in problems)
    else:
        lines.append("No problems found.")
    return Checkup(lines, not problems and report.redis_ok, holds_queues)


def unlistened_queues(report: TickReport) -> List[str]:
    """Queues that hold jobs while no running worker is configured to take them: those of any
    system that reports `consumers` (a worker started with the wrong queues, a new queue name)."""
    return [
        no_consumer(sample.backend, sample.queue, sample.size)
        for sample in report.samples
        if sample.size > 0 and any(figure.name == "consumers" and figure.value == 0 for figure in sample.figures)
    ]


def _idle(collector: RedisReader, report: TickReport) -> Dict[str, str]:
    """Systems whose queues hold jobs while the system's own record counts no worker running,
    with the line that says so."""
    problems = {}
    for system in collector.systems:
        workers = system.workers
        if workers is None:
            continue
        counts = [
            figure.value
            for sample in report.systems
            if sample.backend == system.name
            for figure in sample.figures
            if figure.name == workers.figure
        ]
        waiting = sum(sample.size for sample in report.samples if sample.backend == system.name)
        if counts == [0] and waiting:
            jobs = "1 job is" if waiting == 1 else f"{waiting} jobs are"
            problems[system.name] = (
                f"{system.name}: {jobs} waiting and no {workers.noun} is running (is the worker dyno scaled to 0?)"
            )
    return problems


def _server_version(client: RedisConnection) -> str:
    (info,) = round_trip(client, [pack_commands([("INFO", "server")])], 1)
    if isinstance(info, ReplyError):
        if info.code == "NOPERM":
            return "version unknown (INFO is not allowed for this user, which is fine)"
        # Only an ACL denial is one (a renamed command, a proxy: its own words).
        return f"version unknown (INFO answered: {describe_reply_error(info)})"
    fields = dict(line.split(":", 1) for line in info.decode("utf-8", "replace").splitlines() if ":" in line)
    return f"Redis {fields.get('redis_version', '?')} ({fields.get('redis_mode', 'standalone')})"
