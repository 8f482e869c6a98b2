"""RQ: queues are Redis lists of job ids, named (as full keys) in the `rq:queues` set.

Size is `Queue.count` (LLEN). RQ has no latency API: latency is how long the oldest waiting job
has waited, from its hash's `enqueued_at`. Workers pop the list's left end; `enqueue` RPUSHes,
`enqueue(..., at_front=True)` LPUSHes. So the list reads, left to right: the at_front jobs still
waiting, newest first, then the others, oldest first (a removal anywhere, LREM or a pop, keeps the
order of the rest). Each tick reads both ends (LINDEX 0 and -1, with LLEN) and, in the follow-up
round trip, both jobs' `enqueued_at` (one HGET when both ends are the same job), and reports the
older. That is the oldest job whenever the list holds one kind of job only: the head when no
at_front job waits, the tail when only at_front jobs do. When both kinds wait at once, the oldest
waits where they meet, inside the list (the oldest at_front job or the oldest other job, next to
each other), and the figure is the older of the newest at_front job and the newest other job:
never less than the wait of the job next in line, never more than the oldest's. Finding the
meeting point would take one more round trip per at_front job waiting; at_front jobs are next in
line, so the first free worker ends that state.

The keys start with rq's key prefix: `rq`, or what the app sets with rq 3's `RQ_KEY_PREFIX`
environment variable (read here too), or QUEUE_METRICS_RQ_KEY_PREFIX. RQ's own `get_jobs` and
registry counts clean up as they read; nothing here writes.

Per queue, the sizes of its job registries (sorted sets, read with ZCARD as
`registry.get_job_count(cleanup=False)` does; a queue that had none last tick costs one EXISTS of
all six, and only when one appears are they counted, in the follow-up round trip that the job
hash reads usually need anyway); system-wide, the workers of `Worker.all()` (members
of `rq:workers` whose hash still exists: rq drops the others from the set as it lists them, we
only skip them) and those whose `state` is `busy`.
"""

from __future__ import annotations

import re
from typing import Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple

from queue_metrics.datastores.redis.resp import NameKey
from queue_metrics.errors import (
    ConfigError,
    ErrorLog,
    PayloadError,
    ReplyError,
    describe_reply_error,
    describe_unreadable_members,
    rq_key_prefix_ignored,
    rq_key_prefix_unusable,
    show_name,
)
from queue_metrics.sample import Figure, QueueSample, SystemSample
from queue_metrics.setting_values import name_list
from queue_metrics.systems.contract import (
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
    glob_escape,
    joined,
    list_head,
    name_key,
    registry_members,
)
from queue_metrics.systems.timestamps import iso8601_seconds, latency

NAME = "rq"
# Every key below starts with the key prefix and a colon: `rq`, or rq 3's RQ_KEY_PREFIX.
DEFAULT_KEY_PREFIX = "rq"
# What rq 3 itself accepts as RQ_KEY_PREFIX (rq/defaults.py).
KEY_PREFIX_CHARS = re.compile(r"[A-Za-z0-9_.:{}-]+")
QUEUES_KEY = "{prefix}:queues"  # SET of full queue keys, e.g. rq:queue:default
QUEUE_KEY_PREFIX = "{prefix}:queue:"  # LIST of job ids; the next job is at 0
JOB_KEY_PREFIX = "{prefix}:job:"  # HASH per job
ENQUEUED_AT_FIELD = "enqueued_at"  # "%Y-%m-%dT%H:%M:%S.%fZ", rewritten on every enqueue
# The list's two ends: the job next in line, and the newest job (see the module's docstring).
HEAD_INDEX = 0
TAIL_INDEX = -1
# Each queue's job registries (rq 1.15 to 3.x key templates), in the order their figures come.
REGISTRY_KEYS = (
    ("started", "{prefix}:wip:{name}"),  # one member per running execution
    ("failed", "{prefix}:failed:{name}"),
    ("finished", "{prefix}:finished:{name}"),
    ("deferred", "{prefix}:deferred:{name}"),  # waiting for the jobs they depend on
    ("scheduled", "{prefix}:scheduled:{name}"),
    ("canceled", "{prefix}:canceled:{name}"),
)
FIGURES_CACHED = 4096
WORKERS_KEY = "{prefix}:workers"  # SET of worker keys, rq:worker:<name>; each a HASH
WORKER_STATE_FIELD = "state"
BUSY_STATE = b"busy"
# ACL key pattern of every key above, for a Redis user limited by key patterns.
KEY_PATTERNS = ("{prefix}:*",)


def job_enqueued_at(value: Optional[bytes], job_id: str) -> float:
    """Epoch seconds from an RQ job hash's `enqueued_at` field (None: hash or field missing)."""
    if value is None:
        raise PayloadError(f"job {show_name(job_id)} has no enqueued_at (its hash expired or was deleted)")
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        raise PayloadError(f"job {show_name(job_id)} has an enqueued_at that is not text") from None
    return iso8601_seconds(text, ENQUEUED_AT_FIELD)


# HGET rq:job:<id> enqueued_at, packed by hand: one or two per queue and tick, on the hot path.
_HGET_HEAD = b"*3\r\n$4\r\nHGET\r\n"
_HGET_TAIL = b"$%d\r\n%s\r\n" % (len(ENQUEUED_AT_FIELD), ENQUEUED_AT_FIELD.encode())


def enqueued_at_batch(job_ids: Sequence[bytes], job_key_prefix: bytes = b"rq:job:") -> Batch:
    """HGET <prefix>:job:<id> enqueued_at of each job, in one batch."""
    packed = b"".join(
        b"%s$%d\r\n%s%s\r\n%s" % (_HGET_HEAD, len(job_key_prefix) + len(job_id), job_key_prefix, job_id, _HGET_TAIL)
        for job_id in job_ids
    )
    return Batch(packed, len(job_ids))


def _enqueued_at_of_some_job(value: bytes) -> float:
    # One parser for every job, so none is made per job: the job's name is only needed by an
    # error message, and a value that fails is parsed again with it (`RQ._enqueued_at`).
    return job_enqueued_at(value, "")


def key_prefix(values: Mapping[str, str]) -> Tuple[str, Optional[str], Optional[str]]:
    """rq's key prefix, the variable it came from (None: rq's default), and why RQ_KEY_PREFIX
    was left unused (None: it was not). QUEUE_METRICS_RQ_KEY_PREFIX wins, checked as a setting of
    ours; else RQ_KEY_PREFIX, which rq 3 itself reads from the environment of the app's
    processes, so the collector, sharing the app's config vars, reads what the app writes. That
    one is the app's: a value rq 3 would refuse (taken as it is, spaces too) stops nothing here."""
    own = values.get("QUEUE_METRICS_RQ_KEY_PREFIX", "").strip()
    if own:
        if not KEY_PREFIX_CHARS.fullmatch(own):
            raise ConfigError(rq_key_prefix_unusable("QUEUE_METRICS_RQ_KEY_PREFIX", own))
        return own, "QUEUE_METRICS_RQ_KEY_PREFIX", None
    apps = values.get("RQ_KEY_PREFIX", "")
    if not apps:
        return DEFAULT_KEY_PREFIX, None, None
    if not KEY_PREFIX_CHARS.fullmatch(apps):
        return DEFAULT_KEY_PREFIX, None, rq_key_prefix_ignored(apps, DEFAULT_KEY_PREFIX)
    return apps, "RQ_KEY_PREFIX", None


class RQSettings(NamedTuple):
    # Queues to read besides those in `rq:queues`.
    queues: Tuple[str, ...] = ()
    # What every key starts with, before a colon (rq 3's RQ_KEY_PREFIX), and where it was set.
    key_prefix: str = DEFAULT_KEY_PREFIX
    key_prefix_var: Optional[str] = None
    # Why the app's RQ_KEY_PREFIX is not used (rq 3 would refuse it); said at every tick.
    key_prefix_problem: Optional[str] = None

    @classmethod
    def from_env(cls, values: Mapping[str, str]) -> "RQSettings":
        prefix, variable, problem = key_prefix(values)
        return cls(
            queues=name_list(values.get("QUEUE_METRICS_RQ_QUEUES")),
            key_prefix=prefix,
            key_prefix_var=variable,
            key_prefix_problem=problem,
        )


class RQ:
    name = NAME
    scan_pattern = None
    workers = Workers("workers", "rq worker")

    def __init__(self, settings: Optional[RQSettings] = None, extras: bool = True) -> None:
        self.settings = settings or RQSettings()
        self.extras = extras
        prefix = self.settings.key_prefix
        self._queues_key = QUEUES_KEY.format(prefix=prefix)
        self.key_patterns = tuple(pattern.format(prefix=glob_escape(prefix)) for pattern in KEY_PATTERNS)
        self._queue_key_prefix = QUEUE_KEY_PREFIX.format(prefix=prefix)
        self._queue_key_pattern = (glob_escape(self._queue_key_prefix) + "*",)
        self._job_key_prefix = encode_key(JOB_KEY_PREFIX.format(prefix=prefix))
        self._workers_key = WORKERS_KEY.format(prefix=prefix)
        self._registry_templates = [template.replace("{prefix}", prefix) for _, template in REGISTRY_KEYS]
        self._registry = batch(("SMEMBERS", self._queues_key))
        # A queue's keys are its name between fixed bytes: its list, then its registries.
        queue_key = NameKey(encode_key(self._queue_key_prefix))
        registries = [name_key(template) for template in self._registry_templates]
        head = (("LLEN", queue_key), ("LINDEX", queue_key, HEAD_INDEX), ("LINDEX", queue_key, TAIL_INDEX))
        self._head_replies = len(head)
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
        self._workers_batch = batch(("SMEMBERS", self._workers_key))
        self._workers = MemberReads(lambda key: batch(("EXISTS", key), ("HGET", key, WORKER_STATE_FIELD)))

    def found_keys(self, keys: Iterable[str], complete: bool) -> None:
        """RQ lists its queues in a set: nothing to discover."""

    def without_walk(self) -> Optional[str]:
        """It needs no keyspace walk: a server without SCAN costs it nothing."""
        return None

    def registry_batch(self) -> Batch:
        return self._registry

    def queues(self, replies: list, errors: ErrorLog) -> Found:
        self._heads.start_tick()
        queues_key, queue_key_prefix = self._queues_key, self._queue_key_prefix
        members = registry_members(NAME, queues_key, replies[0], errors, self.key_patterns)
        if self.settings.key_prefix_problem:
            errors.add(f"{NAME}: {self.settings.key_prefix_problem}")

        def make(own: ErrorLog) -> Found:
            names = set(self.settings.queues)
            ignored = 0
            for member in members:
                key = decode_name(member)
                if key.startswith(queue_key_prefix):
                    names.add(key[len(queue_key_prefix) :])
                else:
                    ignored += 1
            if ignored:
                own.add(f"rq registry {queues_key}: ignoring {ignored} member(s) that are not queue keys")
            listed = f"the {queues_key!r} set names {len(members)} queue(s)" if members else None
            return Found(sorted(names), evidence(listed, "QUEUE_METRICS_RQ_QUEUES", bool(self.settings.queues)))

        return self._registry_found.found(members, make, errors)

    def _queue_batch(self, name: bytes, counted: bool) -> Batch:
        """LLEN + both ends' LINDEX and, with the extras, the queue's registries: their ZCARDs
        when it had any last tick (`counted`), else one EXISTS of all six, nearly always 0 for an
        idle queue."""
        if not self.extras:
            return self._head_template.batch(name)
        return (self._counted_template if counted else self._exists_template).batch(name)

    def read_queue(self, queue: str, errors: ErrorLog) -> QueueReader:
        counted = queue in self._with_registries
        name = encode_key(queue)
        replies = yield self._queue_batch(name, counted)
        values = replies.values
        head = list_head(NAME, queue, values[:2], errors, self._queue_key_pattern)
        if head.size is None:
            return None
        tail = values[2]
        readable = head.readable
        if readable and isinstance(tail, ReplyError):
            errors.about_queue(NAME, queue, f"latency unknown: {describe_reply_error(tail)}")
            readable = False
        extra = values[self._head_replies :]
        figures: Tuple[Figure, ...] = ()
        count_now = False  # a registry appeared since the last tick: ZCARDs in the follow-up
        if counted:
            figures = self._registry_figures(queue, extra, errors)
        elif self.extras:
            exists = extra[0]
            if isinstance(exists, ReplyError):
                errors.about_queue(NAME, queue, f"registries: {describe_reply_error(exists, 'a sorted set')}")
            elif exists:
                count_now = True
            else:
                figures = NO_REGISTRIES
        # The jobs at both ends; one when they are the same (a single job), or when the list
        # emptied between the two reads.
        job_ids: Tuple[bytes, ...] = ()
        if readable and head.oldest is not None:
            both_ends = tail is not None and tail != head.oldest
            job_ids = (head.oldest, tail) if both_ends else (head.oldest,)  # type: ignore[assignment]
        if count_now:
            replies = yield joined((enqueued_at_batch(job_ids, self._job_key_prefix), self._sizes_template.batch(name)))
            figures = self._registry_figures(queue, replies.values[-len(REGISTRY_KEYS) :], errors)
        elif job_ids:
            replies = yield enqueued_at_batch(job_ids, self._job_key_prefix)
        if not readable:
            return QueueSample(NAME, queue, head.size, None, figures)
        if not job_ids:
            return QueueSample(NAME, queue, head.size, 0.0, figures)
        oldest = self._oldest_enqueued_at(queue, job_ids, replies.values, errors)
        seconds = None if oldest is None else latency(oldest, replies.now)
        return QueueSample(NAME, queue, head.size, seconds, figures)

    def _oldest_enqueued_at(
        self, queue: str, job_ids: Tuple[bytes, ...], values: list, errors: ErrorLog
    ) -> Optional[float]:
        """The earliest `enqueued_at` of the jobs (epoch seconds), from the replies to their HGETs;
        None, with the reason reported, when one of them cannot be read."""
        oldest = None
        for job_id, value in zip(job_ids, values):
            if isinstance(value, ReplyError):
                reason = f"job {show_name(decode_name(job_id))}: {describe_reply_error(value, 'a hash')}"
                errors.about_queue(NAME, queue, f"latency unknown: {reason}")
                return None
            try:
                seconds = self._enqueued_at(value, job_id)
            except PayloadError as error:
                errors.about_queue(NAME, queue, f"latency unknown: {error}")
                return None
            if oldest is None or seconds < oldest:
                oldest = seconds
        return oldest

    def _enqueued_at(self, value: Optional[bytes], job_id: bytes) -> float:
        if value is not None:
            try:
                return self._heads.parsed(value, _enqueued_at_of_some_job)
            except PayloadError:
                pass  # parsed again below, for a message that names the job
        return job_enqueued_at(value, decode_name(job_id))  # raises: the error names the job

    def _registry_figures(self, queue: str, sizes: list, errors: ErrorLog) -> Tuple[Figure, ...]:
        """The registries' figures from their ZCARDs; remembers whether the queue has any."""
        figures = self._figures.get(tuple(sizes))
        if figures is None:
            figures = registry_figures(queue, sizes, errors, self.settings.key_prefix)
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
        listed = replies.values[0]
        members = registry_members(NAME, self._workers_key, listed, errors)
        workers = yield from self._workers.read(members, replies.values[first.replies :])
        if isinstance(listed, ReplyError):
            return None  # no worker is known: none is not 0
        unreadable = [
            (key, exists if isinstance(exists, ReplyError) else state)
            for key, (exists, state) in workers
            if isinstance(exists, ReplyError) or isinstance(state, ReplyError)
        ]
        if unreadable:
            # A count without them would be short, and doctor would take 0 workers for none running.
            key, failed = unreadable[0]
            errors.add(
                describe_unreadable_members(
                    NAME,
                    "worker hashes",
                    len(unreadable),
                    show_name(decode_name(key)),
                    failed,  # type: ignore[arg-type]
                    self.key_patterns,
                    "workers and busy workers",
                )
            )
            return None
        alive = busy = 0
        for _, (exists, state) in workers:
            if exists:
                alive += 1
                busy += state == BUSY_STATE
        return SystemSample(NAME, (Figure("workers", alive, "{worker}"), Figure("busy", busy, "{worker}")))

    def describe(self) -> List[str]:
        if self.settings.key_prefix_problem:
            return [self.settings.key_prefix_problem]
        where = self.settings.key_prefix_var
        if where is None:
            return []
        return [f"keys read with the key prefix {self.settings.key_prefix!r} ({where})"]


def registry_figures(queue: str, sizes: list, errors: ErrorLog, prefix: str = DEFAULT_KEY_PREFIX) -> Tuple[Figure, ...]:
    """The sizes of a queue's registries (the ZCARD replies, in REGISTRY_KEYS order)."""
    figures = []
    for (name, template), size in zip(REGISTRY_KEYS, sizes):
        if isinstance(size, ReplyError):
            errors.about_queue(
                NAME,
                queue,
                f"{name} registry {show_name(template.format(prefix=prefix, name=queue))}: "
                f"{describe_reply_error(size, 'a sorted set')}",
            )
        else:
            figures.append(Figure(name, size))
    return tuple(figures)


NO_REGISTRIES = tuple(Figure(name, 0) for name, _ in REGISTRY_KEYS)

SYSTEM = SystemSpec(NAME, RQSettings.from_env, RQ)  # type: ignore[arg-type]
