"""A real Celery app for the worker tests: `celery -A celery_app worker`, broker from the env."""

from __future__ import annotations

import os
import time

from celery import Celery

import queue_metrics.celery as stamp_hook

app = Celery("shop", broker=os.environ["CELERY_BROKER_URL"])
app.conf.task_create_missing_queues = True
app.conf.worker_prefetch_multiplier = 1
stamp_hook.install(app)


@app.task(name="shop.tasks.nap")
def nap(seconds: float) -> None:
    time.sleep(seconds)


@app.task(name="shop.tasks.ship")
def ship(*args: object) -> None:
    return None
