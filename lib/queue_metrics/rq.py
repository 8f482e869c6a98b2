"""RQ: queues are Redis lists of job ids, named (as full keys) in the `rq:queues` set.

Size is `Queue.count` (LLEN). RQ has no latency API: latency is the age of the job at LINDEX 0
(RPUSH enqueues, workers pop the left end), read from its hash's `enqueued_at`. RQ's own
`get_jobs` and registry counts clean up as they read; nothing here writes.

Per queue, the sizes of its job registries (sorted sets, read with ZCARD as
`registry.get_job_count(cleanup=False)` does; a queue that had none last tick costs one EXISTS of
all six, and only when one appears are they counted, in the follow-up round trip that the job
hash read usually needs anyway); system-wide, the workers of `Worker.all()` (members
of `rq:workers` whose hash still exists: rq drops the others from the set as it lists them, we
only skip them) and those whose `state` is `busy`.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, NamedTuple, Optional, Set, Tuple

from queue_metrics.config import name_list
from queue_metrics.errors import ErrorLog, PayloadError, ReplyError, describe_reply_error, show_name
from queue_metrics.plugin import (
    Batch,
    BatchTemplate,
    Found,
    MemberReads,
    ParsedHeads,
    QueueReader,
    SameRegistry,
    SystemReader,
    SystemSpec,
    Workers,
    batch,
    decode_name,
    encode_key,
    evidence,
    joined,
    latency_or_report,
    list_head,
    name_key,
    registry_members,
)
from queue_metrics.resp import NameKey
from queue_metrics.sample import Figure, QueueSample, SystemSample
from queue_metrics.timestamps import iso8601_seconds, latency

NAME = "rq"
QUEUES_KEY = "rq:queues"  # SET of full queue keys, e.g. rq:queue:default
QUEUE_KEY_PREFIX = "rq:queue:"  # LIST of job ids; the next job is at 0
JOB_KEY_PREFIX = "rq:job:"  # HASH per job
ENQUEUED_AT_FIELD = "enqueued_at"  # "%Y-%m-%dT%H:%M:%S.%fZ", rewritten on every enqueue
OLDEST_INDEX = 0
# Each queue's job registries (rq 2.x and 3.x key templates), in the order their figures come.
REGISTRY_KEYS = (
    ("started", "rq:wip:{name}"),  # one member per running execution
    ("failed", "rq:failed:{name}"),
    ("finished", "rq:finished:{name}"),
    ("deferred", "rq:deferred:{name}"),  # waiting for the jobs they depend on
    ("scheduled", "rq:scheduled:{name}"),
    ("canceled", "rq:canceled:{name}"),
)
FIGURES_CACHED = 4096
WORKERS_KEY = "rq:workers"  # SET of worker keys, rq:worker:<name>; each a HASH
WORKER_STATE_FIELD = "state"
BUSY_STATE = b"busy"
# ACL key pattern of every key above, for a Redis user limited by key patterns.
KEY_PATTERNS = ("rq:*",)


def job_enqueued_at(value: Optional[bytes], job_id: str) -> float:
    """Epoch seconds from an RQ job hash's `enqueued_at` field (None: hash or field missing)."""
    if value is None:
        raise PayloadError(f"job {show_name(job_id)} has no enqueued_at (its hash expired or was deleted)")
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        raise PayloadError(f"job {show_name(job_id)} has an enqueued_at that is not text") from None
    return iso8601_seconds(text, ENQUEUED_AT_FIELD)


# HGET rq:job:<id> enqueued_at, packed by hand: one per queue and tick, on the hot path.
_HGET_HEAD = b"*3\r\n$4\r\nHGET\r\n"
_HGET_TAIL = b"$%d\r\n%s\r\n" % (len(ENQUEUED_AT_FIELD), ENQUEUED_AT_FIELD.encode())


def enqueued_at_batch(job_id: bytes) -> Batch:
    key = JOB_KEY_PREFIX.encode() + job_id
    return Batch(b"%s$%d\r\n%s\r\n%s" % (_HGET_HEAD, len(key), key, _HGET_TAIL), 1)


class RQSettings(NamedTuple):
    # Queues to read besides those in `rq:queues`.
    queues: Tuple[str, ...] = ()

    @classmethod
    def from_env(cls, values: Mapping[str, str]) -> "RQSettings":
        return cls(queues=name_list(values.get("QUEUE_METRICS_RQ_QUEUES")))


class RQ:
    name = NAME
    scan_pattern = None
    key_patterns = KEY_PATTERNS
    workers = Workers("workers", "rq worker")

    def __init__(self, settings: Optional[RQSettings] = None, extras: bool = True) -> None:
        self.settings = settings or RQSettings()
        self.extras = extras
        self._registry = batch(("SMEMBERS", QUEUES_KEY))
        # A queue's keys are its name between fixed bytes: its list, then its registries.
        queue_key = NameKey(QUEUE_KEY_PREFIX.encode())
        registries = [name_key(template) for _, template in REGISTRY_KEYS]
        head = (("LLEN", queue_key), ("LINDEX", queue_key, OLDEST_INDEX))
        self._head_template = BatchTemplate(*head)
        self._counted_template = BatchTemplate(*head, *[("ZCARD", key) for key in registries])
        self._exists_template = BatchTemplate(*head, ("EXISTS", *registries))
        self._sizes_template = BatchTemplate(*[("ZCARD", key) for key in registries])
        # Queues that had jobs in a registry last tick: their registries are counted at once.
        self._with_registries: Set[str] = set()
        # Registry figures by their sizes: most queues share a few (all zero, above all).
        self._figures: Dict[Tuple[object, ...], Tuple[Figure, ...]] = {}
        self._heads = ParsedHeads()
        self._registry_found = SameRegistry()
        self._workers_batch = batch(("SMEMBERS", WORKERS_KEY))
        self._workers = MemberReads(lambda key: batch(("EXISTS", key), ("HGET", key, WORKER_STATE_FIELD)))

    def found_keys(self, keys: Iterable[str], complete: bool) -> None:
        """RQ lists its queues in a set: nothing to discover."""

    def registry_batch(self) -> Batch:
        return self._registry

    def queues(self, replies: list, errors: ErrorLog) -> Found:
        self._heads.start_tick()
        members = registry_members(NAME, QUEUES_KEY, replies[0], errors, KEY_PATTERNS)

        def make(own: ErrorLog) -> Found:
            names = set(self.settings.queues)
            ignored = 0
            for member in members:
                key = decode_name(member)
                if key.startswith(QUEUE_KEY_PREFIX):
                    names.add(key[len(QUEUE_KEY_PREFIX) :])
                else:
                    ignored += 1
            if ignored:
                own.add(f"rq registry {QUEUES_KEY}: ignoring {ignored} member(s) that are not queue keys")
            listed = f"the {QUEUES_KEY!r} set names {len(members)} queue(s)" if members else None
            return Found(sorted(names), evidence(listed, "QUEUE_METRICS_RQ_QUEUES", bool(self.settings.queues)))

        return self._registry_found.found(members, make, errors)

    def _queue_batch(self, name: bytes, counted: bool) -> Batch:
        """LLEN + LINDEX and, with the extras, the queue's registries: their ZCARDs when it had
        any last tick (`counted`), else one EXISTS of all six, nearly always 0 for an idle queue."""
        if not self.extras:
            return self._head_template.batch(name)
        return (self._counted_template if counted else self._exists_template).batch(name)

    def read_queue(self, queue: str, errors: ErrorLog) -> QueueReader:
        counted = queue in self._with_registries
        name = encode_key(queue)
        replies = yield self._queue_batch(name, counted)
        values = replies.values
        head = list_head(NAME, queue, values[:2], errors, (QUEUE_KEY_PREFIX + "*",))
        if head.size is None:
            return None
        figures: Tuple[Figure, ...] = ()
        count_now = False  # a registry appeared since the last tick: ZCARDs in the follow-up
        if counted:
            figures = self._registry_figures(queue, values[2:], errors)
        elif self.extras:
            exists = values[2]
            if isinstance(exists, ReplyError):
                errors.about_queue(NAME, queue, f"registries: {describe_reply_error(exists, 'a sorted set')}")
            elif exists:
                count_now = True
            else:
                figures = NO_REGISTRIES
        job_id = None if not head.readable or head.oldest is None else head.oldest
        if count_now:
            follow_up = [self._sizes_template.batch(name)]
            if job_id is not None:
                follow_up.insert(0, enqueued_at_batch(job_id))
            replies = yield joined(follow_up)
            figures = self._registry_figures(queue, replies.values[-len(REGISTRY_KEYS) :], errors)
        if not head.readable:
            return QueueSample(NAME, queue, head.size, None, figures)
        if job_id is None:
            return QueueSample(NAME, queue, head.size, 0.0, figures)
        if not count_now:
            replies = yield enqueued_at_batch(job_id)
        enqueued_at = replies.values[0]
        if isinstance(enqueued_at, ReplyError):
            errors.about_queue(
                NAME,
                queue,
                f"latency unknown: job {show_name(decode_name(job_id))}: {describe_reply_error(enqueued_at, 'a hash')}",
            )
            return QueueSample(NAME, queue, head.size, None, figures)
        seconds = latency_or_report(
            NAME, queue, errors, lambda: latency(self._enqueued_at(enqueued_at, job_id), replies.now)
        )
        return QueueSample(NAME, queue, head.size, seconds, figures)

    def _enqueued_at(self, value: Optional[bytes], job_id: bytes) -> float:
        # The job id is decoded only when the value is parsed: once per new head job.
        if value is None:
            return job_enqueued_at(value, decode_name(job_id))  # raises: the error names the job
        return self._heads.parsed(value, lambda text: job_enqueued_at(text, decode_name(job_id)))

    def _registry_figures(self, queue: str, sizes: list, errors: ErrorLog) -> Tuple[Figure, ...]:
        """The registries' figures from their ZCARDs; remembers whether the queue has any."""
        figures = self._figures.get(tuple(sizes))
        if figures is None:
            figures = registry_figures(queue, sizes, errors)
            if len(figures) == len(REGISTRY_KEYS):  # no error: the same sizes give the same figures
                if len(self._figures) >= FIGURES_CACHED:
                    self._figures.clear()
                self._figures[tuple(sizes)] = figures
        if any(figure.value for figure in figures):
            self._with_registries.add(queue)
        else:
            self._with_registries.discard(queue)
        return figures

    def read_system(self, errors: ErrorLog) -> Optional[SystemReader]:
        return self._read_system(errors) if self.extras else None

    def _read_system(self, errors: ErrorLog) -> SystemReader:
        first = self._workers_batch
        replies = yield joined((first, self._workers.known_batch))
        members = registry_members(NAME, WORKERS_KEY, replies.values[0], errors)
        workers = yield from self._workers.read(members, replies.values[first.replies :])
        alive = busy = 0
        for key, (exists, state) in workers:
            failed = exists if isinstance(exists, ReplyError) else state
            if isinstance(failed, ReplyError):
                errors.about_reply(NAME, f"worker {show_name(decode_name(key))}", failed, "a hash")
                continue
            if exists:
                alive += 1
                busy += state == BUSY_STATE
        return SystemSample(NAME, (Figure("workers", alive, "{worker}"), Figure("busy", busy, "{worker}")))

    def describe(self) -> List[str]:
        return []


def registry_figures(queue: str, sizes: list, errors: ErrorLog) -> Tuple[Figure, ...]:
    """The sizes of a queue's registries (the ZCARD replies, in REGISTRY_KEYS order)."""
    figures = []
    for (name, template), size in zip(REGISTRY_KEYS, sizes):
        if isinstance(size, ReplyError):
            errors.about_queue(
                NAME,
                queue,
                f"{name} registry {show_name(template.format(name=queue))}: "
                f"{describe_reply_error(size, 'a sorted set')}",
            )
        else:
            figures.append(Figure(name, size))
    return tuple(figures)


NO_REGISTRIES = tuple(Figure(name, 0) for name, _ in REGISTRY_KEYS)

SYSTEM = SystemSpec(NAME, RQSettings.from_env, RQ)  # type: ignore[arg-type]
