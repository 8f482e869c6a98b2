"""Dramatiq actors for the tests, on a real RedisBroker.

The `dramatiq` worker CLI imports this module (`dramatiq dramatiq_actors`): its broker is on
DRAMATIQ_REDIS_URL, in the namespace DRAMATIQ_NAMESPACE (default `dramatiq`). The tests send with
`declare(their own broker)`: the same actors, by name and queue, on the broker they pass.
"""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import dramatiq
from dramatiq.brokers.redis import RedisBroker


def nap(seconds: float) -> None:
    time.sleep(seconds)


def quick() -> None:
    pass


def fail() -> None:
    raise RuntimeError("this actor always fails")


def declare(on: RedisBroker) -> SimpleNamespace:
    """The actors on the broker `on`: `nap` and `fail` (max_retries=0: dead-lettered at once) on
    `default`, `quick` on `low`."""
    return SimpleNamespace(
        nap=dramatiq.actor(nap, broker=on, queue_name="default"),
        fail=dramatiq.actor(fail, broker=on, queue_name="default", max_retries=0),
        quick=dramatiq.actor(quick, broker=on, queue_name="low"),
    )


broker = RedisBroker(
    url=os.environ.get("DRAMATIQ_REDIS_URL", "redis://127.0.0.1:6379/0"),
    namespace=os.environ.get("DRAMATIQ_NAMESPACE", "dramatiq"),
)
dramatiq.set_broker(broker)
actors = declare(broker)
