"""The queue systems the collector reads: one row each. A fourth system is one module plus one
row here (see README, "Adding a queue system")."""

from __future__ import annotations

from typing import Tuple

from queue_metrics.systems import celery, delayed_job, good_job, que, rabbitmq, rq, sidekiq
from queue_metrics.systems.contract import SystemSpec

# A name may come twice, once per kind of datastore (`celery` on Redis and on RabbitMQ): each
# datastore's reader reads the rows of its kind; the first row of a name parses its settings.
SYSTEMS: Tuple[SystemSpec, ...] = (
    sidekiq.SYSTEM,
    rq.SYSTEM,
    celery.SYSTEM,
    rabbitmq.CELERY_SYSTEM,
    rabbitmq.OTHER_SYSTEM,
    delayed_job.SYSTEM,
    good_job.SYSTEM,
    que.SYSTEM,
)
