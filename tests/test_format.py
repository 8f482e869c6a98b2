"""Pure formatting: l2met lines and JSON from a TickReport."""

from __future__ import annotations

import json
import re

from queue_metrics.outputs.format import (
    MAX_LINE_BYTES,
    collector_metric_name,
    format_seconds,
    json_line,
    librato_lines,
    metric_queue_part,
    queue_metric_base,
    system_metric_name,
)
from queue_metrics.sample import COUNTER, UNIT_RATIO, Figure, QueueSample, SystemSample, TickReport

LOGFMT_PAIR = re.compile(r'^[^\s="]+=[^\s="]+$')
LIBRATO_NAME = re.compile(r"^[A-Za-z0-9.:_-]{1,255}$")


def report(*samples, backends=("sidekiq",), errors=(), duration=0.0042):
    return TickReport(tuple(samples), tuple(errors), backends, duration, True, 2)


def test_the_product_line():
    lines = librato_lines(report(QueueSample("sidekiq", "default", 12, 3.2)))
    assert lines == [
        "sample#queue.sidekiq.default.size=12 sample#queue.sidekiq.default.latency=3.2s",
        "sample#queue.collector.queues=1 sample#queue.collector.errors=0 sample#queue.collector.duration=0.004s",
    ]


def test_system_follows_prefix_and_source_is_on_every_line():
    lines = librato_lines(
        report(
            QueueSample("sidekiq", "default", 1, 0.0), QueueSample("rq", "default", 2, None), backends=("sidekiq", "rq")
        ),
        prefix="jobs",
        source="web.1",
    )
    assert lines[0] == (
        "source=web.1 sample#jobs.sidekiq.default.size=1 sample#jobs.sidekiq.default.latency=0s "
        "sample#jobs.rq.default.size=2"
    )
    assert lines[1].startswith("source=web.1 sample#jobs.collector.queues=2 ")


def test_unknown_latency_is_omitted_never_zero():
    line = librato_lines(report(QueueSample("celery", "celery", 4, None), backends=("celery",)))[0]
    assert line == "sample#queue.celery.celery.size=4"


def test_seconds_format():
    assert [format_seconds(x) for x in (0, 3.2, 0.0004, 12.0, 1.23456, -5)] == ["0", "3.2", "0", "12", "1.235", "0"]


def test_names_are_kept_when_safe_and_hashed_when_changed():
    assert metric_queue_part("mailers:high-1_a.b") == "mailers:high-1_a.b"
    odd = ["a b", "a_b", "a=b", 'a"b', "ünï", "high\x06\x163", "x" * 1000, "", "a_b_0123abcd"]
    parts = [metric_queue_part(name) for name in odd]
    assert len(set(parts)) == len(parts)
    assert parts[1] == "a_b"
    for part in parts:
        assert LIBRATO_NAME.match(f"queue.sidekiq.{part}.latency")


def test_a_real_name_never_equals_another_queues_hashed_name():
    hashed = metric_queue_part("a b")
    assert hashed.startswith("a_b_")
    assert metric_queue_part(hashed) != hashed


def test_lines_are_split_below_the_limit_and_keep_every_queue():
    samples = [QueueSample("sidekiq", f"queue-{index:05d}", index, index / 7) for index in range(2000)]
    lines = librato_lines(report(*samples), source="web.1")
    assert all(len(line.encode()) <= MAX_LINE_BYTES for line in lines)
    pairs = [pair for line in lines for pair in line.split(" ")]
    assert all(LOGFMT_PAIR.match(pair) for pair in pairs)
    sizes = [pair for pair in pairs if pair.endswith(tuple("0123456789")) and ".size=" in pair]
    assert len(sizes) == 2000
    assert all(line.startswith("source=web.1 ") for line in lines)


def test_collector_line_even_without_queues():
    lines = librato_lines(report(backends=(), errors=("boom",)))
    assert lines == [
        "sample#queue.collector.queues=0 sample#queue.collector.errors=1 sample#queue.collector.duration=0.004s"
    ]


def test_json_line():
    line = json_line(
        report(
            QueueSample("rq", "default", 3, 1.23456),
            QueueSample("rq", "b\udcff", 0, None),
            backends=("rq",),
            errors=("rq queue x: broken",),
        ),
        time=1.5,
        source="web.1",
    )
    assert "\n" not in line
    document = json.loads(line)
    assert document["queues"] == [
        {"backend": "rq", "queue": "default", "size": 3, "latency": 1.235},
        {"backend": "rq", "queue": "b\\xff", "size": 0, "latency": None},
    ]
    assert document["errors"] == ["rq queue x: broken"]
    assert document["time"] == 1.5 and document["redis_ok"] is True and document["source"] == "web.1"


def test_names_do_not_depend_on_which_systems_are_in_use():
    alone = librato_lines(report(QueueSample("sidekiq", "default", 1, 0.0), backends=("sidekiq",)))
    together = librato_lines(
        report(
            QueueSample("sidekiq", "default", 1, 0.0), QueueSample("rq", "default", 2, None), backends=("sidekiq", "rq")
        )
    )
    assert alone[0] == "sample#queue.sidekiq.default.size=1 sample#queue.sidekiq.default.latency=0s"
    assert together[0].startswith(alone[0] + " ")


def test_queue_figures_system_figures_and_counters():
    sample = QueueSample("rq", "default", 3, 1.5, (Figure("failed", 2), Figure("started", 1)))
    systems = (
        SystemSample("rq", (Figure("workers", 4), Figure("busy", 1))),
        SystemSample(
            "sidekiq",
            (Figure("retry", 5), Figure("utilization", 0.25, UNIT_RATIO), Figure("processed", 17, kind=COUNTER)),
        ),
    )
    lines = librato_lines(TickReport((sample,), (), ("rq", "sidekiq"), 0.001, True, 1, systems))
    assert lines[0] == (
        "sample#queue.rq.default.size=3 sample#queue.rq.default.latency=1.5s sample#queue.rq.default.failed=2 "
        "sample#queue.rq.default.started=1 sample#queue.rq.workers=4 sample#queue.rq.busy=1 "
        "sample#queue.sidekiq.retry=5 sample#queue.sidekiq.utilization=0.25 count#queue.sidekiq.processed=17"
    )
    document = json.loads(json_line(TickReport((sample,), (), ("rq", "sidekiq"), 0.001, True, 1, systems)))
    assert document["queues"][0] == {
        "backend": "rq",
        "queue": "default",
        "size": 3,
        "latency": 1.5,
        "failed": 2,
        "started": 1,
    }
    assert document["systems"] == [
        {"backend": "rq", "workers": 4, "busy": 1},
        {"backend": "sidekiq", "retry": 5, "utilization": 0.25, "processed": 17},
    ]


def test_no_queue_name_collides_with_system_or_collector_names():
    names = ["retry", "dead", "busy", "collector", "sidekiq", "rq", "celery", "retry.size", "a.b", "unacked"]
    queue_names = {
        f"{queue_metric_base('queue', system, name)}.{figure}"
        for system in ("sidekiq", "rq", "celery")
        for name in names
        for figure in ("size", "latency", "failed", "scheduled", "unacked", "started")
    }
    others = {
        system_metric_name("queue", system, figure)
        for system in ("sidekiq", "rq", "celery")
        for figure in (
            "scheduled",
            "retry",
            "dead",
            "processes",
            "busy",
            "concurrency",
            "utilization",
            "processed",
            "failed",
            "workers",
            "unacked",
        )
    }
    others |= {collector_metric_name("queue", figure) for figure in ("queues", "errors", "duration", "dropped")}
    assert not queue_names & others


def test_table_shows_every_per_queue_figure_json_has_and_latencies_to_three_decimals():
    from queue_metrics.outputs.format import json_document, table_lines

    tick = report(
        QueueSample("rq", "default", 3, 12.5, (Figure("started", 1), Figure("failed", 2))),
        QueueSample("rq", "low", 0, 0.05, (Figure("started", 0), Figure("failed", 0))),
        QueueSample("celery", "celery", 7, 1.0, (Figure("unacked", 4, "{message}"),)),
        backends=("rq", "celery"),
    )
    lines = table_lines(tick)
    assert lines == [
        "SYSTEM  QUEUE    SIZE   LATENCY  STARTED  FAILED",
        "rq      default     3  12.500 s        1       2",
        "rq      low         0   0.050 s        0       0",
        "",
        "SYSTEM  QUEUE   SIZE  LATENCY  UNACKED",
        "celery  celery     7  1.000 s        4",
    ]
    # Every per-queue figure of the JSON document is in the table.
    for entry in json_document(tick)["queues"]:
        row = next(line for line in lines if line.split()[:2] == [entry["backend"], entry["queue"]])
        for name in ("started", "failed", "unacked"):
            if name in entry:
                header = lines[
                    [i for i, line in enumerate(lines) if line.startswith("SYSTEM")][
                        0 if entry["backend"] == "rq" else 1
                    ]
                ].split()
                assert row.split()[header.index(name.upper()) + 1] == str(entry[name])


def test_table_says_why_a_latency_is_unknown():
    from queue_metrics.errors import ErrorLog
    from queue_metrics.outputs.format import table_lines
    from queue_metrics.sample import LATENCY_OBSERVED

    errors = ErrorLog()
    gone = "job 'abc' has no enqueued_at (its hash expired or was deleted)"
    errors.about_queue("rq", "default", f"latency unknown: {gone}")
    errors.about_queue("rq", "other", "something else")
    lines = table_lines(
        report(
            QueueSample("rq", "default", 2, None),
            QueueSample("rq", "quiet", 1, None),
            QueueSample("celery", "celery", 5, None, latency_source=LATENCY_OBSERVED),
            errors=errors.messages,
        )
    )
    assert lines[1].split() == ["rq", "default", "2", "unknown*"]
    assert lines[-3:] == [
        "* rq default: latency unknown: job 'abc' has no enqueued_at (its hash expired or was deleted)",
        "* rq quiet: latency unknown: no reason was reported",
        "* celery celery: latency unknown: it is observed over ticks (the messages carry no publish time): "
        "`queue-metrics run` reports it",
    ]
