"""The queue systems the collector reads: one row each. Another system is one module plus one
row here (see README, "Adding a queue system")."""

from __future__ import annotations

from typing import Tuple

from queue_metrics.systems import (
    bullmq,
    celery,
    delayed_job,
    django_tasks,
    dramatiq,
    good_job,
    procrastinate,
    que,
    rabbitmq,
    resque,
    rq,
    sidekiq,
    solid_queue,
)
from queue_metrics.systems.contract import SystemSpec

# A name may come twice, once per kind of datastore (`celery` on Redis and on RabbitMQ): each
# datastore's reader reads the rows of its kind; the first row of a name parses its settings.
SYSTEMS: Tuple[SystemSpec, ...] = (
    # Redis
    sidekiq.SYSTEM,
    rq.SYSTEM,
    celery.SYSTEM,
    resque.SYSTEM,
    bullmq.SYSTEM,
    dramatiq.SYSTEM,
    # RabbitMQ
    rabbitmq.CELERY_SYSTEM,
    rabbitmq.OTHER_SYSTEM,
    # Postgres
    solid_queue.SYSTEM,
    good_job.SYSTEM,
    delayed_job.SYSTEM,
    que.SYSTEM,
    procrastinate.SYSTEM,
    django_tasks.SYSTEM,
)
