"""Resque (Ruby; node-resque writes the same keys): queues are lists named in the `queues` set.

Every key sits under a namespace, `resque` by default (Ruby Resque goes through redis-namespace,
default `:resque`; node-resque's `namespace` option, default "resque"): `resque:queues` is a SET
of queue names (`Resque.push` does SADD + RPUSH), `resque:queue:<q>` the LIST of JSON payloads.
Producers RPUSH and workers LPOP, so the oldest job is at index 0. Size is LLEN, as
`Resque.size(queue)` and node-resque's `queue.length(q)` report it.

Latency: Resque's own payload, `{"class":...,"args":[...]}`, carries no enqueue time. Two common
ones ride in it: a `timestamp` (epoch seconds, float) that judoscale-resque adds to every job, and
ActiveJob's `enqueued_at` (ISO 8601 UTC, 9 fraction digits since Rails 7.1, none before) in
`args[0]` of its JobWrapper (with `scheduled_at`, Rails 7.1+, the later of the two: a job
scheduled with a wait, or retried, is serialized when scheduled and pushed to its queue by
resque-scheduler when due). The oldest job's stamp gives the latency exactly; a queue whose
oldest job carries neither has its latency observed from the list's history, with the code
Celery's unstamped lists use (observed.py: Resque's newest job is at the tail, where Celery's is
at the head). A queue whose head was stamped at the last tick is read without its tail (the
newest payload, needed only to observe): should its head lose the stamp, the tail is read in a
follow-up round trip.

Plain payloads carry no id: two jobs of the same class and arguments are the same bytes. When
the search for the last newest job finds two copies, which one it was is unknown, and the list's
figure falls back to a lower bound. One limit remains: a list whose only job is replaced by an
identical one between two ticks (taken, then enqueued again) looks unchanged, and its figure
counts from the first of them. ActiveJob jobs (a job_id each, and a stamp) are never affected.

Another namespace (`Resque.redis.namespace = "resque:shop"`) is set with
QUEUE_METRICS_RESQUE_NAMESPACE, not detected: finding one would take a keyspace walk of its
own (`*:queues`, each SCAN pattern walks the keyspace separately) for every app whatever it runs,
and make `once` and `doctor` wait for it, for a setting few apps change.

System-wide: `failed`, the failure list's LLEN (`Resque::Failure.count` with the default Redis
failure backend; node-resque's `queue.failedCount()`); `workers`, the members of the `workers`
set (`Resque.workers`, node-resque's `queue.workers()`), and `working`, those whose
`worker:<id>` key holds what they work on (`Resque.working`: a non-empty value; node-resque's
`queue.allWorkingOn()` entries other than "started"), read as GET (empty when missing).

Per queue, with extras (issue 27):
- `consumers`: the workers that take the queue, from the `workers` set alone: a worker's id is
  `<host>:<pid>:<queue1>,<queue2>` (Resque::Worker#to_s; node-resque `<name>:<queues>`), split
  as Resque::Worker.find splits it (at the first two colons). `*` is every queue, and Resque 2
  matches a name holding a glob character as File.fnmatch does. A worker killed without its
  cleanup stays in the set until another worker's start prunes it (by its heartbeat, Resque 2).
  A worker id with no queue list: `consumers` is left out of every queue, said once.
- `running`: the workers whose `worker:<id>` payload names the queue (`queue`), and
  `running_age`: seconds since the earliest of them started (`run_at`: Ruby Resque writes
  `Time.now.utc.iso8601`, whole seconds; node-resque `new Date().toString()`, whole seconds too).
  These payloads are the GETs above (one per worker, in the system read's first round trip; a
  worker new this tick in a follow-up, which the queue reads wait for). A payload that is not JSON
  or names no queue: `running` and `running_age` are left out of the queues its worker takes; a
  `run_at` that cannot be read: that queue's `running_age` is left out; each said once.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from fnmatch import fnmatchcase
from typing import Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple

from queue_metrics.datastores.redis.resp import NameKey
from queue_metrics.errors import (
    ErrorLog,
    PayloadError,
    ReplyError,
    describe_reply_error,
    describe_unreadable_members,
    show_name,
)
from queue_metrics.sample import (
    LATENCY_FROM_STAMP,
    LATENCY_OBSERVED,
    LATENCY_UNOBSERVABLE,
    UNIT_SECONDS,
    Figure,
    QueueSample,
    SystemSample,
)
from queue_metrics.setting_values import name_list
from queue_metrics.systems.contract import (
    EMPTY_BATCH,
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
    parse_json_object,
    registry_members,
)
from queue_metrics.systems.observed import NOT_SEARCHED, ListObservers
from queue_metrics.systems.timestamps import epoch_seconds, iso8601_seconds, latency

NAME = "resque"
DEFAULT_NAMESPACE = "resque"
# Keys, each after "<namespace>:".
QUEUES_KEY = "queues"  # SET of queue names
QUEUE_KEY = "queue:"  # + queue name: LIST of JSON payloads, RPUSHed, LPOPed
FAILED_KEY = "failed"  # LIST of failure records (Resque::Failure::Redis)
WORKERS_KEY = "workers"  # SET of worker ids, `host:pid:queue1,queue2`
WORKER_KEY = "worker:"  # + worker id: STRING, JSON of the job it works on; absent when idle
# A worker id: `<host>:<pid>:<queues, comma-separated>` (Resque::Worker.find splits it so).
WORKER_ID_PARTS = 3
ALL_QUEUES = "*"
# Resque 2 matches its queue names as globs when one holds any of these (Worker::WILDCARDS).
GLOB_CHARACTERS = frozenset("*?{}[]")
# A worker payload's fields: the queue its job came from, and when it started.
PAYLOAD_QUEUE_FIELD = "queue"
RUN_AT_FIELD = "run_at"
OLDEST_INDEX = 0
NEWEST_INDEX = -1
# The stamps a payload may carry.
TIMESTAMP_FIELD = "timestamp"  # judoscale-resque: Time.now.utc.to_f
ENQUEUED_AT_FIELD = "enqueued_at"  # ActiveJob's job data, args[0]
SCHEDULED_AT_FIELD = "scheduled_at"  # idem, Rails 7.1+: when a scheduled job is due (else null)
ACTIVE_JOB_WRAPPER = "ActiveJob::QueueAdapters::ResqueAdapter::JobWrapper"
UNIT_WORKERS = "{worker}"
# ACL key pattern of every key above, for a Redis user limited by key patterns.
KEY_PATTERNS = ("{namespace}:*",)


def job_enqueued_at(payload: bytes) -> Optional[float]:
    """When a Resque job was enqueued (epoch seconds), from its payload: judoscale-resque's
    `timestamp`, else ActiveJob's `args[0].enqueued_at` (its `scheduled_at` when later: a job
    scheduled or retried with a wait); None when it carries neither."""
    job = parse_json_object(payload, "oldest job")
    if job.get(TIMESTAMP_FIELD) is not None:
        return epoch_seconds(job[TIMESTAMP_FIELD], TIMESTAMP_FIELD)
    args = job.get("args")
    data = args[0] if isinstance(args, list) and args else None
    # ActiveJob's job data: the wrapper's only argument, named by its `job_class`.
    if isinstance(data, dict) and (job.get("class") == ACTIVE_JOB_WRAPPER or "job_class" in data):
        if data.get(ENQUEUED_AT_FIELD) is not None:
            enqueued = iso8601_seconds(data[ENQUEUED_AT_FIELD], f"args[0].{ENQUEUED_AT_FIELD}")
            if data.get(SCHEDULED_AT_FIELD) is None:
                return enqueued
            # A job scheduled (`set(wait:)`, a retry) is serialized then, and reaches its queue
            # (resque-scheduler pushes the same payload) at `scheduled_at`: ready from then.
            return max(enqueued, iso8601_seconds(data[SCHEDULED_AT_FIELD], f"args[0].{SCHEDULED_AT_FIELD}"))
    return None


def worker_queues(worker_id: str) -> Optional[Tuple[str, ...]]:
    """The queues (names or globs) a worker takes, from its id; None when the id has no list."""
    parts = worker_id.split(":", WORKER_ID_PARTS - 1)
    if len(parts) < WORKER_ID_PARTS or not parts[2]:
        return None
    return tuple(parts[2].split(","))


def takes(patterns: Sequence[str], queue: str) -> bool:
    """Whether a worker with these queue names or globs takes `queue`."""
    for pattern in patterns:
        if pattern == queue or pattern == ALL_QUEUES:
            return True
        if GLOB_CHARACTERS.intersection(pattern) and fnmatchcase(queue, pattern):
            return True
    return False


# JavaScript's Date#toString(): "Mon Dec 07 2026 03:46:55 GMT+0000 (Coordinated Universal Time)".
JS_DATE = re.compile(r"^[A-Z][a-z]{2} ([A-Z][a-z]{2}) (\d{2}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT([+-])(\d{2})(\d{2})")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def run_at_seconds(value: object) -> float:
    """When a worker started its job (epoch seconds), from its payload's `run_at`: ISO 8601 (Ruby
    Resque) or JavaScript's Date#toString (node-resque); PayloadError otherwise."""
    if isinstance(value, str):
        found = JS_DATE.match(value)
        if found is not None and found.group(1) in MONTHS:
            month, day, year, hour, minute, second, sign, offset_hours, offset_minutes = found.groups()
            offset = timedelta(hours=int(offset_hours), minutes=int(offset_minutes))
            try:
                moment = datetime(
                    int(year),
                    MONTHS.index(month) + 1,
                    int(day),
                    int(hour),
                    int(minute),
                    int(second),
                    tzinfo=timezone(-offset if sign == "-" else offset),
                )
            except ValueError:
                raise PayloadError(f"{RUN_AT_FIELD} is not a time: {value[:40]!r}") from None
            return epoch_seconds(moment.timestamp(), RUN_AT_FIELD)
    return iso8601_seconds(value, RUN_AT_FIELD)


class WorkingOn(NamedTuple):
    """What a worker's payload says: the queue of its job and when it started (None: unreadable,
    with `problem` saying why)."""

    queue: str
    started: Optional[float]
    problem: Optional[str]


def working_on(payload: bytes) -> WorkingOn:
    """A worker payload's queue and start; PayloadError when it names no queue."""
    data = parse_json_object(payload, "worker payload")
    queue = data.get(PAYLOAD_QUEUE_FIELD)
    if not isinstance(queue, str):
        raise PayloadError(f"worker payload has no {PAYLOAD_QUEUE_FIELD}")
    try:
        return WorkingOn(queue, run_at_seconds(data.get(RUN_AT_FIELD)), None)
    except PayloadError as error:
        return WorkingOn(queue, None, str(error))


class Running(NamedTuple):
    """A queue's running jobs this tick; `started` None with none, or when one's start is unknown."""

    jobs: int
    started: Optional[float]
    known: bool


class ResqueSettings(NamedTuple):
    # What every key starts with, before a colon (redis-namespace's namespace).
    namespace: str = DEFAULT_NAMESPACE
    # Queues to read besides those in `<namespace>:queues`.
    queues: Tuple[str, ...] = ()

    @classmethod
    def from_env(cls, values: Mapping[str, str]) -> "ResqueSettings":
        return cls(
            namespace=values.get("QUEUE_METRICS_RESQUE_NAMESPACE", "").strip() or DEFAULT_NAMESPACE,
            queues=name_list(values.get("QUEUE_METRICS_RESQUE_QUEUES")),
        )


class Resque:
    name = NAME
    scan_pattern = None
    workers = Workers("workers", "Resque worker")

    def __init__(self, settings: Optional[ResqueSettings] = None, extras: bool = True) -> None:
        self.settings = settings or ResqueSettings()
        self.extras = extras
        prefix = self.settings.namespace + ":"
        self.key_patterns = tuple(
            pattern.format(namespace=glob_escape(self.settings.namespace)) for pattern in KEY_PATTERNS
        )
        self._queues_key = prefix + QUEUES_KEY
        self._queue_prefix = encode_key(prefix + QUEUE_KEY)
        self._queue_pattern = (glob_escape(prefix + QUEUE_KEY) + "*",)
        self._registry = batch(("SMEMBERS", encode_key(self._queues_key)))
        queue_key = NameKey(self._queue_prefix)
        # Size and oldest job; the newest too, to observe a queue whose oldest carries no stamp.
        self._head_template = BatchTemplate(("LLEN", queue_key), ("LINDEX", queue_key, OLDEST_INDEX))
        self._ends_template = BatchTemplate(
            ("LLEN", queue_key), ("LINDEX", queue_key, OLDEST_INDEX), ("LINDEX", queue_key, NEWEST_INDEX)
        )
        self._newest_template = BatchTemplate(("LINDEX", queue_key, NEWEST_INDEX))
        self._observers = ListObservers(newest_at_head=False)
        # Queues whose oldest job carried a stamp at the last tick, and at this one.
        self._stamped_before: Set[str] = set()
        self._stamped: Set[str] = set()
        self._heads = ParsedHeads()
        self._registry_found = SameRegistry()
        self._failed_key = prefix + FAILED_KEY
        self._workers_key = prefix + WORKERS_KEY
        worker_prefix = encode_key(prefix + WORKER_KEY)
        self._system_batch = batch(("LLEN", encode_key(self._failed_key)), ("SMEMBERS", encode_key(self._workers_key)))
        self._workers = MemberReads(lambda worker: batch(("GET", worker_prefix + worker)))
        self._payloads = ParsedHeads()
        # This tick's workers per queue, set by the system read before the queue reads get their
        # replies; None: unknown (extras off, or the workers could not be read).
        self._takers: Optional[Tuple[Tuple[Tuple[str, ...], int], ...]] = None
        self._consumers_known = False
        self._running: Optional[Dict[str, Running]] = None
        # Patterns of workers whose payload could not be read: their queues' running is unknown.
        self._running_lost: Tuple[Tuple[str, ...], ...] = ()
        # True while the payloads of workers new this tick are still being read.
        self._pending = False
        self._read_at = 0.0
        self._issue_figures: Dict[Tuple[Optional[int], Optional[int]], Tuple[Figure, ...]] = {}
        # What doctor reports.
        self.heads_stamped = 0
        self.heads_unstamped = 0

    def found_keys(self, keys: Iterable[str], complete: bool) -> None:
        """Resque lists its queues in a set: nothing to discover."""

    def without_walk(self) -> Optional[str]:
        """It needs no keyspace walk: a server without SCAN costs it nothing."""
        return None

    def registry_batch(self) -> Batch:
        return self._registry

    def queues(self, replies: list, errors: ErrorLog) -> Found:
        self._heads.start_tick()
        self._observers.start_tick()
        self._stamped_before, self._stamped = self._stamped, set()
        members = registry_members(NAME, self._queues_key, replies[0], errors, self.key_patterns)

        def make(own: ErrorLog) -> Found:
            names = dict.fromkeys(self.settings.queues)
            names.update(dict.fromkeys(decode_name(member) for member in members))
            listed = f"the {self._queues_key!r} set names {len(members)} queue(s)" if members else None
            return Found(sorted(names), evidence(listed, "QUEUE_METRICS_RESQUE_QUEUES", bool(self.settings.queues)))

        return self._registry_found.found(members, make, errors)

    def read_queue(self, queue: str, errors: ErrorLog) -> QueueReader:
        sample = yield from self._read_queue(queue, errors)
        if sample is None or self._takers is None:
            return sample
        if self._pending:
            # Wait for the payloads of workers new this tick (the system read's follow-up,
            # answered before this).
            yield EMPTY_BATCH
        return sample._replace(figures=sample.figures + self._figures_of(queue))

    def _figures_of(self, queue: str) -> Tuple[Figure, ...]:
        """`consumers`, `running`, `running_age` of a queue, from this tick's system read."""
        consumers: Optional[int] = None
        if self._consumers_known and self._takers is not None:
            consumers = sum(workers for patterns, workers in self._takers if takes(patterns, queue))
        running = None
        started = None
        if self._running is not None and not any(takes(patterns, queue) for patterns in self._running_lost):
            state = self._running.get(queue)
            running = state.jobs if state is not None else 0
            if state is not None and state.known:
                started = state.started
        shape = (consumers, running)
        figures = self._issue_figures.get(shape)
        if figures is None:
            made = []
            if consumers is not None:
                made.append(Figure("consumers", consumers, UNIT_WORKERS))
            if running is not None:
                made.append(Figure("running", running))
            if len(self._issue_figures) >= 4096:
                self._issue_figures.clear()
            figures = self._issue_figures[shape] = tuple(made)
        if started is not None:
            figures += (Figure("running_age", latency(started, self._read_at), UNIT_SECONDS),)
        return figures

    def _read_queue(self, queue: str, errors: ErrorLog) -> QueueReader:
        name = encode_key(queue)
        key = self._queue_prefix + name
        observers = self._observers
        with_newest = queue not in self._stamped_before
        if with_newest:
            first, search = self._ends_template.batch(name), observers.search(key)
            replies = yield Batch(first.packed + search.packed, first.replies + search.replies)
        else:
            replies = yield self._head_template.batch(name)
        observers.read_at(replies.now)
        values = replies.values
        head = list_head(NAME, queue, values[:2], errors, self._queue_pattern)
        if head.size is None:
            return None
        # Not seen empty: holding jobs, or unreadable (an error reply is truthy).
        observers.not_empty[queue] = 1 if head.size else 0
        if not head.readable:
            return QueueSample(NAME, queue, head.size, None)
        if head.oldest is None:
            # Empty, or emptied since its LLEN: empty all the same.
            observers.empty(queue, 0, key, emptied=bool(head.size))
            return QueueSample(NAME, queue, head.size, 0.0)
        try:
            stamp = self._heads.parsed(head.oldest, job_enqueued_at)
        except PayloadError as error:
            errors.about_queue(NAME, queue, f"latency unknown: {error}")
            return QueueSample(NAME, queue, head.size, None)
        if stamp is not None:
            self.heads_stamped += 1
            self._stamped.add(queue)
            observers.forget(key)  # a stamped list needs no history
            return QueueSample(NAME, queue, head.size, latency(stamp, replies.now), latency_source=LATENCY_FROM_STAMP)
        self.heads_unstamped += 1
        if with_newest:
            newest, lpos = values[2], values[3] if len(values) > 3 else NOT_SEARCHED
        else:
            replies = yield self._newest_template.batch(name)
            newest, lpos = replies.values[0], NOT_SEARCHED
        if isinstance(newest, ReplyError):
            errors.about_queue(NAME, queue, f"latency unknown: {describe_reply_error(newest)}")
            return QueueSample(NAME, queue, head.size, None)
        seen = observers.observe(queue, 0, key, head.size, newest, lpos, replies.now)  # type: ignore[arg-type]
        source = LATENCY_OBSERVED if observers.observing else LATENCY_UNOBSERVABLE
        return QueueSample(NAME, queue, head.size, seen, latency_source=source)

    def read_system(self, errors: ErrorLog) -> Optional[SystemReader]:
        self._takers = self._running = None
        self._pending = False
        return self._read_system(errors) if self.extras else None

    def _read_system(self, errors: ErrorLog) -> SystemReader:
        first = self._system_batch
        replies = yield joined((first, self._workers.known_batch))
        failed, listed = replies.values[:2]
        members = registry_members(NAME, self._workers_key, listed, errors)
        if not isinstance(listed, ReplyError):
            self._take_workers(members, errors)
        self._pending = True
        workers = yield from self._workers.read(members, replies.values[first.replies :])
        # The payloads' time: the first round trip's (a new worker's, a follow-up's, is as close).
        self._read_at = replies.now
        if not isinstance(listed, ReplyError):
            self._take_payloads(workers, errors)
        self._pending = False
        figures: List[Figure] = []
        if isinstance(failed, ReplyError):
            errors.about_reply(NAME, f"failed jobs {show_name(self._failed_key)}", failed)
        else:
            figures.append(Figure("failed", failed))
        if isinstance(listed, ReplyError):
            return SystemSample(NAME, tuple(figures))  # no worker is known: none is not 0
        unreadable = [(worker, values[0]) for worker, values in workers if isinstance(values[0], ReplyError)]
        if unreadable:
            # A count without them would be short, and doctor would take 0 for none working.
            worker, reply = unreadable[0]
            errors.add(
                describe_unreadable_members(
                    NAME,
                    "worker keys",
                    len(unreadable),
                    show_name(self.settings.namespace + ":" + WORKER_KEY + decode_name(worker)),
                    reply,  # type: ignore[arg-type]
                    self.key_patterns,
                    "working workers",
                    "a string",
                )
            )
            figures.append(Figure("workers", len(workers), UNIT_WORKERS))
            return SystemSample(NAME, tuple(figures))
        working = sum(1 for _, values in workers if values[0])
        figures += [Figure("workers", len(workers), UNIT_WORKERS), Figure("working", working, UNIT_WORKERS)]
        return SystemSample(NAME, tuple(figures))

    def _take_workers(self, members: Sequence[bytes], errors: ErrorLog) -> None:
        """The workers per list of queues they take (`consumers`), from their ids."""
        takers: Dict[Tuple[str, ...], int] = {}
        unlisted = []
        for member in members:
            patterns = worker_queues(decode_name(member))
            if patterns is None:
                unlisted.append(decode_name(member))
            else:
                takers[patterns] = takers.get(patterns, 0) + 1
        self._takers = tuple(takers.items())
        self._consumers_known = not unlisted
        if unlisted:
            errors.add(
                f"{NAME}: worker {show_name(unlisted[0])} (in {show_name(self._workers_key)}) names no queues "
                f"(<host>:<pid>:<queues>): consumers left out of every queue"
            )

    def _take_payloads(self, workers: Sequence[Tuple[bytes, Sequence[object]]], errors: ErrorLog) -> None:
        """Each queue's running jobs and the earliest start, from the workers' payloads."""
        self._payloads.start_tick()
        running: Dict[str, Running] = {}
        lost: List[Tuple[str, ...]] = []
        for member, values in workers:
            payload = values[0]
            if not payload or isinstance(payload, ReplyError):
                continue  # idle (or unreadable: said with `working`)
            worker = decode_name(member)
            try:
                job = self._payloads.parsed(payload, working_on)  # type: ignore[arg-type]
            except PayloadError as error:
                patterns = worker_queues(worker) or (ALL_QUEUES,)
                lost.append(patterns)
                errors.add(
                    f"{NAME}: {show_name(self.settings.namespace + ':' + WORKER_KEY + worker)}: {error}: "
                    f"running left out of the queues it takes ({','.join(patterns)})"
                )
                continue
            state = running.get(job.queue, Running(0, None, True))
            known = state.known and job.started is not None
            if job.problem is not None:
                errors.about_queue(NAME, job.queue, f"running_age unknown: worker {show_name(worker)}: {job.problem}")
            started = state.started
            if job.started is not None:
                started = job.started if started is None else min(started, job.started)
            running[job.queue] = Running(state.jobs + 1, started, known)
        self._running = running
        self._running_lost = tuple(lost)

    def describe(self) -> List[str]:
        namespace = self.settings.namespace
        where = " (QUEUE_METRICS_RESQUE_NAMESPACE)" if namespace != DEFAULT_NAMESPACE else ""
        lines = [f"keys read under the namespace {namespace!r}{where}"]
        if self.heads_stamped or self.heads_unstamped:
            lines.append(
                f"enqueue stamps (ActiveJob enqueued_at, judoscale timestamp): {self.heads_stamped} queue head(s) "
                f"stamped, {self.heads_unstamped} without one (latency observed from the lists)"
            )
        return lines


SYSTEM = SystemSpec(NAME, ResqueSettings.from_env, Resque)  # type: ignore[arg-type]
