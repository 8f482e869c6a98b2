"""The publish stamp hook for a Celery app: `queue_metrics.celery.install(app)`.

This module runs in the app's own processes (wherever tasks are published), not in the collector:
it adds the time of publishing to every task's message properties, which the collector reads for a
latency to the millisecond from its first tick (`queue_metrics.systems.celery`). It imports
nothing but the standard library until `install` is called.
"""

from __future__ import annotations

import time
from typing import Optional

PUBLISHED_AT_PROPERTY = "published_at"  # epoch seconds; set by install() and by judoscale
DISPATCH_UID = "queue_metrics.celery.published_at"


def stamp_published_at(properties: Optional[dict] = None, **_: object) -> None:
    """`before_task_publish` receiver: record when the task was published, in epoch seconds."""
    if properties is not None and PUBLISHED_AT_PROPERTY not in properties:
        properties[PUBLISHED_AT_PROPERTY] = time.time()


def install(app: object = None) -> None:
    """Stamp every task this process publishes, so queue latency can be measured.

    Call once where the Celery app is created: `queue_metrics.celery.install(app)`. Works for
    every app in the process (Celery signals are global); `app` is accepted for readability.
    """
    from celery.signals import before_task_publish  # imported only by apps that opt in

    before_task_publish.connect(stamp_published_at, weak=False, dispatch_uid=DISPATCH_UID)


def uninstall() -> None:
    """Stop stamping tasks published from now on."""
    from celery.signals import before_task_publish

    before_task_publish.disconnect(stamp_published_at, dispatch_uid=DISPATCH_UID)
