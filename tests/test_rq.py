"""RQ: jobs enqueued by the real rq library; `Queue.count` and each job's own `enqueued_at` are
the reference."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from rq import Queue

from helpers.collect import by_queue, collect


def enqueue(client, queue_name: str, count: int, **options):
    queue = Queue(queue_name, connection=client)
    return [queue.enqueue("builtins.len", "x" * index, **options) for index in range(count)]


def test_size_equals_queue_count_and_latency_uses_oldest_job(redis_url, client):
    jobs = enqueue(client, "default", 4)
    enqueue(client, "high", 2)
    enqueue(client, "low", 1)
    time.sleep(1.0)

    report = collect(redis_url)
    now = time.time()
    samples = by_queue(report, "rq")
    assert report.backends == ("rq",)
    assert {queue.name: queue.count for queue in Queue.all(connection=client)} == {
        name: sample.size for name, sample in samples.items()
    }
    oldest = jobs[0]
    oldest.refresh()
    expected = now - oldest.enqueued_at.replace(tzinfo=timezone.utc).timestamp()
    assert expected >= 1.0
    assert samples["default"].latency == pytest.approx(expected, abs=0.5)
    assert report.errors == ()


def test_at_front_job_is_the_oldest_in_line(redis_url, client):
    enqueue(client, "default", 2)
    time.sleep(1.0)
    # at_front LPUSHes: this job is next in line though enqueued last.
    enqueue(client, "default", 1, at_front=True)
    assert by_queue(collect(redis_url))["default"].latency == pytest.approx(0.0, abs=0.5)


def test_empty_queue_and_explicit_queue(redis_url, client):
    jobs = enqueue(client, "default", 1)
    Queue("default", connection=client).remove(jobs[0])
    samples = by_queue(collect(redis_url, QUEUE_METRICS_RQ_QUEUES="default,unregistered"))
    assert (samples["default"].size, samples["default"].latency) == (0, 0.0)
    assert (samples["unregistered"].size, samples["unregistered"].latency) == (0, 0.0)


def test_scheduled_job_latency_starts_when_it_is_enqueued(redis_url, client):
    """A scheduled job's wait starts when the scheduler enqueues it (enqueued_at is rewritten)."""
    queue = Queue("default", connection=client)
    job = queue.enqueue_at(datetime.now(timezone.utc) + timedelta(seconds=60), "builtins.len", "abc")
    assert queue.count == 0
    samples = by_queue(collect(redis_url))
    assert samples["default"].size == 0
    # What the scheduler does when the time comes:
    queue.enqueue_job(job)
    time.sleep(0.5)
    sample = by_queue(collect(redis_url))["default"]
    assert sample.size == 1
    assert sample.latency == pytest.approx(0.5, abs=0.4)


def test_expired_job_hash_omits_latency_only(redis_url, client):
    jobs = enqueue(client, "default", 2)
    enqueue(client, "other", 1)
    client.delete(jobs[0].key)  # the head job's hash expired
    report = collect(redis_url)
    samples = by_queue(report)
    assert samples["default"].size == 2
    assert samples["default"].latency is None
    assert samples["other"].latency is not None
    assert len(report.errors) == 1 and "enqueued_at" in report.errors[0]
