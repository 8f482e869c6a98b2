"""The Celery app a real `celery worker` process runs in the tests (`-A celery_worker_app`, with
tests/helpers on PYTHONPATH). CELERY_BROKER_URL names the test server; CELERY_KEYPREFIX, when set,
is kombu's `global_keyprefix`; CELERY_PRIORITY_STEPS (`0,1,...,9`), when set, its `priority_steps`."""

from __future__ import annotations

import os
import time
from typing import Dict, List, Optional

from celery import Celery

PREFETCH_MULTIPLIER = 4


def make_app(broker_url: str, keyprefix: str = "", priority_steps: Optional[List[int]] = None) -> Celery:
    app = Celery("shop", broker=broker_url)
    app.conf.task_create_missing_queues = True
    app.conf.worker_prefetch_multiplier = PREFETCH_MULTIPLIER
    options: Dict[str, object] = {}
    if keyprefix:
        options["global_keyprefix"] = keyprefix
    if priority_steps is not None:
        options["priority_steps"] = priority_steps
    app.conf.broker_transport_options = options
    return app


_steps = os.environ.get("CELERY_PRIORITY_STEPS")
app = make_app(
    os.environ.get("CELERY_BROKER_URL", "redis://127.0.0.1:1/0"),
    os.environ.get("CELERY_KEYPREFIX", ""),
    [int(step) for step in _steps.split(",")] if _steps else None,
)


@app.task(name="shop.nap")
def nap(seconds: float) -> None:
    time.sleep(seconds)
