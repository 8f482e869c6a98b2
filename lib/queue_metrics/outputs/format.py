"""Turning a TickReport into output lines. Pure functions: no I/O, no clock.

Librato/l2met lines follow the logfmt grammar: `sample#<name>=<value>[unit]` for gauges and
`count#<name>=<value>` for counters, several pairs per line, an optional `source=` for the whole
line. Metric names use only `A-Za-z0-9.:_-`; a queue name that needs changing to fit gets a hash
of its real name appended, so two queues never share a metric name.

The naming rule (it depends on nothing but the prefix, the system and the queue, so a name never
changes while the process runs, nor across restarts):

    <prefix>.<system>.<queue>.<figure>     a queue's figure: queue.sidekiq.default.size
    <prefix>.<system>.<figure>             a system-wide figure: queue.sidekiq.retry
    <prefix>.collector.<figure>            the collector's own: queue.collector.errors

After the prefix a queue's names have three or more dot-separated parts and the others two, the
first of which is a system name or `collector`: no queue name can make them collide.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from typing import Dict, Iterable, Iterator, List, Optional, Tuple

from queue_metrics.errors import queue_subject, readable_name
from queue_metrics.sample import (
    COUNTER,
    LATENCY_OBSERVED,
    LATENCY_UNOBSERVABLE,
    UNIT_SECONDS,
    Figure,
    QueueSample,
    TickReport,
)

# Logplex cuts lines at 10,000 bytes; stay far below so a drain never sees half a line.
MAX_LINE_BYTES = 1000
# Keeps `<prefix>.<system>.<queue>.<figure>` within Librato's 255-character name limit.
MAX_QUEUE_PART = 120
NAME_SAFE = re.compile(r"[A-Za-z0-9.:_-]+\Z")
NAME_UNSAFE_CHAR = re.compile(r"[^A-Za-z0-9.:_-]")
DIGEST_LENGTH = 8
# A name that already looks hashed is hashed again, so a real queue name can never equal
# another queue's hashed form.
LOOKS_HASHED = re.compile(r"_[0-9a-f]{%d}\Z" % DIGEST_LENGTH)
COLLECTOR = "collector"


def metric_queue_part(queue: str) -> str:
    """The queue's part of a metric name: the name itself when safe, else cleaned and hashed."""
    if len(queue) <= MAX_QUEUE_PART and NAME_SAFE.match(queue) and not _looks_hashed(queue):
        return queue
    # Only these are cached: keeping every safe name too held 0.7 MB at ten thousand queues, for
    # a check of a fraction of a microsecond.
    return _cleaned_queue_part(queue)


def _looks_hashed(queue: str) -> bool:
    # The regular expression only for names with an underscore where a digest would begin.
    return queue[-DIGEST_LENGTH - 1 : -DIGEST_LENGTH] == "_" and LOOKS_HASHED.search(queue) is not None


@functools.lru_cache(maxsize=4096)
def _cleaned_queue_part(queue: str) -> str:
    cleaned = NAME_UNSAFE_CHAR.sub("_", queue)[: MAX_QUEUE_PART - DIGEST_LENGTH - 1]
    return f"{cleaned}_{name_digest(queue)}"


def name_digest(queue: str) -> str:
    """The short hash that keeps a cleaned or shortened queue name unique."""
    # Imported on first use: hashlib loads OpenSSL, and most apps' queue names need no digest.
    import hashlib

    return hashlib.sha1(queue.encode("utf-8", "surrogateescape")).hexdigest()[:DIGEST_LENGTH]


def queue_metric_base(prefix: str, backend: str, queue: str) -> str:
    """`<prefix>.<system>.<queue>`: add `.<figure>` for a queue's metric name."""
    return f"{prefix}.{backend}.{metric_queue_part(queue)}"


def system_metric_name(prefix: str, backend: str, figure: str) -> str:
    return f"{prefix}.{backend}.{figure}"


def collector_metric_name(prefix: str, figure: str) -> str:
    return f"{prefix}.{COLLECTOR}.{figure}"


def format_seconds(seconds: float) -> str:
    """Seconds with at most millisecond precision and no trailing zeros: 3.2, 0.05, 12."""
    text = f"{max(0.0, seconds):.3f}".rstrip("0").rstrip(".")
    return text or "0"


def format_value(figure: Figure) -> str:
    """A figure's value as l2met reads it: never negative, seconds with the `s` unit."""
    if figure.unit == UNIT_SECONDS:
        return format_seconds(figure.value) + "s"
    value = max(0.0, figure.value)
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3f}".rstrip("0").rstrip(".")


def l2met_pair(name: str, figure: Figure) -> str:
    kind = "count" if figure.kind == COUNTER else "sample"
    return f"{kind}#{name}={format_value(figure)}"


def collector_figures(report: TickReport, dropped: Optional[int] = None) -> Tuple[Figure, ...]:
    """The collector's own figures; `dropped` (metrics an output could not send) when outputs run."""
    figures = [
        Figure("queues", len(report.samples), "{queue}"),
        Figure("errors", len(report.errors), "{error}"),
        Figure("duration", report.duration, UNIT_SECONDS),
    ]
    if dropped is not None:
        figures.append(Figure("dropped", dropped, "{datapoint}", COUNTER))
    return tuple(figures)


def queue_pairs(prefix: str, sample: QueueSample) -> str:
    base = queue_metric_base(prefix, sample.backend, sample.queue)
    pairs = f"sample#{base}.size={sample.size}"
    if sample.latency is not None:
        pairs += f" sample#{base}.latency={format_seconds(sample.latency)}s"
    for kind, tail in figure_tails(sample.figures):
        pairs += f" {kind}{base}{tail}"
    return pairs


@functools.lru_cache(maxsize=4096)
def figure_tails(figures: Tuple[Figure, ...]) -> Tuple[Tuple[str, str], ...]:
    """Each figure's `sample#`/`count#` and `.<name>=<value>`, as `l2met_pair` writes them.

    Formatted once per distinct tuple: most queues share a few (RQ's six registries all empty,
    Celery's held count 0), and ten thousand queues would format them again every tick.
    """
    return tuple(
        ("count#" if figure.kind == COUNTER else "sample#", f".{figure.name}={format_value(figure)}")
        for figure in figures
    )


def librato_lines(
    report: TickReport, prefix: str = "queue", source: Optional[str] = None, dropped: Optional[int] = None
) -> List[str]:
    """The tick as l2met lines (see `librato_line_stream`), all at once."""
    return list(librato_line_stream(report, prefix, source, dropped))


def librato_line_stream(
    report: TickReport, prefix: str = "queue", source: Optional[str] = None, dropped: Optional[int] = None
) -> Iterator[str]:
    """The tick as l2met lines: queue pairs, then system figures, packed into short lines; then
    the collector line, alone, every tick. Made as they are written: ten thousand queues' lines
    are never all in memory at once."""
    start = f"source={source}" if source else ""
    groups = itertools.chain(
        (queue_pairs(prefix, sample) for sample in report.samples),
        (
            l2met_pair(system_metric_name(prefix, system.backend, figure.name), figure)
            for system in report.systems
            for figure in system.figures
        ),
    )
    yield from _packed(groups, start)
    collector = " ".join(
        l2met_pair(collector_metric_name(prefix, figure.name), figure) for figure in collector_figures(report, dropped)
    )
    yield f"{start} {collector}" if start else collector


def _packed(groups: Iterable[str], start: str) -> Iterator[str]:
    """Groups of pairs joined into lines of at most MAX_LINE_BYTES; a group is never split."""
    current = start
    for pairs in groups:
        candidate = f"{current} {pairs}" if current else pairs
        if len(candidate) > MAX_LINE_BYTES and current != start:
            yield current
            candidate = f"{start} {pairs}" if start else pairs
        current = candidate
    if current != start:
        yield current


def _json_number(figure: Figure) -> object:
    if figure.unit == UNIT_SECONDS:
        return round(max(0.0, figure.value), 3)
    if float(figure.value).is_integer():
        return int(figure.value)
    return round(figure.value, 4)


def json_document(
    report: TickReport, time: Optional[float] = None, source: Optional[str] = None, dropped: Optional[int] = None
) -> Dict[str, object]:
    queues = []
    for s in report.samples:
        entry: Dict[str, object] = {
            "backend": s.backend,
            "queue": readable_name(s.queue),
            "size": s.size,
            "latency": None if s.latency is None else round(max(0.0, s.latency), 3),
        }
        if s.latency_source is not None:
            entry["latency_source"] = s.latency_source
        for figure in s.figures:
            entry[figure.name] = _json_number(figure)
        queues.append(entry)
    systems = []
    for system in report.systems:
        entry = {"backend": system.backend}
        entry.update((figure.name, _json_number(figure)) for figure in system.figures)
        systems.append(entry)
    document: Dict[str, object] = {
        "time": time,
        "source": source,
        "backends": list(report.backends),
        "queues": queues,
        "systems": systems,
        "errors": list(report.errors),
        "duration": round(report.duration, 6),
        "redis_ok": report.redis_ok,
    }
    if dropped is not None:
        document["dropped"] = dropped
    return document


def json_line(
    report: TickReport, time: Optional[float] = None, source: Optional[str] = None, dropped: Optional[int] = None
) -> str:
    """The tick as one JSON object on one line."""
    return json.dumps(json_document(report, time, source, dropped), separators=(",", ":"))


def table_lines(report: TickReport) -> List[str]:
    """The tick for people: a table per system, with every per-queue figure JSON has, then the
    system-wide figures. Latencies have three decimals, so a column lines up; an unknown one is
    marked and says why below the table (the tick's error about that queue, or why there is
    none)."""
    lines: List[str] = []
    by_system: Dict[str, List[QueueSample]] = {}
    for sample in report.samples:
        by_system.setdefault(sample.backend, []).append(sample)
    notes: List[str] = []
    for backend, samples in by_system.items():
        if lines:
            lines.append("")
        lines.extend(_system_table(backend, samples, report.errors, notes))
    if not report.samples:
        lines.append("(no queues found)" if report.redis_ok else "(Redis could not be read)")
    for system in report.systems:
        figures = ", ".join(f"{figure.name} {format_value(figure)}" for figure in system.figures)
        lines.append(f"{system.backend}: {figures}")
    if notes:
        lines.append("")
        lines.extend(notes)
    return lines


# Why a latency can be unknown without an error: it is observed over ticks (Celery's messages
# carry no publish time; README, "Celery latency with no change to the app"), and one reading has
# no history yet.
NOT_OBSERVED_YET = "it is observed over ticks (the messages carry no publish time): `queue-metrics run` reports it"
NOT_OBSERVABLE = (
    "the messages carry no publish time and this Redis has no LPOS to observe it with (before 6.0.6, or "
    "renamed away): `queue_metrics.celery.install(app)` stamps them"
)
UNKNOWN_LATENCY = "unknown*"
LATENCY_UNKNOWN = "latency unknown: "


def _system_table(backend: str, samples: List[QueueSample], errors: Tuple[str, ...], notes: List[str]) -> List[str]:
    names = list(dict.fromkeys(figure.name for sample in samples for figure in sample.figures))
    rows = [("SYSTEM", "QUEUE", "SIZE", "LATENCY", *(name.upper() for name in names))]
    for sample in samples:
        shown = readable_name(sample.queue)
        if sample.latency is None:
            latency = UNKNOWN_LATENCY
            notes.append(f"* {backend} {shown}: latency unknown: {_unknown_reason(sample, errors)}")
        else:
            latency = f"{max(0.0, sample.latency):.3f} s"
        own = {figure.name: format_value(figure) for figure in sample.figures}
        rows.append(
            (
                backend,
                shown if len(shown) <= 60 else shown[:57] + "...",
                str(sample.size),
                latency,
                *(own.get(name, "-") for name in names),
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    aligned = [column < 2 for column in range(len(widths))]  # names to the left, numbers to the right
    return [
        "  ".join(
            f"{cell:<{width}}" if left else f"{cell:>{width}}" for cell, width, left in zip(row, widths, aligned)
        ).rstrip()
        for row in rows
    ]


def _unknown_reason(sample: QueueSample, errors: Tuple[str, ...]) -> str:
    subject = queue_subject(sample.backend, sample.queue) + ": "
    said = [error[len(subject) :].replace(LATENCY_UNKNOWN, "", 1) for error in errors if error.startswith(subject)]
    if said:
        return "; ".join(said)
    if sample.latency_source == LATENCY_OBSERVED:
        return NOT_OBSERVED_YET
    if sample.latency_source == LATENCY_UNOBSERVABLE:
        return NOT_OBSERVABLE
    return "no reason was reported"
