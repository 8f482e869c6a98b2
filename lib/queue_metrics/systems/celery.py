"""Celery with a Redis broker (kombu's Redis transport), and the opt-in publish stamp hook.

A queue is a list named after the queue plus one list per priority step (`<queue><sep><step>`);
size is their summed LLEN, as kombu's `queue_declare(passive=True).message_count` reports it.
Queue names come from the `_kombu.binding.<exchange>` sets, found by the collector's keyspace
walk (a SCAN, spread over time) whatever exchange or `global_keyprefix` the app uses.

Priority lists: kombu names a list after each of the app's `priority_steps` (default 0, 3, 6,
9; all ten when an app uses `list(range(10))`). The lists of the default steps are read every
tick and one EXISTS asks whether any of the others exists; only then are they read too. So the
size equals kombu's for any steps within 0-9, with no setting.

Celery messages carry no publish time, so latency needs a stamp: `install(app)` adds one; stamps
added by judoscale, hirefire and sentry-sdk are read too. A message still in a list waits for a
worker whatever its ETA: a running worker takes ETA and countdown messages off the list at once
and holds them itself. Without a stamp, the latency is observed from the lists (observed.py).

Held messages: a worker that takes a message (prefetched, an ETA/countdown task it holds until
due, a running `acks_late` task) keeps a copy in kombu's `unacked` hash until it acknowledges it,
as JSON `[message, exchange, routing_key]`; they are in no queue list. The total is the hash's
HLEN; per queue, the hash is read whole when it is small (one HSCAN of HELD_SCAN_COUNT entries
that comes back complete) and each entry's exchange and routing key, parsed from its tail only,
find its queues through the bindings as kombu's restore does.

This module never imports celery at module level: the collector must stay small.
"""

from __future__ import annotations

import functools
import json
from typing import Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple

from queue_metrics.celery import PUBLISHED_AT_PROPERTY
from queue_metrics.datastores.redis.resp import NameKey
from queue_metrics.errors import (
    ErrorLog,
    PayloadError,
    ReplyError,
    celery_queues_unseen_without_walk,
    describe_reply_error,
    show_name,
)
from queue_metrics.sample import (
    LATENCY_FROM_STAMP,
    LATENCY_OBSERVED,
    LATENCY_UNOBSERVABLE,
    Figure,
    QueueSample,
    SystemSample,
)
from queue_metrics.setting_values import escaped_text, name_list, whole_numbers
from queue_metrics.systems.contract import (
    Batch,
    BatchTemplate,
    Found,
    ParsedHeads,
    QueueReader,
    SameRegistry,
    SystemReader,
    SystemSpec,
    batch,
    decode_name,
    encode_key,
    evidence,
    glob_escape,
    parse_json_object,
    registry_members,
)
from queue_metrics.systems.observed import NOT_SEARCHED, ListObservers
from queue_metrics.systems.timestamps import epoch_seconds, iso8601_seconds, latency

NAME = "celery"
BINDING_KEY_MARK = "_kombu.binding."  # SET per exchange: routing_key<sep>pattern<sep>queue
DEFAULT_EXCHANGE = "celery"
OLDEST_INDEX = -1  # kombu LPUSHes and BRPOPs
NEWEST_INDEX = 0
# kombu's Redis transport defaults (transport options `sep` and `priority_steps`).
KOMBU_SEP = "\x06\x16"
KOMBU_PRIORITY_STEPS = (0, 3, 6, 9)
ALL_PRIORITY_STEPS = tuple(range(10))
# Remote control and event exchanges: their queues carry replies and events, not tasks.
NON_TASK_EXCHANGE_SUFFIXES = (".pidbox",)
NON_TASK_EXCHANGES = ("celeryev",)

RUN_AT_HEADER = "run_at"  # ISO 8601; set by hirefire
SENTRY_HEADER = "sentry-task-enqueued-time"  # epoch seconds; set by sentry-sdk
STAMP_MARKS = tuple(f'"{name}"'.encode() for name in (PUBLISHED_AT_PROPERTY, RUN_AT_HEADER, SENTRY_HEADER))
UNACKED_KEY = "unacked"  # HASH delivery tag -> JSON [message, exchange, routing_key]
# Held messages are attributed to queues when the hash has fewer entries than this: one HSCAN of
# this COUNT (in entries: Redis counts a field and its value once) then returns it whole, with
# cursor 0. A bigger hash gives its total only, and costs no more than this many entries read.
HELD_SCAN_COUNT = 1000
UNIT_MESSAGES = "{message}"
# ACL key patterns of the keys above, for a Redis user limited by key patterns: the bindings (under
# any global_keyprefix), the held messages, and each queue's lists, named after the queue (`celery`
# is the default queue; `<queue>` stands for each other one). A global_keyprefix's keys all start
# with it.
KEY_PATTERNS = (f"*{BINDING_KEY_MARK}*", UNACKED_KEY, "celery*", "<queue>*")


def binding_key(exchange: str, keyprefix: str = "") -> str:
    return f"{keyprefix}{BINDING_KEY_MARK}{exchange}"


def split_binding_key(key: str) -> Optional[Tuple[str, str]]:
    """(global_keyprefix, exchange) of a binding key; None for a key that is not one."""
    prefix, mark, exchange = key.partition(BINDING_KEY_MARK)
    if not mark or not exchange:
        return None
    return prefix, exchange


def is_task_exchange(exchange: str) -> bool:
    return exchange not in NON_TASK_EXCHANGES and not exchange.endswith(NON_TASK_EXCHANGE_SUFFIXES)


JSON_SPACE = b" \t\r\n"
NOT_A_HELD_ENTRY = "held message is not JSON [message, exchange, routing_key]"


def _end_of_token(text: bytes, end: int) -> int:
    """Where the JSON token before `end` ends, white space skipped."""
    while end > 0 and text[end - 1] in JSON_SPACE:
        end -= 1
    return end


def _tail_token(text: bytes, end: int) -> Tuple[Optional[str], int]:
    """The JSON string (or null) that ends just before `end`, and where it starts."""
    end = _end_of_token(text, end)
    if text.endswith(b"null", 0, end):
        return None, end - 4
    if end < 2 or text[end - 1] != ord('"'):
        raise PayloadError(NOT_A_HELD_ENTRY)
    start = end - 1
    while True:
        start = text.rfind(b'"', 0, start)
        if start < 0:
            raise PayloadError(NOT_A_HELD_ENTRY)
        # A quote after an odd number of backslashes is inside the string.
        backslashes = 0
        while start > backslashes and text[start - 1 - backslashes] == ord("\\"):
            backslashes += 1
        if backslashes % 2 == 0:
            break
    try:
        value = json.loads(text[start:end].decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise PayloadError(NOT_A_HELD_ENTRY) from None
    return value, start


def _comma_before(text: bytes, start: int) -> int:
    end = _end_of_token(text, start)
    if not end or text[end - 1] != ord(","):
        raise PayloadError(NOT_A_HELD_ENTRY)
    return end - 1


def held_route(entry: bytes) -> Tuple[Optional[str], Optional[str]]:
    """(exchange, routing_key) of an `unacked` entry, JSON `[message, exchange, routing_key]`,
    read from its end: the message itself (most of the bytes) is never parsed."""
    end = _end_of_token(entry, len(entry))
    if not end or entry[end - 1] != ord("]"):
        raise PayloadError(NOT_A_HELD_ENTRY)
    routing_key, start = _tail_token(entry, end - 1)
    exchange, start = _tail_token(entry, _comma_before(entry, start))
    _comma_before(entry, start)
    return exchange, routing_key


def message_stamp(payload: bytes) -> Optional[float]:
    """The publish time a kombu message carries, in epoch seconds; None when it has none.

    A message that names no stamp is not parsed at all: most carry none, and their latency is
    observed instead (parsing a 1 KB message costs more than the rest of its queue's reading).
    """
    if not any(mark in payload for mark in STAMP_MARKS):
        return None
    message = parse_json_object(payload, "oldest message")
    headers = message.get("headers")
    properties = message.get("properties")
    headers = headers if isinstance(headers, dict) else {}
    properties = properties if isinstance(properties, dict) else {}
    if properties.get(PUBLISHED_AT_PROPERTY) is not None:
        return epoch_seconds(properties[PUBLISHED_AT_PROPERTY], PUBLISHED_AT_PROPERTY)
    # Custom headers sometimes end up nested one level down.
    nested = headers.get("headers")
    for where in (headers, nested if isinstance(nested, dict) else {}):
        if where.get(RUN_AT_HEADER) is not None:
            return iso8601_seconds(where[RUN_AT_HEADER], RUN_AT_HEADER)
        if where.get(SENTRY_HEADER) is not None:
            return epoch_seconds(where[SENTRY_HEADER], SENTRY_HEADER)
    return None


def message_wait(payload: bytes, now: float, heads: Optional[ParsedHeads] = None) -> Optional[float]:
    """How long a message has waited for a worker: since its publish stamp, whatever its ETA.

    A message still in a list is waiting for a worker: a running worker takes ETA, countdown
    and retry messages off the list at once and holds them until due. None: no stamp.
    """
    stamp = message_stamp(payload) if heads is None else heads.parsed(payload, message_stamp)
    return None if stamp is None else latency(stamp, now)


def queue_latency(oldest_payloads: Iterable[Optional[bytes]], now: float) -> Optional[float]:
    """The longest wait over the oldest message of each list; None if any of them is unknown."""
    waits = []
    for payload in oldest_payloads:
        if payload is None:
            continue
        wait = message_wait(payload, now)
        if wait is None:
            return None
        waits.append(wait)
    return max(waits, default=0.0)


class CelerySettings(NamedTuple):
    # Queues to read besides those bound in `_kombu.binding.*`.
    queues: Tuple[str, ...] = ()
    # kombu transport option `sep`.
    sep: str = KOMBU_SEP
    # kombu transport option `priority_steps`; None: the defaults plus whichever others exist.
    priority_steps: Optional[Tuple[int, ...]] = None
    # kombu transport option `global_keyprefix`; None: every prefix the keyspace walk finds,
    # and the queue names carry it (`shop:celery`).
    keyprefix: Optional[str] = None

    @classmethod
    def from_env(cls, values: Mapping[str, str]) -> "CelerySettings":
        return cls(
            queues=name_list(values.get("QUEUE_METRICS_CELERY_QUEUES")),
            sep=escaped_text(values, "QUEUE_METRICS_CELERY_SEP", KOMBU_SEP),
            priority_steps=whole_numbers(values, "QUEUE_METRICS_CELERY_PRIORITY_STEPS", 0, 255),
            keyprefix=values.get("QUEUE_METRICS_CELERY_KEYPREFIX"),
        )


class Celery:
    name = NAME
    workers = None  # Celery keeps no record of its workers in Redis

    @property
    def key_patterns(self) -> Tuple[str, ...]:
        return (f"{glob_escape(self.settings.keyprefix)}*",) if self.settings.keyprefix else KEY_PATTERNS

    def __init__(self, settings: Optional[CelerySettings] = None, extras: bool = True) -> None:
        self.settings = settings or CelerySettings()
        self.extras = extras
        self._keyprefix = self.settings.keyprefix or ""
        # Binding keys known so far: the default exchange's at once, then what the walk finds.
        self._binding_keys: Set[str] = {binding_key(DEFAULT_EXCHANGE, self._keyprefix)}
        self._sorted_binding_keys: List[str] = sorted(self._binding_keys)
        self._registry = self._make_registry_batch()
        self._steps = self.settings.priority_steps or KOMBU_PRIORITY_STEPS
        # Without a setting, the steps beyond the defaults are probed with one EXISTS.
        self._probed = (
            ()
            if self.settings.priority_steps
            else tuple(step for step in ALL_PRIORITY_STEPS if step not in KOMBU_PRIORITY_STEPS)
        )
        # A queue's keys: its lists at self._steps, then those at self._probed; each is the queue's
        # name with a suffix (none at step 0).
        self._base_prefix = encode_key(self._keyprefix)
        self._suffixes = [self._step_suffix(step) for step in (*self._steps, *self._probed)]
        self._first_template = self._make_first_template()
        # Each list's history, for latency without a stamp (observed.py). What an empty list's
        # history comes down to, "empty at that tick", is kept per queue rather than per list: a
        # bit per list (its index in self._suffixes) set when the list was not seen empty (it
        # held messages or could not be read).
        self._observers = ListObservers(newest_at_head=True)
        self._heads = ParsedHeads()
        self._registry_found = SameRegistry()
        # What doctor reports: prefixes seen, lists with messages, stamped and unstamped heads.
        self.prefixes_seen: Set[str] = set()
        self.steps_seen: Set[int] = set()
        self.heads_stamped = 0
        self.heads_unstamped = 0
        # This tick's binding keys and their SMEMBERS replies; the routes made from them.
        self._bindings: Tuple[List[str], list] = ([], [])
        self._routes_made: Tuple[Tuple[List[str], list], Dict[Tuple[str, str, str], Dict[str, None]]] = (([], []), {})
        # Prefixes whose `unacked` hash was too big to read whole at the last tick: HLEN only,
        # until it shrinks.
        self._big_held: Set[str] = set()
        self._held_batch = self._make_held_batch()
        # This tick's held messages per queue; None: not known (a hash too big to read whole).
        self._held: Optional[Dict[str, int]] = None
        # The per-queue figure for each count seen (fewer than HELD_SCAN_COUNT): most queues share
        # a few, 0 above all.
        self._held_figures: Dict[int, Tuple[Figure, ...]] = {}
        self.held_attributed: Optional[bool] = None

    @property
    def scan_pattern(self) -> str:
        if self.settings.keyprefix is None:
            return f"*{BINDING_KEY_MARK}*"
        return binding_key("*", glob_escape(self.settings.keyprefix))

    def found_keys(self, keys: Iterable[str], complete: bool) -> None:
        wanted = set()
        for key in keys:
            parts = split_binding_key(key)
            if parts is None or not is_task_exchange(parts[1]):
                continue
            if self.settings.keyprefix is not None and parts[0] != self.settings.keyprefix:
                continue
            wanted.add(key)
        default = binding_key(DEFAULT_EXCHANGE, self._keyprefix)
        keys_now = (wanted | {default}) if complete else (self._binding_keys | wanted)
        if keys_now != self._binding_keys:
            self._binding_keys = keys_now
            self._sorted_binding_keys = sorted(keys_now)
            self._registry = self._make_registry_batch()
            self._held_batch = self._make_held_batch()

    def without_walk(self) -> Optional[str]:
        if self.settings.queues:
            return None  # the user named the queues, as the error line below asks
        return celery_queues_unseen_without_walk(DEFAULT_EXCHANGE)

    def _held_prefixes(self) -> List[str]:
        """The global_keyprefixes whose `unacked` hash is read: the one set, or every one found."""
        if self.settings.keyprefix is not None:
            return [self.settings.keyprefix]
        return sorted({(split_binding_key(key) or ("", ""))[0] for key in self._sorted_binding_keys})

    def _make_held_batch(self) -> Batch:
        commands: List[Tuple[object, ...]] = []
        for prefix in self._held_prefixes():
            key = encode_key(prefix + UNACKED_KEY)
            commands.append(("HLEN", key))
            if prefix not in self._big_held:
                commands.append(("HSCAN", key, 0, "COUNT", HELD_SCAN_COUNT))
        return batch(*commands)

    def _make_registry_batch(self) -> Batch:
        return batch(*[("SMEMBERS", encode_key(key)) for key in self._sorted_binding_keys])

    def registry_batch(self) -> Batch:
        return self._registry

    def queues(self, replies: list, errors: ErrorLog) -> Found:
        self._heads.start_tick()
        self._observers.start_tick()
        # Kept to find the queues of held messages, only when there are some (see _routes).
        self._bindings = (self._sorted_binding_keys, replies)
        items = (
            *self._sorted_binding_keys,
            *(tuple(reply) if isinstance(reply, list) else reply for reply in replies),
        )
        return self._registry_found.found(items, self._found_in, errors)

    def _found_in(self, errors: ErrorLog) -> Found:
        """The queues this tick's bindings name (`self._bindings`)."""
        names: Dict[str, None] = dict.fromkeys(self.settings.queues)
        bound = 0
        sep = self.settings.sep
        unreadable = 0
        for key, reply in zip(*self._bindings):
            prefix = (split_binding_key(key) or ("", ""))[0]
            ignored = 0
            for member in registry_members(NAME, key, reply, errors, self.key_patterns):
                parts = decode_name(member).split(sep)
                if len(parts) != 3:
                    ignored += 1
                    continue
                bound += 1
                self.prefixes_seen.add(prefix)
                # With a configured prefix the names are kombu's; found prefixes stay in the name.
                shown = parts[2] if self.settings.keyprefix is not None else prefix + parts[2]
                names[shown] = None
            if ignored:
                unreadable += ignored
                errors.add(
                    f"celery registry {show_name(key)}: ignoring {ignored} binding(s) that are not "
                    f"routing_key{sep!r}pattern{sep!r}queue (set QUEUE_METRICS_CELERY_SEP "
                    f"to the app's `sep` transport option)"
                )
        bindings = len(self._sorted_binding_keys)
        listed = (
            f"{bindings} _kombu.binding.* set(s) bind {bound + unreadable} queue(s)" if bound or unreadable else None
        )
        return Found(sorted(names), evidence(listed, "QUEUE_METRICS_CELERY_QUEUES", bool(self.settings.queues)))

    def list_keys(self, queue: str) -> Tuple[bytes, ...]:
        """The lists of a queue's steps read every tick, as kombu names them."""
        return tuple(self._keys(encode_key(queue))[: len(self._steps)])

    def _keys(self, name: bytes) -> List[bytes]:
        """The lists of the queue's steps, then those of the probed steps."""
        base = self._base_prefix + name
        return [base + suffix for suffix in self._suffixes]

    def _step_suffix(self, step: int) -> bytes:
        return b"" if step == 0 else encode_key(f"{self.settings.sep}{step}")

    def _make_first_template(self) -> BatchTemplate:
        # The first list's oldest and newest messages are read at once: most queues use no other.
        keys = [NameKey(self._base_prefix, suffix) for suffix in self._suffixes]
        steps = len(self._steps)
        commands: List[Tuple[object, ...]] = [("LLEN", key) for key in keys[:steps]]
        if self._probed:
            commands.append(("EXISTS", *keys[steps:]))
        commands += [("LINDEX", keys[0], OLDEST_INDEX), ("LINDEX", keys[0], NEWEST_INDEX)]
        return BatchTemplate(*commands)

    def _list_reads(self, lists: Sequence[Tuple[bytes, bool]]) -> Tuple[Batch, List[bool]]:
        """For each (key, length known): [LLEN], oldest, newest, [LPOS of the last newest]; and
        for each list whether its LPOS was sent (decided once: another queue's replies may turn
        observing off before these come back)."""
        packed, replies, searched = [], 0, []
        for key, length_known in lists:
            part = self._heads_batch(key, length_known)
            search = self._observers.search(key)
            packed += [part.packed, search.packed]
            replies += part.replies + search.replies
            searched.append(bool(search.replies))
        return Batch(b"".join(packed), replies), searched

    @functools.lru_cache(maxsize=65536)  # noqa: B019 (one per collector)
    def _heads_batch(self, key: bytes, length_known: bool) -> Batch:
        commands: List[Tuple[object, ...]] = [] if length_known else [("LLEN", key)]
        return batch(*commands, ("LINDEX", key, OLDEST_INDEX), ("LINDEX", key, NEWEST_INDEX))

    def _routes(self) -> Dict[Tuple[str, str, str], Dict[str, None]]:
        """(prefix, exchange, routing key) -> the queues (as shown) it binds, from this tick's
        bindings; made again only when they changed."""
        made_from, routes = self._routes_made
        if made_from == self._bindings:
            return routes
        routes = {}
        sep = self.settings.sep
        for key, reply in zip(*self._bindings):
            if isinstance(reply, ReplyError):
                continue
            prefix, exchange = split_binding_key(key) or ("", "")
            shown_prefix = "" if self.settings.keyprefix is not None else prefix
            for member in reply:
                parts = decode_name(member).split(sep)
                if len(parts) == 3:
                    routes.setdefault((prefix, exchange, parts[0]), {})[shown_prefix + parts[2]] = None
        self._routes_made = (self._bindings, routes)
        return routes

    def _with_held(self, queue: str, size: int, seconds: Optional[float], source: Optional[str] = None) -> QueueSample:
        """The queue's sample, with its held messages when this tick's system read counted them
        (it is advanced before the queues' reads at each step)."""
        if self._held is None:
            return QueueSample(NAME, queue, size, seconds, latency_source=source)
        count = self._held.get(queue, 0)
        figures = self._held_figures.get(count)
        if figures is None:
            figures = self._held_figures[count] = (Figure("unacked", count, UNIT_MESSAGES),)
        return QueueSample(NAME, queue, size, seconds, figures, source)

    def read_queue(self, queue: str, errors: ErrorLog) -> QueueReader:
        name = encode_key(queue)
        steps = len(self._steps)
        first = self._first_template.batch(name)
        base_key = self._base_prefix + name + self._suffixes[0]  # the first step's list (step 0 in kombu)
        search = self._observers.search(base_key)
        # Most queues send no LPOS (empty or stamped lists): their first batch goes as it is.
        replies = yield Batch(first.packed + search.packed, first.replies + 1) if search.replies else first
        self._observers.read_at(replies.now)
        values = replies.values
        sizes = values[:steps]
        exists = values[steps] if self._probed else 0
        at = steps + (1 if self._probed else 0)
        base = _ListRead(
            base_key,
            0,
            sizes[0],
            values[at],
            values[at + 1],
            values[at + 2] if search.replies else NOT_SEARCHED,
            replies.now,
        )
        # The lists not seen empty: an error reply, being truthy, counts as one.
        not_empty = sum(1 << index for index, reply in enumerate(sizes) if reply) if any(sizes) else 0

        wrong = [index for index, reply in enumerate(sizes) if isinstance(reply, ReplyError)]
        # The other lists' keys are made only when a reply needs them: most queues use one list.
        all_keys = self._keys(name) if wrong or exists or any(sizes[1:]) else [base_key]
        keys = all_keys[:steps]
        for index in wrong:
            errors.about_queue(
                NAME, queue, f"list {show_name(decode_name(keys[index]))}: {describe_reply_error(sizes[index])}"
            )
        if isinstance(exists, ReplyError):
            errors.about_queue(
                NAME, queue, f"priority lists beyond {KOMBU_PRIORITY_STEPS} not checked: {describe_reply_error(exists)}"
            )
            not_empty |= ((1 << len(self._probed)) - 1) << steps
            exists = 0
        if len(wrong) == steps:
            return None
        # kombu's own size sums the lists that answered with a length.
        size = sum(reply for reply in sizes if not isinstance(reply, ReplyError))
        lists = [base]
        # The other lists are looked into only when they hold messages.
        # Each as (index, key, length known from the first batch or None).
        busy = [(index, key, length) for index, (key, length) in enumerate(zip(keys, sizes)) if index and length]
        if wrong:
            busy = []
        probed = [(steps + offset, key, None) for offset, key in enumerate(all_keys[steps:])] if exists else []
        if busy or probed:
            follow_up, searched = self._list_reads([(key, length is not None) for _, key, length in (*busy, *probed)])
            replies = yield follow_up
            more = iter(replies.values)
            for (index, key, length), sent in zip([*busy, *probed], searched):
                if length is None:
                    length = next(more)
                    if not isinstance(length, ReplyError):
                        size += length
                    if length:
                        not_empty |= 1 << index
                oldest, newest = next(more), next(more)
                pushed = next(more) if sent else NOT_SEARCHED
                lists.append(_ListRead(key, index, length, oldest, newest, pushed, replies.now))
            self.steps_seen.update(self._step_of(queue, read.key) for read in lists[1:] if read.length)
        self._observers.not_empty[queue] = not_empty
        failed = next((read for read in lists if read.error() is not None), None)
        if wrong or failed is not None:
            reply = failed.error() if failed is not None else None
            if reply is not None and failed is not None and not wrong:
                errors.about_queue(
                    NAME,
                    queue,
                    f"latency unknown: list {show_name(decode_name(failed.key))}: {describe_reply_error(reply)}",
                )
            return self._with_held(queue, size, None)
        try:
            seconds, source = self._latency(queue, lists)
        except PayloadError as error:
            errors.about_queue(NAME, queue, f"latency unknown: {error}")
            return self._with_held(queue, size, None)
        return self._with_held(queue, size, seconds, source)

    def _step_of(self, queue: str, key: bytes) -> int:
        return int(decode_name(key)[len(self._keyprefix + queue + self.settings.sep) :] or 0)

    def _latency(self, queue: str, lists: Sequence["_ListRead"]) -> Tuple[Optional[float], Optional[str]]:
        """The longest wait over the queue's lists, and where it came from (stamp or observed).

        A stamp wins; an unstamped message waits as long as its list's history says (a lower
        bound until the loop has seen it arrive; nothing at all while that bound is still 0).
        """
        waits: List[float] = []
        observed = False
        unknown = False
        observers = self._observers
        for read in lists:
            if not read.length or read.oldest is None:
                # Emptied between its LLEN and its LINDEX: empty all the same.
                observers.empty(queue, read.bit, read.key, emptied=bool(read.length))
                continue
            wait = message_wait(read.oldest, read.now, self._heads)  # type: ignore[arg-type]
            if wait is not None:
                # A stamp wins, and a stamped list needs no history (nor its LINDEX 0 and LPOS).
                self.heads_stamped += 1
                observers.forget(read.key)
                waits.append(wait)
                continue
            self.heads_unstamped += 1
            observed = True
            seen = observers.observe(queue, read.bit, read.key, read.length, read.newest, read.pushed, read.now)  # type: ignore[arg-type]
            if seen is None:
                unknown = True
                continue
            waits.append(seen)
        if unknown:
            # Not known yet, but observed from the next tick on; without LPOS it never will be
            # (the table says which).
            return None, LATENCY_OBSERVED if observers.observing else LATENCY_UNOBSERVABLE
        if not waits:
            return 0.0, None
        return max(waits), LATENCY_OBSERVED if observed else LATENCY_FROM_STAMP

    def read_system(self, errors: ErrorLog) -> Optional[SystemReader]:
        self._held = None
        return self._read_held(errors) if self.extras else None

    def _read_held(self, errors: ErrorLog) -> SystemReader:
        """Messages workers hold unacknowledged: in total, and per queue when the hash is small."""
        prefixes = self._held_prefixes()
        big = set(self._big_held)
        replies = yield self._held_batch
        values = iter(replies.values)
        total = 0
        held: Optional[Dict[str, int]] = {}
        for prefix in prefixes:
            size = next(values)
            scan = None if prefix in big else next(values)
            key = prefix + UNACKED_KEY
            if isinstance(size, ReplyError):
                errors.about_reply(NAME, f"held messages {show_name(key)}", size, "a hash")
                return None
            total += size
            if size >= HELD_SCAN_COUNT:
                self._big_held.add(prefix)
            else:
                self._big_held.discard(prefix)
            if scan is None or isinstance(scan, ReplyError) or scan[0] != b"0":
                held = None  # too many to read whole this tick: the total only
            elif held is not None:
                self._attribute(prefix, scan[1], held, errors)
        if self._big_held != big:
            self._held_batch = self._make_held_batch()
        self._held = held
        self.held_attributed = held is not None
        return SystemSample(NAME, (Figure("unacked", total, UNIT_MESSAGES),))

    def _attribute(self, prefix: str, fields_and_values: list, held: Dict[str, int], errors: ErrorLog) -> None:
        """Count each held message for the queues kombu would restore it to (its `_lookup`)."""
        shown_prefix = "" if self.settings.keyprefix is not None else prefix
        unreadable = 0
        for entry in fields_and_values[1::2]:
            try:
                exchange, routing_key = held_route(entry)
            except PayloadError:
                unreadable += 1
                continue
            if not exchange:  # the anonymous exchange routes to the queue named by the key
                queues: Iterable[str] = (shown_prefix + routing_key,) if routing_key else ()
            else:
                queues = self._routes().get((prefix, exchange, routing_key or ""), ())
            for queue in queues:
                held[queue] = held.get(queue, 0) + 1
        if unreadable:
            errors.add(
                f"{NAME} held messages {show_name(prefix + UNACKED_KEY)}: {unreadable} not "
                f"JSON [message, exchange, routing_key], counted in the total only"
            )

    def describe(self) -> List[str]:
        # doctor walks the whole keyspace before it asks: what was not found is not there.
        prefixes = ", ".join(repr(prefix) for prefix in sorted(self.prefixes_seen))
        prefixes = prefixes or "none (no _kombu.binding.* set names a queue)"
        if self.settings.keyprefix is not None:
            prefix_line = f"global_keyprefix {self.settings.keyprefix!r} (QUEUE_METRICS_CELERY_KEYPREFIX)"
        else:
            prefix_line = f"global_keyprefix detected from the binding keys: {prefixes}"
        steps = sorted({0} | self.steps_seen)
        if self.settings.priority_steps:
            steps_line = f"priority steps {list(self.settings.priority_steps)} (QUEUE_METRICS_CELERY_PRIORITY_STEPS)"
        else:
            steps_line = (
                f"priority lists with messages: steps {steps} (lists of every step 0-9 are "
                f"counted, as kombu does for any priority_steps)"
            )
        lines = [prefix_line, steps_line, f"separator {self.settings.sep!r}"]
        if self.held_attributed is not None:
            lines.append(
                "held (unacked) messages: "
                + (
                    "counted per queue"
                    if self.held_attributed
                    else f"total only (per queue needs fewer than {HELD_SCAN_COUNT} in the unacked hash)"
                )
            )
        if self.heads_stamped or self.heads_unstamped:
            lines.append(
                f"publish stamps: {self.heads_stamped} queue head(s) stamped, {self.heads_unstamped} without a stamp"
            )
        return lines


class _ListRead(NamedTuple):
    """One list of a queue as read this tick."""

    key: bytes
    bit: int  # its index in Celery._suffixes, its bit in the queue's not-empty bits (ListObservers)
    length: object  # an int, or the ReplyError of its LLEN
    oldest: object
    newest: object
    pushed: object  # LPOS of the last newest message, or None
    now: float

    def error(self) -> Optional[ReplyError]:
        # LPOS is left out: without it the list's latency is a lower bound, not unknown.
        return next((value for value in (self.length, self.oldest, self.newest) if isinstance(value, ReplyError)), None)


SYSTEM = SystemSpec(NAME, CelerySettings.from_env, Celery)  # type: ignore[arg-type]
