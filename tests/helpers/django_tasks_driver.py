"""django-tasks' database backend for the tests, each command in a process of its own (Django's
settings are per process; each test has its own database, DJANGO_TASKS_DATABASE_URL):

    enqueue BACKEND QUEUE COUNT RUN_IN NAP   enqueue COUNT `nap` tasks (RUN_IN seconds ahead,
                                             0: no run_after); prints the times, just before each
    broken BACKEND QUEUE                     enqueue a task that fails
    counts                                   the library's own `ready()` count per backend, queue
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import timedelta

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "helpers.django_tasks_settings")

import django  # noqa: E402

django.setup()

from django.db.models import Count  # noqa: E402
from django.utils import timezone  # noqa: E402
from django_tasks_db.models import DBTaskResult  # noqa: E402

from helpers.django_tasks_jobs import broken, nap  # noqa: E402


def main(command: str, *arguments: str) -> None:
    if command == "enqueue":
        backend, queue, count, run_in, seconds = arguments
        stamps = []
        for _ in range(int(count)):
            options = {"backend": backend, "queue_name": queue}
            if float(run_in):
                options["run_after"] = timezone.now() + timedelta(seconds=float(run_in))
            stamps.append(time.time())
            nap.using(**options).enqueue(float(seconds))
        print(json.dumps(stamps))
    elif command == "broken":
        backend, queue = arguments
        broken.using(backend=backend, queue_name=queue).enqueue()
    elif command == "counts":
        rows = DBTaskResult.objects.ready().values("backend_name", "queue_name").annotate(n=Count("id"))
        print(json.dumps({f"{row['backend_name']}/{row['queue_name']}": row["n"] for row in rows}))


if __name__ == "__main__":
    main(*sys.argv[1:])
