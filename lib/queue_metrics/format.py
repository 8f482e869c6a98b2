"""Turning a TickReport into output lines. Pure functions: no I/O, no clock.

Librato/l2met lines follow the logfmt grammar: `sample#<name>=<value>[unit]`, several pairs per
line, an optional `source=` for the whole line. Metric names use only `A-Za-z0-9.:_-`; a queue
name that needs changing to fit gets a hash of its real name appended, so two queues never share
a metric name.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from typing import List, Optional

from queue_metrics.sample import TickReport

# Logplex cuts lines at 10,000 bytes; stay far below so a drain never sees half a line.
MAX_LINE_BYTES = 1000
# Keeps `<prefix>.<backend>.<queue>.latency` within Librato's 255-character name limit.
MAX_QUEUE_PART = 120
NAME_SAFE = re.compile(r"[A-Za-z0-9.:_-]+\Z")
NAME_UNSAFE_CHAR = re.compile(r"[^A-Za-z0-9.:_-]")
DIGEST_LENGTH = 8
# A name that already looks hashed is hashed again, so a real queue name can never equal
# another queue's hashed form.
LOOKS_HASHED = re.compile(r"_[0-9a-f]{%d}\Z" % DIGEST_LENGTH)


@functools.lru_cache(maxsize=65536)
def metric_queue_part(queue: str) -> str:
    """The queue's part of a metric name: the name itself when safe, else cleaned and hashed."""
    if NAME_SAFE.match(queue) and len(queue) <= MAX_QUEUE_PART and not LOOKS_HASHED.search(queue):
        return queue
    digest = hashlib.sha1(queue.encode("utf-8", "surrogateescape")).hexdigest()[:DIGEST_LENGTH]
    cleaned = NAME_UNSAFE_CHAR.sub("_", queue)[: MAX_QUEUE_PART - DIGEST_LENGTH - 1]
    return f"{cleaned}_{digest}"


def format_seconds(seconds: float) -> str:
    """Seconds with at most millisecond precision and no trailing zeros: 3.2, 0.05, 12."""
    text = f"{max(0.0, seconds):.3f}".rstrip("0").rstrip(".")
    return text or "0"


def metric_base(prefix: str, backend: Optional[str], queue: str) -> str:
    parts = [prefix, backend, metric_queue_part(queue)] if backend else [prefix, metric_queue_part(queue)]
    return ".".join(parts)


def librato_lines(report: TickReport, prefix: str = "queue", source: Optional[str] = None,
                  show_backend: Optional[bool] = None) -> List[str]:
    """The tick as l2met lines: queue pairs packed into short lines, then the collector line.

    `show_backend` (default: when the tick covered more than one backend) puts the backend
    name after the prefix: `queue.sidekiq.default.size`.
    """
    if show_backend is None:
        show_backend = len(report.backends) > 1
    start = f"source={source}" if source else ""
    lines: List[str] = []
    current = start
    for sample in report.samples:
        base = metric_base(prefix, sample.backend if show_backend else None, sample.queue)
        pairs = f"sample#{base}.size={sample.size}"
        if sample.latency is not None:
            pairs += f" sample#{base}.latency={format_seconds(sample.latency)}s"
        candidate = f"{current} {pairs}" if current else pairs
        if len(candidate) > MAX_LINE_BYTES and current != start:
            lines.append(current)
            candidate = f"{start} {pairs}" if start else pairs
        current = candidate
    if current != start:
        lines.append(current)
    lines.append(collector_line(report, prefix, start))
    return lines


def collector_line(report: TickReport, prefix: str, start: str = "") -> str:
    """Printed every tick, queues or not, so "metric absent" alerts can tell a dead collector."""
    pairs = (
        f"sample#{prefix}.collector.queues={len(report.samples)} "
        f"sample#{prefix}.collector.errors={len(report.errors)} "
        f"sample#{prefix}.collector.duration={format_seconds(report.duration)}s"
    )
    return f"{start} {pairs}" if start else pairs


def json_line(report: TickReport, time: Optional[float] = None, source: Optional[str] = None) -> str:
    """The tick as one JSON object on one line."""
    document = {
        "time": time,
        "source": source,
        "backends": list(report.backends),
        "queues": [
            {"backend": s.backend, "queue": _json_text(s.queue), "size": s.size,
             "latency": None if s.latency is None else round(max(0.0, s.latency), 3)}
            for s in report.samples
        ],
        "errors": list(report.errors),
        "duration": round(report.duration, 6),
        "redis_ok": report.redis_ok,
    }
    return json.dumps(document, separators=(",", ":"))


def _json_text(name: str) -> str:
    # Undecodable bytes are kept as surrogates internally; JSON shows them as \\xNN escapes.
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
