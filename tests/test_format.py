"""Pure formatting: l2met lines and JSON from a TickReport."""

from __future__ import annotations

import json
import re

from queue_metrics.format import (
    MAX_LINE_BYTES,
    format_seconds,
    json_line,
    librato_lines,
    metric_queue_part,
)
from queue_metrics.sample import QueueSample, TickReport

LOGFMT_PAIR = re.compile(r'^[^\s="]+=[^\s="]+$')
LIBRATO_NAME = re.compile(r"^[A-Za-z0-9.:_-]{1,255}$")


def report(*samples, backends=("sidekiq",), errors=(), duration=0.0042):
    return TickReport(tuple(samples), tuple(errors), backends, duration, True, 2)


def test_the_product_line():
    lines = librato_lines(report(QueueSample("sidekiq", "default", 12, 3.2)))
    assert lines == [
        "sample#queue.default.size=12 sample#queue.default.latency=3.2s",
        "sample#queue.collector.queues=1 sample#queue.collector.errors=0 sample#queue.collector.duration=0.004s",
    ]


def test_backend_follows_prefix_with_several_backends_and_source_on_every_line():
    lines = librato_lines(
        report(QueueSample("sidekiq", "default", 1, 0.0), QueueSample("rq", "default", 2, None),
               backends=("sidekiq", "rq")),
        prefix="jobs", source="web.1")
    assert lines[0] == ("source=web.1 sample#jobs.sidekiq.default.size=1 sample#jobs.sidekiq.default.latency=0s "
                        "sample#jobs.rq.default.size=2")
    assert lines[1].startswith("source=web.1 sample#jobs.collector.queues=2 ")


def test_unknown_latency_is_omitted_never_zero():
    line = librato_lines(report(QueueSample("celery", "celery", 4, None), backends=("celery",)))[0]
    assert line == "sample#queue.celery.size=4"


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
    assert lines == ["sample#queue.collector.queues=0 sample#queue.collector.errors=1 sample#queue.collector.duration=0.004s"]


def test_json_line():
    line = json_line(report(QueueSample("rq", "default", 3, 1.23456), QueueSample("rq", "b\udcff", 0, None),
                            backends=("rq",), errors=("rq queue x: broken",)), time=1.5, source="web.1")
    assert "\n" not in line
    document = json.loads(line)
    assert document["queues"] == [
        {"backend": "rq", "queue": "default", "size": 3, "latency": 1.235},
        {"backend": "rq", "queue": "b\\xff", "size": 0, "latency": None},
    ]
    assert document["errors"] == ["rq queue x: broken"]
    assert document["time"] == 1.5 and document["redis_ok"] is True and document["source"] == "web.1"
