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

With several datastores, a queue (or a system's figures) that a datastore earlier in the settings'
order holds too is named after `<prefix>.<label>` instead of `<prefix>` (`sample.name_prefix`):
queue.pink.sidekiq.default.size. The collector's figures are the tick's totals, never labeled.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from queue_metrics.errors import queue_subject, readable_name
from queue_metrics.sample import (
    COUNTER,
    LATENCY_ESTIMATED,
    LATENCY_OBSERVED,
    LATENCY_UNAVAILABLE,
    LATENCY_UNOBSERVABLE,
    UNIT_SECONDS,
    DatastoreSection,
    Figure,
    QueueSample,
    SystemSample,
    TickReport,
    name_prefix,
    sections,
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
    yield from _packed(itertools.chain.from_iterable(_section_groups(report, prefix)), start)
    collector = " ".join(
        l2met_pair(collector_metric_name(prefix, figure.name), figure) for figure in collector_figures(report, dropped)
    )
    yield f"{start} {collector}" if start else collector


def _section_groups(report: TickReport, prefix: str) -> Iterator[Iterable[str]]:
    """Each datastore's queue pairs, then its system figures, as iterables to chain: each queue's
    pairs are made straight from the samples, as with one datastore, through no generator more."""
    for section, samples, systems in sections(report):
        if section is not None and section.labeled_queues:
            yield _labeled_queue_pairs(prefix, section, samples)
        else:
            # The usual app (no queue name in two datastores): no look-up per queue.
            yield map(functools.partial(queue_pairs, prefix), samples)
        yield _system_pairs(prefix, section, systems)


def _system_pairs(prefix: str, section: Optional[DatastoreSection], systems: Sequence[SystemSample]) -> Iterator[str]:
    for system in systems:
        system_prefix = name_prefix(prefix, section, system.backend)
        for figure in system.figures:
            yield l2met_pair(system_metric_name(system_prefix, system.backend, figure.name), figure)


def _labeled_queue_pairs(prefix: str, section: DatastoreSection, samples: Sequence[QueueSample]) -> Iterator[str]:
    labeled, own = section.labeled_queues, f"{prefix}.{section.label}"
    for sample in samples:
        yield queue_pairs(own if (sample.backend, sample.queue) in labeled else prefix, sample)


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
    """The tick as a JSON object; with datastores (the collector's reports), every queue and system
    says which datastore it is in, and `datastores` lists them."""
    queues = []
    systems = []
    for section, samples, system_samples in sections(report):
        # Each object's first key, when there are datastores.
        where: Dict[str, object] = {} if section is None else {"datastore": section.label}
        for s in samples:
            entry: Dict[str, object] = {
                **where,
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
        for system in system_samples:
            entry = {**where, "backend": system.backend}
            entry.update((figure.name, _json_number(figure)) for figure in system.figures)
            systems.append(entry)
    document: Dict[str, object] = {
        "time": time,
        "source": source,
        "backends": list(report.backends),
    }
    if report.datastores:
        document["datastores"] = [
            {
                "label": section.label,
                "kind": section.kind,
                "where": section.where,
                "source": section.source,
                "ok": section.ok,
                "queues": section.queues,
                "errors": section.errors,
            }
            for section in report.datastores
        ]
    document.update(
        queues=queues,
        systems=systems,
        errors=list(report.errors),
        duration=round(report.duration, 6),
        redis_ok=report.redis_ok,
    )
    if dropped is not None:
        document["dropped"] = dropped
    return document


def json_line(
    report: TickReport, time: Optional[float] = None, source: Optional[str] = None, dropped: Optional[int] = None
) -> str:
    """The tick as one JSON object on one line."""
    return json.dumps(json_document(report, time, source, dropped), separators=(",", ":"))


def table_lines(report: TickReport) -> List[str]:
    """The tick for people: with datastores, a line for each; then a table per system, with every
    per-queue figure JSON has, then the system-wide figures (under a `== <label> ==` line for each
    datastore when there are several). Latencies have three decimals, so a column lines up; an
    unknown one is marked and says why below the table (the tick's error about that queue, or why
    there is none)."""
    lines = [describe_section(section) for section in report.datastores]
    if lines:
        lines.append("")
    several = len(report.datastores) > 1
    notes: List[str] = []
    for section, samples, systems in sections(report):
        if several and section is not None:
            if lines[-1] != "":
                lines.append("")
            lines.append(f"== {section.label} ==")
        if section is None:
            empty = "(no queues found)" if report.redis_ok else "(Redis could not be read)"
        else:
            # Its line above says which datastore, and what kind.
            empty = "(no queues found)" if section.ok else "(could not be read)"
        lines.extend(_section_table(section, samples, systems, report.errors, several, empty, notes))
    if notes:
        lines.append("")
        lines.extend(notes)
    return lines


def describe_section(section: DatastoreSection) -> str:
    """`redis: redis redis://host:6379/0 (from REDIS_URL): 3 queue(s)`, and any problem."""
    line = f"{section.label}: {section.kind} {section.where} (from {section.source}): {section.queues} queue(s)"
    if not section.ok:
        line += ", could not be read"
    if section.errors:
        line += f", {section.errors} error(s)"
    return line


def _section_table(
    section: Optional[DatastoreSection],
    samples: Sequence[QueueSample],
    systems: Sequence[SystemSample],
    errors: Tuple[str, ...],
    several: bool,
    empty: str,
    notes: List[str],
) -> List[str]:
    """One datastore's tables and system figures. With several datastores, its errors and notes
    begin with its label (as the collector's error lines do)."""
    label = f"{section.label}: " if several and section is not None else ""
    lines: List[str] = []
    by_system: Dict[str, List[QueueSample]] = {}
    for sample in samples:
        by_system.setdefault(sample.backend, []).append(sample)
    for backend, queues in by_system.items():
        if lines:
            lines.append("")
        lines.extend(_system_table(backend, queues, errors, notes, label))
    if not samples:
        lines.append(empty)
    for system in systems:
        figures = ", ".join(f"{figure.name} {format_value(figure)}" for figure in system.figures)
        lines.append(f"{system.backend}: {figures}")
    return lines


# Why a latency can be unknown without an error: it is observed over ticks (Celery's messages
# carry no publish time; README, "Celery latency with no change to the app"), and one reading has
# no history yet.
NOT_ESTIMATED_YET = "it is estimated from the broker's counters over ticks: `queue-metrics run` reports it"
NOT_OBSERVED_YET = "it is observed over ticks (the messages carry no publish time): `queue-metrics run` reports it"
NOT_AVAILABLE = "read by passive declare (the broker has no management API), which tells sizes and consumers only"
NOT_OBSERVABLE = (
    "the messages carry no publish time and this Redis has no LPOS to observe it with (before 6.0.6, or "
    "renamed away): `queue_metrics.celery.install(app)` stamps them"
)
UNKNOWN_LATENCY = "unknown*"
LATENCY_UNKNOWN = "latency unknown: "


def _system_table(
    backend: str, samples: List[QueueSample], errors: Tuple[str, ...], notes: List[str], label: str = ""
) -> List[str]:
    names = list(dict.fromkeys(figure.name for sample in samples for figure in sample.figures))
    rows = [("SYSTEM", "QUEUE", "SIZE", "LATENCY", *(name.upper() for name in names))]
    for sample in samples:
        shown = readable_name(sample.queue)
        if sample.latency is None:
            latency = UNKNOWN_LATENCY
            notes.append(f"* {label}{backend} {shown}: latency unknown: {_unknown_reason(sample, errors, label)}")
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


def _unknown_reason(sample: QueueSample, errors: Tuple[str, ...], label: str = "") -> str:
    """The errors about the queue: with several datastores, those that begin with its datastore's
    `<label>: ` (`label`), as the collector writes them."""
    subject = f"{label}{queue_subject(sample.backend, sample.queue)}: "
    said = [error[len(subject) :].replace(LATENCY_UNKNOWN, "", 1) for error in errors if error.startswith(subject)]
    if said:
        return "; ".join(said)
    if sample.latency_source == LATENCY_OBSERVED:
        return NOT_OBSERVED_YET
    if sample.latency_source == LATENCY_ESTIMATED:
        return NOT_ESTIMATED_YET
    if sample.latency_source == LATENCY_UNOBSERVABLE:
        return NOT_OBSERVABLE
    if sample.latency_source == LATENCY_UNAVAILABLE:
        return NOT_AVAILABLE
    return "no reason was reported"
