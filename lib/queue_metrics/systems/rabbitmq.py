"""The queue systems read from a RabbitMQ broker: `celery` (Celery's queues) and `rabbitmq`
(every other queue of the virtual host: Dramatiq's, another app's). Their rows name the
`rabbitmq` datastore kind, whose reader (`datastores/rabbitmq/reader.py`) reads them all from one
management API listing: the Redis reader never picks them up.

Which queue is Celery's is what the vhost shows (`is_celery_queue`): Celery's default queue
`celery`, and every queue bound from an exchange of its own name with its own name as routing
key, which is how Celery declares its queues (kombu: `Queue(name, Exchange(name), routing_key=name)`,
the default and the ones `task_create_missing_queues` makes on demand). A Dramatiq queue is
published to through the default exchange, which binds every queue under its own name from the
exchange named "" (never its own).

Nothing here imports the reader: these rows are read by every run (the settings list them).
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Optional

from queue_metrics.systems.contract import SystemSpec

CELERY = "celery"
OTHER = "rabbitmq"
CELERY_DEFAULT_QUEUE = "celery"
KIND = "rabbitmq"


class BrokerSystem(NamedTuple):
    """A queue system as the RabbitMQ reader reads it: its name, and whether figures beyond
    size (held messages, consumers) are reported (QUEUE_METRICS_EXTRAS)."""

    name: str
    extras: bool


def is_celery_queue(queue: str, bound_from_own_exchange: bool) -> bool:
    return queue == CELERY_DEFAULT_QUEUE or bound_from_own_exchange


def _no_settings(values: Mapping[str, str]) -> Optional[object]:
    """These systems own no setting of their own."""
    return None


def _celery(settings: object, extras: bool) -> BrokerSystem:
    return BrokerSystem(CELERY, extras)


def _other(settings: object, extras: bool) -> BrokerSystem:
    return BrokerSystem(OTHER, extras)


CELERY_SYSTEM = SystemSpec(CELERY, _no_settings, _celery, datastore=KIND)  # type: ignore[arg-type]
OTHER_SYSTEM = SystemSpec(OTHER, _no_settings, _other, datastore=KIND)  # type: ignore[arg-type]
