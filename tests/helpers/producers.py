"""Jobs from the three real producers into one Redis, and each system's own view of them."""

from __future__ import annotations

import time
from datetime import timezone
from typing import Dict, NamedTuple, Optional, Tuple

import redis
from celery import Celery
from kombu import pools
from rq import Queue

import queue_metrics.celery as celery_hook
from helpers.collect import sidekiq


class Reference(NamedTuple):
    size: int
    # Seconds waited at `at` (epoch seconds), as the system itself tells it; None when unknown.
    latency: Optional[float]
    at: float


def fill_three_systems(url: str) -> Dict[Tuple[str, str], Reference]:
    """Sidekiq (the Ruby client), RQ and Celery jobs; {(system, queue): Reference}."""
    client = redis.Redis.from_url(url)
    expected: Dict[Tuple[str, str], Reference] = {}

    rq_jobs = {"default": 2, "low": 1}
    for name, count in rq_jobs.items():
        for index in range(count):
            Queue(name, connection=client).enqueue("builtins.len", "x" * index)

    app = Celery("shop", broker=url)
    app.conf.task_create_missing_queues = True
    celery_hook.install(app)  # stamps the publish time: Celery latency is known
    first_sent = {}
    try:
        for name, count in {"celery": 4, "reports": 2}.items():
            first_sent[name] = time.time()
            for index in range(count):
                app.send_task("shop.tasks.ship", args=[index], queue=name)
        with app.connection_for_write() as connection:
            for name in ("celery", "reports"):
                size = connection.default_channel.queue_declare(queue=name, passive=True).message_count
                now = time.time()
                expected[("celery", name)] = Reference(size, now - first_sent[name], now)
    finally:
        celery_hook.uninstall()
        app.close()
        pools.reset()

    view = sidekiq(url, {"enqueue": {"default": 3, "mailers": 1}, "sleep": 0.3})
    for name, queue in view["queues"].items():
        expected[("sidekiq", name)] = Reference(queue["size"], queue["latency"], view["now"])

    now = time.time()
    for rq_queue in Queue.all(connection=client):
        enqueued_at = rq_queue.jobs[0].enqueued_at  # the head job: the oldest in line
        if enqueued_at.tzinfo is None:
            enqueued_at = enqueued_at.replace(tzinfo=timezone.utc)
        expected[("rq", rq_queue.name)] = Reference(rq_queue.count, now - enqueued_at.timestamp(), now)
    client.close()
    return expected


def latency_then(reference: Reference, at: float) -> Optional[float]:
    """The reference latency carried forward to `at` (a queue nobody works grows older)."""
    return None if reference.latency is None else reference.latency + (at - reference.at)


def latency_within(value: float, reference: Reference, start: float, end: float, slack: float = 0.5) -> bool:
    """Whether `value` is the queue's latency at some moment between `start` and `end` (epoch s),
    the span in which the collector read it."""
    low, high = latency_then(reference, start), latency_then(reference, end)
    assert low is not None and high is not None
    return low - slack <= value <= high + slack


def channel_size(app: Celery, queue: str) -> int:
    """kombu's own count of a queue's messages: its passive queue_declare ignores
    global_keyprefix, its channel's `_size` does not."""
    with app.connection_for_write() as connection:
        return connection.default_channel._size(queue)
