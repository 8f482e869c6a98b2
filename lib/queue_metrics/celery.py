"""Celery with a Redis broker (kombu's Redis transport), and the opt-in publish stamp hook.

A queue is a list named after the queue plus one list per priority step (`<queue><sep><step>`);
size is their summed LLEN, as kombu's `queue_declare(passive=True).message_count` reports it.
Queue names come from the `_kombu.binding.<exchange>` sets. Celery messages carry no publish
time, so latency needs a stamp: `install(app)` adds one; stamps added by judoscale, hirefire and
sentry-sdk are read too. Without a stamp the queue reports its size only.

This module never imports celery at module level: the collector must stay small.
"""

from __future__ import annotations

import functools
import time
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

from queue_metrics.reading import (
    Batch,
    Problems,
    QueueReader,
    batch,
    decode_name,
    describe_reply_error,
    encode_key,
    is_error,
    latency_or_report,
    parse_json_object,
    registry_members,
    show_name,
)
from queue_metrics.sample import QueueSample
from queue_metrics.timestamps import epoch_seconds, iso8601_seconds, latency

NAME = "celery"
BINDING_KEY_PREFIX = "_kombu.binding."  # SET per exchange: routing_key<sep>pattern<sep>queue
DEFAULT_EXCHANGE = "celery"
OLDEST_INDEX = -1  # kombu LPUSHes and BRPOPs
# Remote control and event exchanges: their queues carry replies and events, not tasks.
NON_TASK_EXCHANGE_SUFFIXES = (".pidbox",)
NON_TASK_EXCHANGES = ("celeryev",)

PUBLISHED_AT_PROPERTY = "published_at"  # epoch seconds; set by install() and by judoscale
RUN_AT_HEADER = "run_at"  # ISO 8601; set by hirefire
SENTRY_HEADER = "sentry-task-enqueued-time"  # epoch seconds; set by sentry-sdk
ETA_HEADER = "eta"
DISPATCH_UID = "queue_metrics.celery.published_at"


def binding_key(exchange: str, keyprefix: str = "") -> str:
    return f"{keyprefix}{BINDING_KEY_PREFIX}{exchange}"


def is_task_exchange(exchange: str) -> bool:
    return exchange not in NON_TASK_EXCHANGES and not exchange.endswith(NON_TASK_EXCHANGE_SUFFIXES)


def message_times(payload: bytes) -> Tuple[Optional[float], Optional[float]]:
    """(publish stamp, eta) of a kombu message, each None when the message has none."""
    message = parse_json_object(payload, "oldest message")
    headers = message.get("headers")
    properties = message.get("properties")
    headers = headers if isinstance(headers, dict) else {}
    properties = properties if isinstance(properties, dict) else {}
    # Custom headers sometimes end up nested one level down.
    nested = headers.get("headers")
    nested = nested if isinstance(nested, dict) else {}

    stamp = None
    if properties.get(PUBLISHED_AT_PROPERTY) is not None:
        stamp = epoch_seconds(properties[PUBLISHED_AT_PROPERTY], PUBLISHED_AT_PROPERTY)
    else:
        for where in (headers, nested):
            if where.get(RUN_AT_HEADER) is not None:
                stamp = iso8601_seconds(where[RUN_AT_HEADER], RUN_AT_HEADER)
                break
            if where.get(SENTRY_HEADER) is not None:
                stamp = epoch_seconds(where[SENTRY_HEADER], SENTRY_HEADER)
                break
    eta = None
    if headers.get(ETA_HEADER) is not None:
        eta = iso8601_seconds(headers[ETA_HEADER], ETA_HEADER)
    return stamp, eta


def message_wait(payload: bytes, now: float) -> Optional[float]:
    """How long a message has waited for a worker; None when it carries no publish stamp.

    A message whose ETA is still ahead is not waiting for a worker: it counts as 0. One whose
    ETA has passed has waited since the later of its publish time and its ETA.
    """
    stamp, eta = message_times(payload)
    if eta is not None and eta > now:
        return 0.0
    if stamp is None:
        return None
    return latency(max(stamp, eta) if eta is not None else stamp, now)


def queue_latency(oldest_payloads: Iterable[Optional[bytes]], now: float) -> Optional[float]:
    """The longest wait over the oldest message of each priority list; None if any is unknown."""
    waits = []
    for payload in oldest_payloads:
        if payload is None:
            continue
        wait = message_wait(payload, now)
        if wait is None:
            return None
        waits.append(wait)
    return max(waits, default=0.0)


class CeleryReader:
    name = NAME

    def __init__(
        self,
        sep: str = "\x06\x16",
        priority_steps: Sequence[int] = (0, 3, 6, 9),
        keyprefix: str = "",
        extra_queues: Sequence[str] = (),
    ) -> None:
        self._sep = sep
        self._priority_steps = tuple(priority_steps)
        self._keyprefix = keyprefix
        self._extra_queues = tuple(extra_queues)
        # Binding keys known so far: the default exchange's, plus what the last scan found.
        self.binding_keys: Set[str] = {binding_key(DEFAULT_EXCHANGE, keyprefix)}
        self._sorted_binding_keys: List[str] = sorted(self.binding_keys)
        self.list_keys = functools.lru_cache(maxsize=65536)(self._list_keys)
        self._first_batch = functools.lru_cache(maxsize=65536)(self._make_first_batch)
        self._oldest_batch = functools.lru_cache(maxsize=65536)(self._make_oldest_batch)

    @property
    def binding_scan_pattern(self) -> str:
        return binding_key("*", self._keyprefix)

    def add_binding_keys(self, keys: Iterable[str]) -> None:
        prefix_length = len(binding_key("", self._keyprefix))
        self.binding_keys.update(key for key in keys if is_task_exchange(key[prefix_length:]))
        self._sorted_binding_keys = sorted(self.binding_keys)

    def registry_batch(self) -> Batch:
        return batch(*[("SMEMBERS", encode_key(key)) for key in self._sorted_binding_keys])

    def queues_from_registry(self, replies: list, problems: Problems) -> Tuple[List[str], bool]:
        names: Dict[str, None] = dict.fromkeys(self._extra_queues)
        found_any = False
        for key, reply in zip(self._sorted_binding_keys, replies):
            for member in registry_members(NAME, key, reply, problems):
                found_any = True
                parts = decode_name(member).split(self._sep)
                if len(parts) != 3:
                    problems.add(f"celery registry {show_name(key)}: ignoring a binding that is not routing_key{self._sep!r}pattern{self._sep!r}queue")
                    continue
                names[parts[2]] = None
        return sorted(names), found_any or bool(self._extra_queues)

    def _list_keys(self, queue: str) -> List[bytes]:
        """The lists holding a queue's messages: one per priority step, as kombu names them."""
        base = self._keyprefix + queue
        return [encode_key(base if step == 0 else f"{base}{self._sep}{step}") for step in self._priority_steps]

    def _make_first_batch(self, queue: str) -> Batch:
        # The oldest message of the first list is read at once: most queues use no other.
        keys = self.list_keys(queue)
        return batch(*[("LLEN", key) for key in keys], ("LINDEX", keys[0], OLDEST_INDEX))

    @staticmethod
    def _make_oldest_batch(keys: Tuple[bytes, ...]) -> Batch:
        return batch(*[("LINDEX", key, OLDEST_INDEX) for key in keys])

    def read_queue(self, queue: str, problems: Problems) -> QueueReader:
        keys = self.list_keys(queue)
        replies = yield self._first_batch(queue)
        sizes, first_oldest = replies.values[:-1], replies.values[-1]

        wrong = [index for index, reply in enumerate(sizes) if is_error(reply)]
        for index in wrong:
            problems.about_queue(NAME, queue, f"list {show_name(decode_name(keys[index]))}: {describe_reply_error(sizes[index])}")
        if len(wrong) == len(keys):
            return None
        # kombu's own size sums the lists that answered with a length.
        size = sum(reply for reply in sizes if not is_error(reply))
        if wrong or is_error(first_oldest):
            return QueueSample(NAME, queue, size, None)
        oldest = [first_oldest]
        # The other priority lists are looked into only when they hold messages.
        others = tuple(key for key, length in zip(keys[1:], sizes[1:]) if length)
        if others:
            replies = yield self._oldest_batch(others)
            if any(is_error(reply) for reply in replies.values):
                return QueueSample(NAME, queue, size, None)
            oldest.extend(replies.values)
        seconds = latency_or_report(NAME, queue, problems, lambda: queue_latency(oldest, replies.now))
        return QueueSample(NAME, queue, size, seconds)


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
