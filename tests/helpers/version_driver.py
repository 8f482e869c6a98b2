"""Runs in the virtual environment of one rq or Celery release (tests/helpers/versions.py): enqueues
with that release's own producer, and prints that release's own figures as one JSON object.

    <venv>/bin/python version_driver.py ACTION REDIS_URL < plan.json

Actions: `rq-enqueue`, `rq-figures`, `celery-send`, `celery-figures`. Standard library and the
release under test only (plus the collector's Celery stamp hook, on PYTHONPATH); rq reads
RQ_KEY_PREFIX from the environment, as it does in an app.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import timezone


def epoch(moment) -> float:
    # rq 1.x gives enqueued_at back naive, in UTC; rq 2 and 3 aware.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def rq_enqueue(url: str, plan: dict) -> dict:
    """plan: {"jobs": {queue: n}, "pause": s, "at_front": {queue: [n, ...]}}; the at_front jobs go
    after the pause, each group of them `pause` seconds after the last."""
    from redis import Redis
    from rq import Queue

    connection = Redis.from_url(url)
    for name, count in plan.get("jobs", {}).items():
        for index in range(count):
            Queue(name, connection=connection).enqueue("rq_jobs.quick", job_id=f"{name}-{index}")
    for name, groups in plan.get("at_front", {}).items():
        for group, count in enumerate(groups):
            time.sleep(plan.get("pause", 0.0))
            for index in range(count):
                job_id = f"{name}-front-{group}-{index}"
                Queue(name, connection=connection).enqueue("rq_jobs.quick", job_id=job_id, at_front=True)
    return {"now": time.time()}


def rq_figures(url: str, plan: dict) -> dict:
    """Each queue's `count`, its jobs' `enqueued_at` in list order and its registries' sizes; the
    live workers; the keys rq writes with."""
    from redis import Redis
    from rq import Queue, Worker
    from rq.registry import (
        CanceledJobRegistry,
        DeferredJobRegistry,
        FailedJobRegistry,
        FinishedJobRegistry,
        ScheduledJobRegistry,
        StartedJobRegistry,
    )

    registries = {
        "started": StartedJobRegistry,
        "failed": FailedJobRegistry,
        "finished": FinishedJobRegistry,
        "deferred": DeferredJobRegistry,
        "scheduled": ScheduledJobRegistry,
        "canceled": CanceledJobRegistry,
    }
    connection = Redis.from_url(url)
    queues = {}
    for queue in Queue.all(connection=connection):
        sizes = {}
        for name, registry_class in registries.items():
            registry = registry_class(queue=queue)
            # rq >= 2: the ZCARD without clean-up; rq 1.x has only `count` (nothing here expires).
            counter = getattr(registry, "get_job_count", None)
            sizes[name] = counter(cleanup=False) if counter else registry.count
        queues[queue.name] = {
            "count": queue.count,
            "key": queue.key,
            "enqueued_at": [epoch(job.enqueued_at) for job in queue.jobs],
            "registries": sizes,
        }
    return {"queues": queues, "workers": len(Worker.all(connection=connection)), "queues_key": Queue.redis_queues_keys}


def celery_app(url: str):
    from celery_worker_app import make_app

    import queue_metrics.celery as stamp_hook

    app = make_app(url)
    stamp_hook.install(app)
    return app


def celery_send(url: str, plan: dict) -> dict:
    """plan: {"tasks": {queue: [[priority or null, n], ...]}}; returns each queue's first publish."""
    app = celery_app(url)
    first = {}
    for name, groups in plan["tasks"].items():
        first[name] = time.time()
        for priority, count in groups:
            options = {} if priority is None else {"priority": priority}
            for _ in range(count):
                app.send_task("shop.nap", args=[0], queue=name, **options)
    app.close()
    return {"first_sent": first}


def celery_figures(url: str, plan: dict) -> dict:
    """kombu's message count (passive queue_declare) of each queue named in the plan."""
    from kombu.exceptions import ChannelError

    app = celery_app(url)
    counts = {}
    with app.connection_for_write() as connection:
        for name in plan["queues"]:
            try:
                counts[name] = connection.default_channel.queue_declare(queue=name, passive=True).message_count
            except ChannelError:
                counts[name] = 0  # kombu on Redis: NOT_FOUND, its answer for a queue with no message
    app.close()
    return {"counts": counts}


ACTIONS = {
    "rq-enqueue": rq_enqueue,
    "rq-figures": rq_figures,
    "celery-send": celery_send,
    "celery-figures": celery_figures,
}

if __name__ == "__main__":
    action, redis_url = sys.argv[1], sys.argv[2]
    json.dump(ACTIONS[action](redis_url, json.load(sys.stdin)), sys.stdout)
