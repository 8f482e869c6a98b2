"""Sidekiq: queues are Redis lists of JSON jobs, named in the `queues` set.

Matches `Sidekiq::Queue#size` (LLEN) and `#latency` (age of the job at LINDEX -1, the next one a
worker's BRPOP takes, from its `enqueued_at`), with Sidekiq 8's millisecond timestamps read too.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterable, List, Mapping, Optional, Tuple

from queue_metrics.config import name_list
from queue_metrics.errors import ErrorLog
from queue_metrics.plugin import (
    Batch,
    Found,
    QueueReader,
    SystemReader,
    SystemSpec,
    batch,
    decode_name,
    encode_key,
    latency_or_report,
    list_head,
    parse_json_object,
    registry_members,
)
from queue_metrics.sample import QueueSample
from queue_metrics.timestamps import epoch_seconds, latency

NAME = "sidekiq"
QUEUES_KEY = "queues"  # SET of queue names
QUEUE_KEY = "queue:{name}"  # LIST; clients LPUSH, workers BRPOP: the oldest job is at -1
OLDEST_INDEX = -1
# Sidekiq <= 7 writes float seconds, Sidekiq 8 integer milliseconds.
ENQUEUED_AT_FIELD = "enqueued_at"


def job_enqueued_at(payload: bytes) -> Optional[float]:
    """Epoch seconds at which a Sidekiq job was enqueued; None when it has no `enqueued_at`."""
    job = parse_json_object(payload, "oldest job")
    value = job.get(ENQUEUED_AT_FIELD)
    if value is None:
        return None
    return epoch_seconds(value, ENQUEUED_AT_FIELD)


def queue_latency(oldest_payload: Optional[bytes], now: float) -> float:
    """Latency of a queue from its oldest job, as `Sidekiq::Queue#latency` computes it.

    An empty queue has none to wait for. A job without `enqueued_at` counts 0, as Sidekiq's own
    API counts it: its `created_at` is no enqueue time (a scheduled job was created long before
    it was enqueued), and a figure that differs from Sidekiq's Web UI helps nobody.
    """
    if oldest_payload is None:
        return 0.0
    enqueued_at = job_enqueued_at(oldest_payload)
    return 0.0 if enqueued_at is None else latency(enqueued_at, now)


@dataclasses.dataclass(frozen=True)
class SidekiqSettings:
    # redis-namespace prefix of a Sidekiq <= 6 app (`myapp` for keys `myapp:queues`, ...).
    namespace: str = ""
    # Queues to read besides those in the `queues` set.
    queues: Tuple[str, ...] = ()

    @classmethod
    def from_env(cls, values: Mapping[str, str]) -> "SidekiqSettings":
        return cls(
            namespace=values.get("QUEUE_METRICS_SIDEKIQ_NAMESPACE", "").strip(),
            queues=name_list(values.get("QUEUE_METRICS_SIDEKIQ_QUEUES")),
        )


class Sidekiq:
    name = NAME
    scan_pattern = None

    def __init__(self, settings: Optional[SidekiqSettings] = None) -> None:
        self.settings = settings or SidekiqSettings()
        # redis-namespace (Sidekiq <= 6) puts `<ns>:` before every key.
        self._key_prefix = f"{self.settings.namespace}:" if self.settings.namespace else ""
        self._registry = batch(("SMEMBERS", self._key_prefix + QUEUES_KEY))
        self._queue_batch = functools.lru_cache(maxsize=65536)(self._make_queue_batch)
        self._registered = 0

    def found_keys(self, keys: Iterable[str], complete: bool) -> None:
        """Sidekiq lists its queues in a set: nothing to discover."""

    def registry_batch(self) -> Batch:
        return self._registry

    def queues(self, replies: list, errors: ErrorLog) -> Found:
        key = self._key_prefix + QUEUES_KEY
        members = registry_members(NAME, key, replies[0], errors)
        self._registered = len(members)
        names = {decode_name(member) for member in members}
        names.update(self.settings.queues)
        evidence = None
        if members:
            evidence = f"the {key!r} set names {len(members)} queue(s)"
        elif self.settings.queues:
            evidence = "QUEUE_METRICS_SIDEKIQ_QUEUES is set"
        return Found(sorted(names), evidence)

    def _make_queue_batch(self, queue: str) -> Batch:
        key = encode_key(self._key_prefix + QUEUE_KEY.format(name=queue))
        return batch(("LLEN", key), ("LINDEX", key, OLDEST_INDEX))

    def read_queue(self, queue: str, errors: ErrorLog) -> QueueReader:
        replies = yield self._queue_batch(queue)
        head = list_head(NAME, queue, replies.values, errors)
        if head.size is None:
            return None
        if not head.readable:
            return QueueSample(NAME, queue, head.size, None)
        seconds = latency_or_report(NAME, queue, errors, lambda: queue_latency(head.oldest, replies.now))
        return QueueSample(NAME, queue, head.size, seconds)

    def read_system(self, errors: ErrorLog) -> Optional[SystemReader]:
        return None

    def describe(self) -> List[str]:
        where = f"namespace {self.settings.namespace!r}" if self.settings.namespace else "no namespace"
        return [f"keys read with {where} (QUEUE_METRICS_SIDEKIQ_NAMESPACE for a redis-namespace app)"]


SYSTEM = SystemSpec(NAME, SidekiqSettings.from_env, Sidekiq)  # type: ignore[arg-type]
