"""The Celery app a real `celery worker` process runs in the tests (`-A celery_worker_app`, with
tests/helpers on PYTHONPATH). CELERY_BROKER_URL names the test server; CELERY_KEYPREFIX, when set,
is kombu's `global_keyprefix`."""

from __future__ import annotations

import os
import time

from celery import Celery

PREFETCH_MULTIPLIER = 4


def make_app(broker_url: str, keyprefix: str = "") -> Celery:
    app = Celery("shop", broker=broker_url)
    app.conf.task_create_missing_queues = True
    app.conf.worker_prefetch_multiplier = PREFETCH_MULTIPLIER
    if keyprefix:
        app.conf.broker_transport_options = {"global_keyprefix": keyprefix}
    return app


app = make_app(os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:1/0"), os.environ.get("CELERY_KEYPREFIX", ""))


@app.task(name="shop.nap")
def nap(seconds: float) -> None:
    time.sleep(seconds)
