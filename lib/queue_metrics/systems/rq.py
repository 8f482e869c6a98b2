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

Per queue, for the incidents size and latency miss: `running` and `running_age`, the executions
of its started registry whose heartbeat deadline (the score) has not passed, and how long the
longest-running has run, from its job hash's `started_at`; `due` and `due_age`, the jobs of its
scheduled registry whose time (the score) has passed, which only a worker started with
`--with-scheduler` moves into the queue; `consumers`, the live workers whose `queues` name it.
The registries are read with their ZCARDs (the earliest scheduled job's score, the first
RUNNING_READ_LIMIT started executions), the `started_at`s and the due count ride with the job
hashes' round trip. A queue seen for the first time has its registries counted at once.
"""

from __future__ import annotations

import re
from bisect import bisect_left
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
    SystemFindings,
    SystemReader,
    SystemSpec,
    Workers,
    activity_figures,
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
# The started registry's members: `<job id>:<execution id>` (rq 2+) or `<job id>`, scored by the
# heartbeat deadline (epoch seconds; inf without a timeout): one past it was abandoned. At most
# this many are read a tick (more: running per queue is unknown, and a line says so).
RUNNING_READ_LIMIT = 100
STARTED_AT_FIELD = "started_at"  # in the job hash, as enqueued_at; set when a worker starts it
# The scheduled registry: job ids scored by when each is due (epoch seconds).
STARTED_INDEX, SCHEDULED_INDEX = 0, 4  # in REGISTRY_KEYS
WORKERS_KEY = "{prefix}:workers"  # SET of worker keys, rq:worker:<name>; each a HASH
WORKER_STATE_FIELD = "state"
WORKER_QUEUES_FIELD = "queues"  # the names of the queues it takes, comma-separated
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


def job_fields_batch(job_ids: Sequence[bytes], job_key_prefix: bytes, field: str) -> Batch:
    """HGET <prefix>:job:<id> <field> of each job, in one batch."""
    return batch(*[("HGET", job_key_prefix + job_id, field) for job_id in job_ids])


def execution_job_id(member: bytes) -> bytes:
    """The job id of a started registry's member: `<job id>:<execution id>` since rq 2."""
    job_id, colon, _ = member.rpartition(b":")
    return job_id if colon else member


def running_executions(entries: list, now: float) -> List[bytes]:
    """The job ids of a started registry's members (ZRANGE WITHSCORES) not yet past their
    heartbeat deadline."""
    return [execution_job_id(member) for member, score in zip(entries[::2], entries[1::2]) if float(score) > now]


def first_due(entries: list, now: float) -> Optional[float]:
    """When the earliest job of a scheduled registry (ZRANGE 0 0 WITHSCORES) fell due; None when
    it is not due yet, or there is none."""
    if not entries:
        return None
    at = float(entries[1])
    return at if at <= now else None


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
        # The registries' sizes, the first started executions, the earliest scheduled job.
        counts = (
            *[("ZCARD", key) for key in registries],
            ("ZRANGE", registries[STARTED_INDEX], 0, RUNNING_READ_LIMIT - 1, "WITHSCORES"),
            ("ZRANGE", registries[SCHEDULED_INDEX], 0, 0, "WITHSCORES"),
        )
        self._counted_template = BatchTemplate(*head, *counts)
        self._exists_template = BatchTemplate(*head, ("EXISTS", *registries))
        self._sizes_template = BatchTemplate(*counts)
        self._scheduled_key = registries[SCHEDULED_INDEX]
        # The queues the registry listed at the last two ticks (sorted), and whether this tick's
        # were taken yet: a queue not listed at the last tick has its registries counted at once.
        self._listed_last: Sequence[str] = ()
        self._listed_before: Sequence[str] = ()
        self._listed_this_tick = True
        self._findings = SystemFindings()
        self._with_consumers: Dict[int, Tuple[Figure, ...]] = {}
        # Queues that had jobs in a registry last tick: their registries are counted at once.
        self._with_registries: Set[str] = set()
        # Registry figures by their sizes: most queues share a few (all zero, above all).
        self._figures: Dict[Tuple[object, ...], Tuple[Figure, ...]] = {}
        self._heads = ParsedHeads()
        self._registry_found = SameRegistry()
        self._workers_batch = batch(("SMEMBERS", self._workers_key))
        self._workers = MemberReads(
            lambda key: batch(("EXISTS", key), ("HGET", key, WORKER_STATE_FIELD), ("HGET", key, WORKER_QUEUES_FIELD))
        )

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

        found = self._registry_found.found(members, make, errors)
        self._findings.new_tick()
        self._listed_before, self._listed_last = self._listed_last, found.queues
        self._listed_this_tick = True
        return found

    def _listed_at_last_tick(self, queue: str) -> bool:
        listed = self._listed_before if self._listed_this_tick else self._listed_last
        index = bisect_left(listed, queue)
        return index < len(listed) and listed[index] == queue

    def _queue_batch(self, name: bytes, counted: bool) -> Batch:
        """LLEN + both ends' LINDEX and, with the extras, the queue's registries: their ZCARDs
        when it had any last tick (`counted`), else one EXISTS of all six, nearly always 0 for an
        idle queue."""
        if not self.extras:
            return self._head_template.batch(name)
        return (self._counted_template if counted else self._exists_template).batch(name)

    def read_queue(self, queue: str, errors: ErrorLog) -> QueueReader:
        counted = self.extras and (queue in self._with_registries or not self._listed_at_last_tick(queue))
        name = encode_key(queue)
        replies = yield self._queue_batch(name, counted)
        values, now = replies.values, replies.now
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
        activity: Optional[_Activity] = None
        count_now = False  # a registry appeared since the last tick: ZCARDs in the follow-up
        if counted:
            figures = self._registry_figures(queue, extra[: len(REGISTRY_KEYS)], errors)
            activity = _Activity(self, queue, figures, extra[len(REGISTRY_KEYS) :], now, errors)
        elif self.extras:
            exists = extra[0]
            if isinstance(exists, ReplyError):
                errors.about_queue(NAME, queue, f"registries: {describe_reply_error(exists, 'a sorted set')}")
            elif exists:
                count_now = True
            else:
                figures = NO_REGISTRIES
                activity = IDLE
        # The jobs at both ends; one when they are the same (a single job), or when the list
        # emptied between the two reads.
        job_ids: Tuple[bytes, ...] = ()
        if readable and head.oldest is not None:
            both_ends = tail is not None and tail != head.oldest
            job_ids = (head.oldest, tail) if both_ends else (head.oldest,)  # type: ignore[assignment]
        follow_up = [enqueued_at_batch(job_ids, self._job_key_prefix)] if job_ids else []
        if count_now:
            follow_up.append(self._sizes_template.batch(name))
            follow_up.append(
                batch(("ZCOUNT", self._scheduled_key.before + name + self._scheduled_key.after, "-inf", repr(now)))
            )
        elif activity is not None and activity is not IDLE:
            follow_up.extend(activity.follow_up())
        if follow_up:
            replies = yield follow_up[0] if len(follow_up) == 1 else joined(follow_up)
            rest = replies.values[len(job_ids) :]
            if count_now:
                sizes = rest[: len(REGISTRY_KEYS)]
                figures = self._registry_figures(queue, sizes, errors)
                reads = rest[len(REGISTRY_KEYS) : len(REGISTRY_KEYS) + 2]
                activity = _Activity(self, queue, figures, reads, now, errors, due_count=rest[-1])
                started = activity.follow_up(due=False)
                if started:
                    activity.take((yield joined(started)).values)
            elif activity is not None and activity is not IDLE:
                activity.take(rest)
        seconds: Optional[float] = None
        if readable and not job_ids:
            seconds = 0.0
        elif readable:
            oldest = self._oldest_enqueued_at(queue, job_ids, replies.values, errors)
            seconds = None if oldest is None else latency(oldest, now)
        if not self.extras:
            return QueueSample(NAME, queue, head.size, seconds, figures)
        if self._findings.pending:
            yield from self._findings.wait()
        return QueueSample(NAME, queue, head.size, seconds, self._with_activity(queue, figures, activity))

    def _with_activity(
        self, queue: str, figures: Tuple[Figure, ...], activity: Optional["_Activity"]
    ) -> Tuple[Figure, ...]:
        """The registries' figures, then `running`, `running_age`, `due`, `due_age`, `consumers`."""
        consumers: Optional[Dict[str, int]] = self._findings.value  # type: ignore[assignment]
        count = None if consumers is None else consumers.get(queue, 0)
        if activity is IDLE and count is not None:
            # Most queues: nothing in any registry (NO_REGISTRIES); their figures differ by
            # consumers only.
            made = self._with_consumers.get(count)
            if made is None:
                if len(self._with_consumers) >= FIGURES_CACHED:
                    self._with_consumers.clear()
                made = self._with_consumers[count] = (
                    NO_REGISTRIES + IDLE_FIGURES + activity_figures(0.0, consumers=count)
                )
            return made
        own = activity.figures() if activity is not None else ()
        return figures + own + activity_figures(0.0, consumers=count)

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
        self._listed_this_tick = False
        self._findings.start()
        try:
            return (yield from self._read_workers(errors))
        finally:
            self._findings.finish()

    def _read_workers(self, errors: ErrorLog) -> SystemReader:
        first = self._workers_batch
        replies = yield joined((first, self._workers.known_batch))
        listed = replies.values[0]
        members = registry_members(NAME, self._workers_key, listed, errors)
        workers = yield from self._workers.read(members, replies.values[first.replies :])
        if isinstance(listed, ReplyError):
            return None  # no worker is known: none is not 0
        unreadable = [
            (key, next(reply for reply in replies if isinstance(reply, ReplyError)))
            for key, replies in workers
            if any(isinstance(reply, ReplyError) for reply in replies)
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
        consumers: Optional[Dict[str, int]] = {}
        for key, (exists, state, queues) in workers:
            if exists:
                alive += 1
                busy += state == BUSY_STATE
                if queues is None:
                    if consumers is not None:
                        errors.add(
                            f"{NAME} worker {show_name(decode_name(key))} has no queues: consumers per queue unknown"
                        )
                    consumers = None
                elif consumers is not None:
                    for queue in dict.fromkeys(decode_name(queues).split(",")):  # type: ignore[arg-type]
                        consumers[queue] = consumers.get(queue, 0) + 1
        self._findings.value = consumers
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
IDLE_FIGURES = activity_figures(0.0, running=0, due=0)


class _Activity:
    """A queue's running and due jobs during one read: from its registries' replies, then (in the
    follow-up) the running jobs' `started_at` and the count of the due jobs."""

    __slots__ = ("_rq", "_queue", "_errors", "_now", "running", "_job_ids", "_since", "due", "_due_since")

    def __init__(
        self,
        rq: Optional["RQ"],
        queue: str,
        registry_figures: Tuple[Figure, ...],
        reads: Sequence[object],
        now: float,
        errors: ErrorLog,
        due_count: object = None,
    ) -> None:
        self._rq, self._queue, self._errors, self._now = rq, queue, errors, now
        self.running: Optional[int] = None
        self._job_ids: List[bytes] = []
        self._since: Optional[float] = None
        self.due: Optional[int] = None
        self._due_since: Optional[float] = None
        if rq is None:  # IDLE: nothing in any registry
            self.running, self.due = 0, 0
            return
        started, scheduled = reads
        sizes = {figure.name: figure.value for figure in registry_figures}
        if isinstance(started, ReplyError) or "started" not in sizes:
            pass  # said with the registry's size
        elif sizes["started"] > RUNNING_READ_LIMIT:
            errors.about_queue(
                NAME, queue, f"running unknown: more than {RUNNING_READ_LIMIT} executions in the started registry"
            )
        else:
            self._job_ids = running_executions(started, now)  # type: ignore[arg-type]
            self.running = len(self._job_ids)
        if not isinstance(scheduled, ReplyError) and "scheduled" in sizes:
            self._due_since = first_due(scheduled, now)  # type: ignore[arg-type]
            if self._due_since is None:
                self.due = 0
            elif due_count is not None:
                self._take_due(due_count)

    def follow_up(self, due: bool = True) -> List[Batch]:
        """The reads it needs next: the due count (when one is due), the running jobs' starts."""
        batches = []
        if due and self._due_since is not None and self.due is None:
            key = self._rq._scheduled_key  # type: ignore[union-attr]
            bound = repr(self._now)
            batches.append(batch(("ZCOUNT", key.before + encode_key(self._queue) + key.after, "-inf", bound)))
        if self._job_ids:
            batches.append(job_fields_batch(self._job_ids, self._rq._job_key_prefix, STARTED_AT_FIELD))  # type: ignore[union-attr]
        return batches

    def take(self, values: Sequence[object]) -> None:
        """The replies to `follow_up`'s batches."""
        if self._due_since is not None and self.due is None:
            self._take_due(values[0])
            values = values[1:]
        if not self._job_ids:
            return
        earliest = None
        for job_id, value in zip(self._job_ids, values):
            try:
                if isinstance(value, ReplyError):
                    raise PayloadError(describe_reply_error(value, "a hash"))
                if value is None:
                    raise PayloadError("has no started_at (its hash expired or was deleted)")
                if not value:
                    # rq adds the execution to the started registry a few ms before it writes the
                    # job's `started_at` (an empty string until then): the job is starting now.
                    earliest = self._now if earliest is None else min(earliest, self._now)
                    continue
                started = iso8601_seconds(bytes(value).decode("ascii", "replace"), STARTED_AT_FIELD)  # type: ignore[call-overload]
            except PayloadError as error:
                reason = f"job {show_name(decode_name(job_id))}: {error}"
                self._errors.about_queue(NAME, self._queue, f"running_age unknown: {reason}")
                return
            earliest = started if earliest is None else min(earliest, started)
        self._since = earliest

    def _take_due(self, reply: object) -> None:
        if isinstance(reply, ReplyError):
            self._errors.about_queue(NAME, self._queue, f"due unknown: {describe_reply_error(reply, 'a sorted set')}")
            self._due_since = None
        else:
            self.due = reply  # type: ignore[assignment]

    def figures(self) -> Tuple[Figure, ...]:
        return activity_figures(self._now, self.running, self._since, self.due, self._due_since)


IDLE = _Activity(None, "", (), (), 0.0, ErrorLog())

SYSTEM = SystemSpec(NAME, RQSettings.from_env, RQ)  # type: ignore[arg-type]
