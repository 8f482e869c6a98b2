"""Dramatiq with its Redis broker (`dramatiq.brokers.redis.RedisBroker`).

Every key starts with the broker's namespace (`dramatiq`) and a colon. A queue `<q>` is a list of
message ids `<ns>:<q>` and a hash `<ns>:<q>.msgs` of id -> encoded message (dispatch.lua in the
dramatiq package): `enqueue` HSETs the message and RPUSHes its id, a worker's `fetch` LPOPs ids
(its prefetch) and adds them to its own set `<ns>:__acks__.<worker>.<q>`; `ack` deletes the
message from the hash. So the list holds the messages waiting for a worker, the first sent at
index 0, and size is its LLEN. The hash holds those and the fetched ones a worker has not
acknowledged yet (prefetched into its memory, or running): `unacked` is HLEN minus LLEN.

Latency: how long the message next in line (index 0) has waited, from its `message_timestamp`
(epoch milliseconds, set when the message is created). A worker that stops puts the messages it
prefetched back at the tail (`requeue`, also the recovery of a dead worker's messages), and a
delayed or retried message comes back at the tail when due, keeping its creation time: such a
message counts from its creation once it reaches index 0, and is not looked at before. Dramatiq
keeps no other time. The head's id is remembered with its time: while it stays at the head, its
message is not read again (ids are unique per enqueue: the broker gives each a new uuid4).

Delayed messages (`send_with_options(delay=...)`, and retries with a backoff) go to the queue
`<q>.DQ`: its list and its hash `<ns>:<q>.DQ.msgs`. A running worker fetches them at once (up to
a thousand per thread) and holds them in memory until their `eta`, so the list is nearly always
empty; `delayed` is the hash's HLEN: every delayed message not yet moved to the queue, in the
list or held by a worker. Which of them are due cannot be told without reading every one (the
list is in sending order, the `eta` is inside each message): with no worker running, due ones are
counted in `delayed`, not in `size`. Dead-lettered messages (a failure past `max_retries`) are in
the sorted set `<ns>:<q>.XQ` (score: when, in ms; kept 7 days): `dead` is its ZCARD.

Queues: Dramatiq lists none in Redis, and every key of an idle queue vanishes. The keyspace walk
finds the `*.msgs` hashes (of a queue, its delay queue or its dead letters), and the names found
are remembered for as long as the collector runs. Namespaces: the default `dramatiq`, or
QUEUE_METRICS_DRAMATIQ_NAMESPACE; without that setting, other namespaces are detected: a key
`<ns>:<q>.msgs` (Dramatiq queue names hold no colon) is one when `<ns>:__heartbeats__` exists, a
sorted set that every call of Dramatiq's dispatch script (a send, too) writes first and that
never empties. Their queues are shown as `<ns>:<q>`. `__heartbeats__` counts producers as well
as workers, so it gives no worker count.
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, List, Mapping, NamedTuple, Optional, Set, Tuple

from queue_metrics.datastores.redis.resp import NameKey
from queue_metrics.errors import (
    ErrorLog,
    PayloadError,
    ReplyError,
    describe_registry_denial,
    describe_reply_error,
    dramatiq_queues_unseen_without_walk,
    show_name,
)
from queue_metrics.sample import Figure, QueueSample
from queue_metrics.setting_values import name_list
from queue_metrics.systems.contract import (
    Batch,
    BatchTemplate,
    Found,
    QueueReader,
    SameRegistry,
    SystemReader,
    SystemSpec,
    batch,
    decode_name,
    encode_key,
    evidence,
    glob_escape,
    list_head,
    parse_json_object,
)
from queue_metrics.systems.timestamps import epoch_seconds, latency

NAME = "dramatiq"
DEFAULT_NAMESPACE = "dramatiq"
# A namespace's keys: the namespace, a colon, then these.
HEARTBEATS_KEY = "__heartbeats__"  # ZSET broker id -> last dispatch ms; written by every dispatch
QUEUE_KEY = "{name}"  # LIST of message ids; the first sent at 0, workers LPOP
MESSAGES_KEY = "{name}.msgs"  # HASH id -> message: waiting and fetched-but-unacknowledged
DELAYED_MESSAGES_KEY = "{name}.DQ.msgs"  # HASH id -> message of the delay queue `<q>.DQ`
DEAD_KEY = "{name}.XQ"  # ZSET id -> ms when dead-lettered
MESSAGES_SUFFIX = ".msgs"
# A queue's other queues (dramatiq.common.q_name): `<q>.DQ` delayed, `<q>.XQ` dead letters.
OTHER_QUEUE_SUFFIXES = (".DQ", ".XQ")
HEAD_INDEX = 0
TIMESTAMP_FIELD = "message_timestamp"  # epoch ms when the message was created
# The field as Dramatiq's JSONEncoder writes it, last in the message: `..."message_timestamp":1796613048780}`.
# A closing brace right after the number ending the payload closes the top-level object, so the
# field matched is the message's own, not one inside its arguments.
TIMESTAMP_AT_END = re.compile(rb'"message_timestamp":(\d{1,16})}\s*\Z')
UNIT_MESSAGES = "{message}"
FIGURES = ("unacked", "delayed", "dead")
FIGURES_CACHED = 4096


def message_created(payload: bytes) -> float:
    """Epoch seconds of a Dramatiq message's `message_timestamp`; PayloadError when it has none
    or it is not a time (a message of the PickleEncoder is not JSON: it is never unpickled)."""
    match = TIMESTAMP_AT_END.search(payload)
    if match is not None:
        return epoch_seconds(int(match.group(1)), TIMESTAMP_FIELD)
    message = parse_json_object(payload, "message")
    return epoch_seconds(message.get(TIMESTAMP_FIELD), TIMESTAMP_FIELD)


def split_messages_key(key: str) -> Optional[Tuple[str, str]]:
    """(namespace, queue) of a `<ns>:<q>.msgs` hash key (also `<q>.DQ.msgs`, `<q>.XQ.msgs`);
    None for another key. Dramatiq's queue names hold no colon: the namespace is what comes
    before the last one."""
    if not key.endswith(MESSAGES_SUFFIX):
        return None
    namespace, colon, queue = key[: -len(MESSAGES_SUFFIX)].rpartition(":")
    if not colon:
        return None
    for suffix in OTHER_QUEUE_SUFFIXES:
        if queue.endswith(suffix):
            queue = queue[: -len(suffix)]
            break
    if not queue:
        return None
    return namespace, queue


# HGET <ns>:<q>.msgs <id>, packed by hand: once a queue whose head changed, on the hot path.
_HGET = b"*3\r\n$4\r\nHGET\r\n$%d\r\n%s.msgs\r\n$%d\r\n%s\r\n"


def message_batch(list_key: bytes, message_id: bytes) -> Batch:
    """HGET of a message in the `.msgs` hash of the queue whose list is `list_key`."""
    return Batch(_HGET % (len(list_key) + len(MESSAGES_SUFFIX), list_key, len(message_id), message_id), 1)


class DramatiqSettings(NamedTuple):
    # Queues to read besides those the keyspace walk finds (in the namespace below).
    queues: Tuple[str, ...] = ()
    # RedisBroker(namespace=...); None: `dramatiq`, and other namespaces are detected.
    namespace: Optional[str] = None

    @classmethod
    def from_env(cls, values: Mapping[str, str]) -> "DramatiqSettings":
        namespace = values.get("QUEUE_METRICS_DRAMATIQ_NAMESPACE", "").strip()
        return cls(queues=name_list(values.get("QUEUE_METRICS_DRAMATIQ_QUEUES")), namespace=namespace or None)


class Dramatiq:
    name = NAME
    workers = None  # __heartbeats__ lists producers too: Redis holds no count of workers

    def __init__(self, settings: Optional[DramatiqSettings] = None, extras: bool = True) -> None:
        self.settings = settings or DramatiqSettings()
        self.extras = extras
        self._namespace = self.settings.namespace or DEFAULT_NAMESPACE
        self._detect = self.settings.namespace is None
        # Queue names found by the walk, by namespace; the own namespace's are kept for good, and
        # so are those of other namespaces once their __heartbeats__ was seen.
        self._names: Dict[str, Set[str]] = {self._namespace: set()}
        self._confirmed: Set[str] = set()
        # Counts the changes of `_names`: the queues are listed again only after one.
        self._version = 0
        self._namespaces: List[str] = [self._namespace]
        self._registry = self._make_registry()
        # Each queue's list key, by its shown name (`<q>`, or `<ns>:<q>` in another namespace).
        self._keys: Dict[str, bytes] = {}
        self._own_prefix = encode_key(self._namespace + ":")
        list_key = NameKey(b"")
        head = [("LLEN", list_key), ("LINDEX", list_key, HEAD_INDEX)]
        if extras:
            head += [
                ("HLEN", NameKey(b"", encode_key(MESSAGES_KEY.format(name="")))),
                ("HLEN", NameKey(b"", encode_key(DELAYED_MESSAGES_KEY.format(name="")))),
                ("ZCARD", NameKey(b"", encode_key(DEAD_KEY.format(name="")))),
            ]
        self._template = BatchTemplate(*head)
        # The head message of each queue read at the last tick: its id and creation time.
        self._heads_before: Dict[str, Tuple[bytes, float]] = {}
        self._heads: Dict[str, Tuple[bytes, float]] = {}
        self._found = SameRegistry()
        # The per-queue figures by their counts (unacked, delayed, dead).
        self._figures_made: Dict[Tuple[int, int, int], Tuple[Figure, ...]] = {}
        self.namespaces_seen: Set[str] = set()

    @property
    def key_patterns(self) -> Tuple[str, ...]:
        own = f"{glob_escape(self._namespace)}:*"
        return (own,) if not self._detect else (own, "<namespace>:*")

    @property
    def scan_pattern(self) -> str:
        if self._detect:
            return f"*{MESSAGES_SUFFIX}"
        return f"{glob_escape(self._namespace)}:*{MESSAGES_SUFFIX}"

    def found_keys(self, keys: Iterable[str], complete: bool) -> None:
        found: Dict[str, Set[str]] = {}
        for key in keys:
            parts = split_messages_key(key)
            if parts is None or (not self._detect and parts[0] != self._namespace):
                continue
            found.setdefault(parts[0], set()).add(parts[1])
        for namespace, names in found.items():
            known = self._names.setdefault(namespace, set())
            if not names <= known:
                known.update(names)
                self._version += 1
        if complete:
            # Names in a namespace never confirmed (no __heartbeats__: not Dramatiq's) are those
            # of the last whole pass only: a keyspace of other programs' `.msgs` keys is not kept.
            for namespace in list(self._names):
                if namespace != self._namespace and namespace not in self._confirmed:
                    if namespace in found:
                        self._names[namespace] = found[namespace]
                    else:
                        del self._names[namespace]
                    self._version += 1
        namespaces = [self._namespace, *sorted(set(self._names) - {self._namespace})]
        if namespaces != self._namespaces:
            self._namespaces = namespaces
            self._registry = self._make_registry()

    def without_walk(self) -> Optional[str]:
        """Without SCAN, only the named queues are read; said only once Dramatiq was seen (the
        first walk step comes before the first tick's reads: on a Redis without SCAN and without
        Dramatiq, nothing is said, and doctor tells of the missing SCAN)."""
        if self.settings.queues or not (self._confirmed or any(self._names.values())):
            return None
        return dramatiq_queues_unseen_without_walk()

    def _make_registry(self) -> Batch:
        return batch(*[("EXISTS", encode_key(f"{namespace}:{HEARTBEATS_KEY}")) for namespace in self._namespaces])

    def registry_batch(self) -> Batch:
        return self._registry

    def queues(self, replies: list, errors: ErrorLog) -> Found:
        self._heads_before, self._heads = self._heads, {}
        namespaces = self._namespaces
        in_use = []
        for namespace, reply in zip(namespaces, replies):
            key = f"{namespace}:{HEARTBEATS_KEY}"
            if isinstance(reply, ReplyError):
                if reply.code == "NOPERM" and namespace == self._namespace:
                    denial = describe_registry_denial(NAME, reply, self.key_patterns)
                    errors.refused(key, f"{NAME} {show_name(key)}: {denial}")
                elif namespace == self._namespace:
                    errors.about_reply(NAME, show_name(key), reply, "a sorted set")
                continue
            if reply:
                in_use.append(namespace)
        self._confirmed.update(in_use)
        items = (self._version, *namespaces, None, *in_use)
        return self._found.found(items, lambda own: self._found_now(in_use), errors)

    def _found_now(self, in_use: List[str]) -> Found:
        names: Dict[str, None] = dict.fromkeys(self.settings.queues)
        names.update(dict.fromkeys(sorted(self._names[self._namespace])))
        self._keys = {name: self._own_prefix + encode_key(name) for name in names}
        found = len(self._names[self._namespace])  # by the walk, the named ones left out
        for namespace in in_use:
            if namespace == self._namespace:
                continue
            for queue in sorted(self._names.get(namespace, ())):
                shown = f"{namespace}:{queue}"
                names[shown] = None
                self._keys[shown] = encode_key(shown)
                found += 1
        self.namespaces_seen = set(in_use) | ({self._namespace} if self._names[self._namespace] else set())
        listed = None
        if in_use or self._names[self._namespace]:
            shown = ", ".join(repr(namespace) for namespace in sorted(self.namespaces_seen))
            listed = f"{found} queue(s) found in namespace(s) {shown}"
        return Found(sorted(names), evidence(listed, "QUEUE_METRICS_DRAMATIQ_QUEUES", bool(self.settings.queues)))

    def read_queue(self, queue: str, errors: ErrorLog) -> QueueReader:
        key = self._keys.get(queue) or self._own_prefix + encode_key(queue)
        replies = yield self._template.batch(key)
        values = replies.values
        size, message_id = values[0], values[1]
        if isinstance(size, ReplyError) or isinstance(message_id, ReplyError):
            head = list_head(NAME, queue, values[:2], errors, self.key_patterns)
            if head.size is None:
                return None
            figures = self._figures(queue, key, head.size, values[2:], errors) if self.extras else ()
            return QueueSample(NAME, queue, head.size, None, figures)
        figures = self._figures(queue, key, size, values[2:], errors) if self.extras else ()
        if message_id is None:
            return QueueSample(NAME, queue, size, 0.0, figures)
        known = self._heads_before.get(queue)
        if known is not None and known[0] == message_id:
            created = known[1]
        else:
            replies = yield message_batch(key, message_id)
            try:
                created = self._created(replies.values[0], message_id)
            except PayloadError as error:
                errors.about_queue(NAME, queue, f"latency unknown: {error}")
                return QueueSample(NAME, queue, size, None, figures)
        self._heads[queue] = (message_id, created)
        return QueueSample(NAME, queue, size, latency(created, replies.now), figures)

    @staticmethod
    def _created(reply: object, message_id: bytes) -> float:
        if reply is not None and not isinstance(reply, ReplyError):
            try:
                return message_created(reply)  # type: ignore[arg-type]
            except PayloadError as error:
                problem = str(error)
        elif reply is None:
            problem = "is not in its queue's .msgs hash (deleted)"
        else:
            problem = describe_reply_error(reply, "a hash")  # type: ignore[arg-type]
        raise PayloadError(f"message {show_name(decode_name(message_id))}: {problem}")

    def _figures(self, queue: str, key: bytes, size: int, values: list, errors: ErrorLog) -> Tuple[Figure, ...]:
        """unacked (HLEN .msgs - LLEN), delayed (HLEN .DQ.msgs), dead (ZCARD .XQ); most queues
        share a few (all 0 above all), so each is made once."""
        messages, delayed, dead = values
        if type(messages) is int and type(delayed) is int and type(dead) is int:
            # Read right after the list: a message sent between the two reads would count here;
            # never below 0.
            counts = (max(0, messages - size), delayed, dead)
            figures = self._figures_made.get(counts)
            if figures is None:
                if len(self._figures_made) >= FIGURES_CACHED:
                    self._figures_made.clear()
                figures = self._figures_made[counts] = tuple(
                    Figure(name, count, UNIT_MESSAGES) for name, count in zip(FIGURES, counts)
                )
            return figures
        return self._figures_reported(queue, key, size, values, errors)

    @staticmethod
    def _figures_reported(queue: str, key: bytes, size: int, values: list, errors: ErrorLog) -> Tuple[Figure, ...]:
        """The figures when a key is not of its type: that figure is left out, with the reason."""
        messages, delayed, dead = values
        figures = []
        for name, template, reply, kind in (
            ("unacked", MESSAGES_KEY, messages, "a hash"),
            ("delayed", DELAYED_MESSAGES_KEY, delayed, "a hash"),
            ("dead", DEAD_KEY, dead, "a sorted set"),
        ):
            if isinstance(reply, ReplyError):
                where = show_name(template.format(name=decode_name(key)))
                errors.about_queue(NAME, queue, f"{name} unknown: {where}: {describe_reply_error(reply, kind)}")
                continue
            if name == "unacked":
                reply = max(0, reply - size)
            figures.append(Figure(name, reply, UNIT_MESSAGES))
        return tuple(figures)

    def read_system(self, errors: ErrorLog) -> Optional[SystemReader]:
        return None

    def describe(self) -> List[str]:
        if self._detect:
            seen = ", ".join(repr(namespace) for namespace in sorted(self.namespaces_seen)) or "none"
            line = f"namespaces (RedisBroker namespace=) detected from __heartbeats__ and *.msgs keys: {seen}"
        else:
            line = f"namespace {self._namespace!r} (QUEUE_METRICS_DRAMATIQ_NAMESPACE)"
        return [
            line,
            "latency from the head message's message_timestamp (its creation: a delayed or retried message "
            "counts from when it was sent)",
        ]


SYSTEM = SystemSpec(NAME, DramatiqSettings.from_env, Dramatiq)  # type: ignore[arg-type]
