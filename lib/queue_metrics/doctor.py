"""`queue-metrics doctor`: what the collector sees, for people, with a remedy for every problem.

Builds lines only; the CLI prints them. Everything it sends is a read, like the collector.
"""

from __future__ import annotations

import time
from typing import List, NamedTuple, Tuple

from queue_metrics.collector import Collector
from queue_metrics.config import Settings
from queue_metrics.connection import RedisConnection, describe_error, round_trip
from queue_metrics.errors import RedisUnavailable, ReplyError
from queue_metrics.format import table_lines
from queue_metrics.redis_url import describe_redis_url
from queue_metrics.resp import pack_commands

# Every command the collector may send, tried on a key that does not exist.
PROBE_KEY = "queue-metrics:doctor:no-such-key"
READ_COMMANDS: Tuple[Tuple[object, ...], ...] = (
    ("SMEMBERS", PROBE_KEY),
    ("LLEN", PROBE_KEY),
    ("LINDEX", PROBE_KEY, -1),
    ("LPOS", PROBE_KEY, "m"),
    ("HGET", PROBE_KEY, "f"),
    ("HMGET", PROBE_KEY, "f"),
    ("HLEN", PROBE_KEY),
    ("HSCAN", PROBE_KEY, 0, "COUNT", 1),
    ("ZCARD", PROBE_KEY),
    ("GET", PROBE_KEY),
    ("EXISTS", PROBE_KEY),
    ("SCAN", 0, "MATCH", PROBE_KEY, "COUNT", 1),
    ("DBSIZE",),
)


class Checkup(NamedTuple):
    lines: List[str]
    healthy: bool


def checkup(settings: Settings, client: RedisConnection) -> Checkup:
    lines = [f"Redis: {describe_redis_url(settings.redis_url)} (from {settings.redis_url_var or 'the default'})"]
    problems: List[str] = []
    try:
        lines.append(f"Server: {_server_version(client)}")
        replies = round_trip(client, [pack_commands(READ_COMMANDS)], len(READ_COMMANDS))
    except (RedisUnavailable, ReplyError) as error:
        lines.append(f"Problem: {describe_error(error, settings)}")
        return Checkup(lines, False)
    denied = [str(command[0]) for command, reply in zip(READ_COMMANDS, replies) if isinstance(reply, ReplyError)]
    if denied:
        problems.append(
            f"the Redis user may not run {', '.join(denied)}: grant it +@read (e.g. ACL SETUSER <user> +@read)"
        )
    else:
        lines.append(f"Read commands allowed: {', '.join(str(command[0]) for command in READ_COMMANDS)}")

    collector = Collector(settings, client, first_walk_seconds=float("inf"))
    started = time.monotonic()
    report = collector.tick()
    lines.append(
        f"Tick: {report.round_trips} round trip(s) in {report.duration * 1000:.1f} ms, after a keyspace "
        f"walk of {report.scan_round_trips} step(s) ({(time.monotonic() - started) * 1000:.0f} ms in all)"
    )
    for system in collector.systems:
        found = collector.found.get(system.name)
        if found is None:
            continue
        state = f"in use: {found.evidence}" if found.evidence else "not detected (no registry key, no queue setting)"
        if settings.backends is not None:
            state = f"pinned by QUEUE_METRICS_BACKENDS; {state}"
        lines.append(f"{system.name}: {state}")
        # Celery's lines describe an app that uses it (key prefixes, priority lists, stamps), so
        # none for a Redis without one; Sidekiq's name the setting that lets it be detected.
        if system.name != "celery" or found.evidence or settings.backends is not None:
            lines.extend(f"  {line}" for line in system.describe())
    if not report.backends and report.redis_ok:
        problems.append(
            "no Sidekiq, RQ or Celery queues found in this Redis: is this the Redis your jobs use? "
            "(check REDIS_URL / QUEUE_METRICS_REDIS_URL)"
        )
    # Unstamped Celery messages: `run` observes their latency from its second tick on (one tick
    # cannot), unless LPOS, which observing needs, is missing or denied.
    unknown = [sample for sample in report.samples if sample.latency is None and sample.backend == "celery"]
    notes = []
    if unknown and "LPOS" in denied:
        problems.append(
            f"{len(unknown)} Celery queue(s) report no latency: their messages carry no publish stamp, and "
            f"without LPOS (Redis before 6.0.6, or not allowed for this user) it cannot be observed; "
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
    lines.append("")
    lines.extend(table_lines(report))
    problems.extend(report.errors)
    lines.append("")
    lines.extend(f"Note: {note}" for note in notes)
    if problems:
        lines.extend(f"Problem: {problem}" for problem in problems)
    else:
        lines.append("No problems found.")
    return Checkup(lines, not problems and report.redis_ok)


def _server_version(client: RedisConnection) -> str:
    (info,) = round_trip(client, [pack_commands([("INFO", "server")])], 1)
    if isinstance(info, ReplyError):
        return "version unknown (INFO is not allowed for this user, which is fine)"
    fields = dict(line.split(":", 1) for line in info.decode("utf-8", "replace").splitlines() if ":" in line)
    return f"Redis {fields.get('redis_version', '?')} ({fields.get('redis_mode', 'standalone')})"
