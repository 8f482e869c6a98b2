"""Dramatiq actors for the tests: a RedisBroker on DRAMATIQ_REDIS_URL (namespace
DRAMATIQ_NAMESPACE, default `dramatiq`), imported by the real `dramatiq` worker CLI and by the
tests' producers."""

from __future__ import annotations

import os
import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(
    url=os.environ.get("DRAMATIQ_REDIS_URL", "redis://127.0.0.1:6379/0"),
    namespace=os.environ.get("DRAMATIQ_NAMESPACE", "dramatiq"),
)
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name="default")
def nap(seconds: float) -> None:
    time.sleep(seconds)


@dramatiq.actor(queue_name="low")
def quick() -> None:
    pass


@dramatiq.actor(queue_name="default", max_retries=0)
def fail() -> None:
    raise RuntimeError("this actor always fails")
