"""Sidekiq: queues are Redis lists of JSON jobs, named in the `queues` set.

Matches `Sidekiq::Queue#size` (LLEN) and `#latency` (age of the job at LINDEX -1, the next one a
worker's BRPOP takes), with Sidekiq 8's millisecond timestamps read too.
"""

from __future__ import annotations

import functools
from typing import List, Optional, Sequence, Tuple

from queue_metrics.reading import (
    Batch,
    Problems,
    QueueReader,
    batch,
    decode_name,
    encode_key,
    latency_or_report,
    list_head,
    parse_json_object,
    registry_members,
)
from queue_metrics.sample import QueueSample
from queue_metrics.timestamps import PayloadError, epoch_seconds, latency

NAME = "sidekiq"
QUEUES_KEY = "queues"  # SET of queue names
QUEUE_KEY = "queue:{name}"  # LIST; clients LPUSH, workers BRPOP: the oldest job is at -1
OLDEST_INDEX = -1
# Sidekiq <= 7 writes float seconds, Sidekiq 8 integer milliseconds; Sidekiq itself uses
# `created_at` when a job has no `enqueued_at`.
TIMESTAMP_FIELDS = ("enqueued_at", "created_at")


def job_enqueued_at(payload: bytes) -> float:
    """Epoch seconds at which a Sidekiq job was enqueued, from its JSON payload."""
    job = parse_json_object(payload, "oldest job")
    for field in TIMESTAMP_FIELDS:
        if job.get(field) is not None:
            return epoch_seconds(job[field], field)
    raise PayloadError("oldest job has neither enqueued_at nor created_at")


def queue_latency(oldest_payload: Optional[bytes], now: float) -> float:
    """Latency of a queue from its oldest job; an empty queue has none to wait for."""
    if oldest_payload is None:
        return 0.0
    return latency(job_enqueued_at(oldest_payload), now)


class SidekiqReader:
    name = NAME

    def __init__(self, namespace: str = "", extra_queues: Sequence[str] = ()) -> None:
        # redis-namespace (Sidekiq <= 6) puts `<ns>:` before every key.
        self._key_prefix = f"{namespace}:" if namespace else ""
        self._extra_queues = tuple(extra_queues)
        self._queue_batch = functools.lru_cache(maxsize=65536)(self._make_queue_batch)

    def registry_batch(self) -> Batch:
        return batch(("SMEMBERS", self._key_prefix + QUEUES_KEY))

    def queues_from_registry(self, replies: list, problems: Problems) -> Tuple[List[str], bool]:
        """The queue names to read, and whether the registry shows Sidekiq in use."""
        members = registry_members(NAME, self._key_prefix + QUEUES_KEY, replies[0], problems)
        names = {decode_name(member) for member in members}
        names.update(self._extra_queues)
        return sorted(names), bool(members) or bool(self._extra_queues)

    def _make_queue_batch(self, queue: str) -> Batch:
        key = encode_key(self._key_prefix + QUEUE_KEY.format(name=queue))
        return batch(("LLEN", key), ("LINDEX", key, OLDEST_INDEX))

    def read_queue(self, queue: str, problems: Problems) -> QueueReader:
        replies = yield self._queue_batch(queue)
        head = list_head(NAME, queue, replies.values, problems)
        if head.size is None:
            return None
        if not head.readable:
            return QueueSample(NAME, queue, head.size, None)
        seconds = latency_or_report(NAME, queue, problems, lambda: queue_latency(head.oldest, replies.now))
        return QueueSample(NAME, queue, head.size, seconds)
