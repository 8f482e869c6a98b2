"""The tasks the django-tasks tests enqueue (helpers.django_tasks_settings)."""

from __future__ import annotations

import time

from django_tasks import task


@task()
def nap(seconds: float = 0.0) -> None:
    time.sleep(seconds)


@task()
def broken() -> None:
    raise RuntimeError("broken on purpose")
