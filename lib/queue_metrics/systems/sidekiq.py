"""Sidekiq: queues are Redis lists of JSON jobs, named in the `queues` set.

Matches `Sidekiq::Queue#size` (LLEN) and `#latency` (age of the job at LINDEX -1, the next one a
worker's BRPOP takes, from its `enqueued_at`), with Sidekiq 8's millisecond timestamps read too.

System-wide, as `Sidekiq::Stats` and `Sidekiq::ProcessSet` report them: the scheduled, retry and
dead sets' sizes (ZCARD); the processes in the `processes` set whose heartbeat hash still exists
(it expires 60 s after a process's last beat; `ProcessSet` skips those, and so do we, but we never
remove them from the set), their busy threads (`busy`) and concurrency (the `info` JSON); and the
jobs processed and failed since the last tick, from the `stat:processed`/`stat:failed` totals
that every process adds to at each heartbeat (every 5 s).

Per queue, from the same reads (the incidents size and latency miss): `running` and
`running_age`, the jobs the live processes' threads run now and how long the longest has run,
from each process's work hash (written at each heartbeat: a job shorter than 5 s may not show);
`due` and `due_age`, the jobs of the scheduled and retry sets whose time has passed (a poller in
every Sidekiq process moves them into their queue within seconds: when none runs, they pile up
there while the queue looks empty); `consumers`, the live processes, not quieted, whose `queues`
name the queue. They are made in the system's read, which the queues' reads wait for.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional, Set, Tuple

from queue_metrics.errors import (
    ErrorLog,
    PayloadError,
    ReplyError,
    describe_unreadable_members,
    show_name,
    sidekiq_due_unread,
    sidekiq_processes_note,
)
from queue_metrics.sample import COUNTER, UNIT_RATIO, Figure, QueueSample, SystemSample
from queue_metrics.setting_values import name_list
from queue_metrics.systems.contract import (
    Batch,
    BatchTemplate,
    Found,
    Interval,
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
    latency_or_report,
    list_head,
    name_key,
    parse_json_object,
    registry_members,
)
from queue_metrics.systems.timestamps import epoch_seconds, latency

NAME = "sidekiq"
QUEUES_KEY = "queues"  # SET of queue names
QUEUE_KEY = "queue:{name}"  # LIST; clients LPUSH, workers BRPOP: the oldest job is at -1
OLDEST_INDEX = -1
# Sidekiq <= 7 writes float seconds, Sidekiq 8 integer milliseconds.
ENQUEUED_AT_FIELD = "enqueued_at"
# Sorted sets of jobs, scored by when they run next.
SCHEDULED_KEY = "schedule"
RETRY_KEY = "retry"
DEAD_KEY = "dead"
PROCESSED_KEY = "stat:processed"  # STRING: jobs processed since the app began (or a reset)
FAILED_KEY = "stat:failed"
PROCESSES_KEY = "processes"  # SET of process identities; each one's HASH is `<identity>`
# info: JSON with `concurrency` and `queues`; busy: threads running a job; quiet: "true" once the
# process was told to stop taking jobs (TSTP).
PROCESS_FIELDS = ("info", "busy", "quiet")
CONCURRENCY_FIELD = "concurrency"
QUEUES_FIELD = "queues"  # the queues the process takes (all its capsules' in Sidekiq 7+)
QUIET = b"true"
# The jobs a process runs now: HASH thread id -> JSON {"queue", "payload", "run_at"}, rewritten
# at each heartbeat, expiring 60 s after the last: `<identity>:work` (Sidekiq 7+), or
# `<identity>:workers` (Sidekiq <= 6). `run_at`: epoch seconds the job started.
WORK_KEY_SUFFIXES = (b":work", b":workers")
WORK_QUEUE_FIELD = "queue"
RUN_AT_FIELD = "run_at"
# The sets whose due jobs a process's poller moves into their queue (the job's `queue`); at most
# DUE_READ_LIMIT of each are read a tick (more: due per queue is unknown, and a line says so).
DUE_KEYS = (SCHEDULED_KEY, RETRY_KEY)
JOB_QUEUE_FIELD = "queue"
DUE_READ_LIMIT = 1000
FIGURES_CACHED = 4096
# ACL key patterns of the keys above, for a Redis user limited by key patterns (a namespace's
# keys are all `<namespace>:*`). A process's hash is named after its identity,
# `<hostname>:<pid>:<nonce>`: only a pattern as wide as PROCESS_KEY_PATTERN matches it, so it is
# named apart (without it the processes are unknown).
PROCESS_KEY_PATTERN = "*:*:*"
KEY_PATTERNS = (
    QUEUES_KEY,
    QUEUE_KEY.format(name="*"),
    SCHEDULED_KEY,
    RETRY_KEY,
    DEAD_KEY,
    PROCESSED_KEY,
    FAILED_KEY,
    PROCESSES_KEY,
)


def process_concurrency(info: bytes) -> int:
    """A process's thread count, from the `info` JSON its heartbeat writes (`"concurrency":10`)."""
    value = parse_json_object(info, "process info").get(CONCURRENCY_FIELD)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise PayloadError(f"process info has no number {CONCURRENCY_FIELD!r}")
    return int(value)


def process_queues(info: bytes) -> Optional[Tuple[str, ...]]:
    """The queues a process takes, from its heartbeat's `info` JSON (`"queues":["default"]`);
    None when `info` is no JSON object (said with its concurrency)."""
    try:
        value = parse_json_object(info, "process info").get(QUEUES_FIELD)
    except PayloadError:
        return None
    if not isinstance(value, list) or not all(isinstance(queue, str) for queue in value):
        raise PayloadError(f"process info has no list of names {QUEUES_FIELD!r}")
    return tuple(dict.fromkeys(value))


def work_entry(value: bytes) -> Tuple[str, Optional[float]]:
    """The queue of a job a thread runs and when it started (None: no `run_at`), from its entry
    in a process's work hash."""
    work = parse_json_object(value, "work entry")
    queue = work.get(WORK_QUEUE_FIELD)
    if not isinstance(queue, str):
        raise PayloadError(f"work entry has no {WORK_QUEUE_FIELD!r}")
    run_at = work.get(RUN_AT_FIELD)
    return queue, None if run_at is None else epoch_seconds(run_at, RUN_AT_FIELD)


def job_queue(payload: bytes) -> str:
    """The queue a job of the scheduled or retry set goes to when it is due."""
    queue = parse_json_object(payload, "job").get(JOB_QUEUE_FIELD)
    if not isinstance(queue, str):
        raise PayloadError(f"job has no {JOB_QUEUE_FIELD!r}")
    return queue


NOT_DUE = (0, None)


class Activity(NamedTuple):
    """What a tick's system read found per queue; a field is None when it is unknown."""

    now: float
    # Jobs running per queue, the earliest start among them, and queues with a job of no start.
    running: Optional[Dict[str, int]]
    running_since: Dict[str, float]
    ageless: Set[str]
    # Due jobs per queue: (count, when the earliest fell due).
    due: Optional[Dict[str, Tuple[int, float]]]
    consumers: Optional[Dict[str, int]]


def whole_number(reply: object, what: str) -> int:
    """A counter's value (GET); a missing key is 0, as Sidekiq's `to_i` reads it."""
    if reply is None:
        return 0
    try:
        return int(reply)  # type: ignore[call-overload]
    except ValueError:
        raise PayloadError(f"{what} is not a whole number") from None


def job_enqueued_at(payload: bytes) -> Optional[float]:
    """Epoch seconds at which a Sidekiq job was enqueued; None when it has no `enqueued_at`."""
    job = parse_json_object(payload, "oldest job")
    value = job.get(ENQUEUED_AT_FIELD)
    if value is None:
        return None
    return epoch_seconds(value, ENQUEUED_AT_FIELD)


def queue_latency(oldest_payload: Optional[bytes], now: float, heads: Optional[ParsedHeads] = None) -> float:
    """Latency of a queue from its oldest job, as `Sidekiq::Queue#latency` computes it.

    An empty queue has none to wait for. A job without `enqueued_at` counts 0, as Sidekiq's own
    API counts it: its `created_at` is no enqueue time (a scheduled job was created long before
    it was enqueued), and a figure that differs from Sidekiq's Web UI helps nobody.
    """
    if oldest_payload is None:
        return 0.0
    enqueued_at = job_enqueued_at(oldest_payload) if heads is None else heads.parsed(oldest_payload, job_enqueued_at)
    return 0.0 if enqueued_at is None else latency(enqueued_at, now)


class SidekiqSettings(NamedTuple):
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
    workers = Workers("processes", "Sidekiq process")

    def __init__(
        self, settings: Optional[SidekiqSettings] = None, extras: bool = True, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings or SidekiqSettings()
        self.extras = extras
        # The bound of "due" in the sets' reads, sent with them: the clock of `Replies.now`.
        self._clock = clock
        # redis-namespace (Sidekiq <= 6) puts `<ns>:` before every key.
        self._key_prefix = f"{self.settings.namespace}:" if self.settings.namespace else ""
        self._registry = batch(("SMEMBERS", self._key_prefix + QUEUES_KEY))
        escaped = glob_escape(self._key_prefix)
        self.key_patterns = (f"{escaped}*",) if escaped else KEY_PATTERNS
        # The processes' hashes: under `<namespace>:*`, else only PROCESS_KEY_PATTERN matches them.
        self._process_patterns = self.key_patterns if escaped else (PROCESS_KEY_PATTERN,)
        self._refusal_note = "" if escaped else sidekiq_processes_note(PROCESS_KEY_PATTERN)
        self._queue_patterns = (escaped + QUEUE_KEY.format(name="*"),)
        key = name_key(QUEUE_KEY, self._key_prefix)
        self._queue_template = BatchTemplate(("LLEN", key), ("LINDEX", key, OLDEST_INDEX))
        prefix = self._key_prefix
        self._stats_batch = batch(
            *[("ZCARD", prefix + key) for key in (SCHEDULED_KEY, RETRY_KEY, DEAD_KEY)],
            ("GET", prefix + PROCESSED_KEY),
            ("GET", prefix + FAILED_KEY),
            ("SMEMBERS", prefix + PROCESSES_KEY),
        )
        self._processes = MemberReads(
            lambda identity: batch(
                ("HMGET", prefix.encode() + identity, *PROCESS_FIELDS),
                *[("HGETALL", prefix.encode() + identity + suffix) for suffix in WORK_KEY_SUFFIXES],
            )
        )
        self._interval = Interval()
        self._heads = ParsedHeads()
        self._registry_found = SameRegistry()
        # A process's `info` is the same at every heartbeat: parsed once.
        self._infos = ParsedHeads()
        self._queue_lists = ParsedHeads()
        # A running job's work entry and a due job stay the same from tick to tick: parsed once.
        self._works = ParsedHeads()
        self._due_jobs = ParsedHeads()
        self._findings = SystemFindings()
        self._figures: Dict[int, Tuple[Figure, ...]] = {}

    def found_keys(self, keys: Iterable[str], complete: bool) -> None:
        """Sidekiq lists its queues in a set: nothing to discover."""

    def without_walk(self) -> Optional[str]:
        """It needs no keyspace walk: a server without SCAN costs it nothing."""
        return None

    def registry_batch(self) -> Batch:
        return self._registry

    def queues(self, replies: list, errors: ErrorLog) -> Found:
        self._heads.start_tick()
        self._findings.new_tick()
        key = self._key_prefix + QUEUES_KEY
        members = registry_members(NAME, key, replies[0], errors, self.key_patterns, self._refusal_note)

        def make(_: ErrorLog) -> Found:
            names = {decode_name(member) for member in members}
            names.update(self.settings.queues)
            listed = f"the {key!r} set names {len(members)} queue(s)" if members else None
            return Found(sorted(names), evidence(listed, "QUEUE_METRICS_SIDEKIQ_QUEUES", bool(self.settings.queues)))

        return self._registry_found.found(members, make, errors)

    def read_queue(self, queue: str, errors: ErrorLog) -> QueueReader:
        replies = yield self._queue_template.batch(encode_key(queue))
        head = list_head(NAME, queue, replies.values, errors, self._queue_patterns)
        if head.size is None:
            return None
        seconds = None
        if head.readable:
            seconds = latency_or_report(
                NAME, queue, errors, lambda: queue_latency(head.oldest, replies.now, self._heads)
            )
        if not self.extras:
            return QueueSample(NAME, queue, head.size, seconds)
        if self._findings.pending:
            yield from self._findings.wait()
        return QueueSample(NAME, queue, head.size, seconds, self._queue_figures(queue))

    def _queue_figures(self, queue: str) -> Tuple[Figure, ...]:
        """The queue's `running`, `running_age`, `due`, `due_age` and `consumers`, those known."""
        found: Optional[Activity] = self._findings.value  # type: ignore[assignment]
        if found is None:
            return ()
        running = None if found.running is None else found.running.get(queue, 0)
        due, due_since = (None, None) if found.due is None else found.due.get(queue, NOT_DUE)
        consumers = None if found.consumers is None else found.consumers.get(queue, 0)
        if running == 0 and due == 0 and consumers is not None:
            # Most queues: nothing runs, nothing is due; their figures differ by consumers only.
            figures = self._figures.get(consumers)
            if figures is None:
                if len(self._figures) >= FIGURES_CACHED:
                    self._figures.clear()
                figures = self._figures[consumers] = activity_figures(found.now, 0, None, 0, None, consumers)
            return figures
        since = None if running is None or queue in found.ageless else found.running_since.get(queue)
        return activity_figures(found.now, running, since, due, due_since, consumers)

    def read_system(self, errors: ErrorLog) -> Optional[SystemReader]:
        return self._read_system(errors) if self.extras else None

    def _read_system(self, errors: ErrorLog) -> SystemReader:
        self._findings.start()
        try:
            return (yield from self._read_all(errors))
        finally:
            self._findings.finish()

    def _due_batch(self) -> Batch:
        """The due jobs of the scheduled and retry sets (score: when each is due), and how many."""
        prefix, bound = self._key_prefix, repr(self._clock())
        return batch(
            *[
                command
                for key in DUE_KEYS
                for command in (
                    ("ZRANGEBYSCORE", prefix + key, "-inf", bound, "WITHSCORES", "LIMIT", 0, DUE_READ_LIMIT),
                    ("ZCOUNT", prefix + key, "-inf", bound),
                )
            ]
        )

    def _read_all(self, errors: ErrorLog) -> SystemReader:
        stats, due = self._stats_batch, self._due_batch()
        replies = yield joined((stats, due, self._processes.known_batch))
        values = replies.values
        figures: List[Figure] = []
        for name, key, reply in zip(("scheduled", "retry", "dead"), (SCHEDULED_KEY, RETRY_KEY, DEAD_KEY), values):
            if isinstance(reply, ReplyError):
                errors.about_reply(NAME, f"{name} set {show_name(self._key_prefix + key)}", reply, "a sorted set")
            else:
                figures.append(Figure(name, reply))
        counters = []
        for name, key, reply in (("processed", PROCESSED_KEY, values[3]), ("failed", FAILED_KEY, values[4])):
            try:
                if isinstance(reply, ReplyError):
                    errors.about_reply(NAME, f"counter {show_name(self._key_prefix + key)}", reply, "a number")
                    continue
                count = self._interval.since_last(name, whole_number(reply, f"counter {key}"))
            except PayloadError as error:
                errors.add(f"{NAME} {error}")
                continue
            if count is not None:
                counters.append(Figure(name, count, kind=COUNTER))
        members = registry_members(NAME, self._key_prefix + PROCESSES_KEY, values[5], errors)
        processes = yield from self._processes.read(members, values[stats.replies + due.replies :])
        running = consumers = None
        if not isinstance(values[5], ReplyError):  # else no process is known: none is not 0
            process_figures = self._process_figures(processes, errors)
            figures.extend(process_figures)
            if process_figures:  # else a process's hash could not be read (said above)
                consumers = self._consumers(processes, errors)
                running = self._running(processes, errors)
        due_jobs = self._due(values[stats.replies : stats.replies + due.replies], values[:2], replies.now, errors)
        counts, since, ageless = running or (None, {}, set())
        self._findings.value = Activity(replies.now, counts, since, ageless, due_jobs, consumers)
        return SystemSample(NAME, tuple(figures + counters))

    def _consumers(self, processes: list, errors: ErrorLog) -> Optional[Dict[str, int]]:
        """Live processes, not quieted, that take each queue; None when one's `queues` is unknown."""
        self._queue_lists.start_tick()
        counts: Dict[str, int] = {}
        for identity, ((info, _, quiet), *_) in processes:
            if info is None or quiet == QUIET:
                continue
            try:
                queues = self._queue_lists.parsed(info, process_queues)
            except PayloadError as error:
                errors.add(f"{NAME} process {show_name(decode_name(identity))}: {error}: consumers per queue unknown")
                return None
            if queues is None:
                return None
            for queue in queues:
                counts[queue] = counts.get(queue, 0) + 1
        return counts

    def _running(
        self, processes: list, errors: ErrorLog
    ) -> Optional[Tuple[Optional[Dict[str, int]], Dict[str, float], Set[str]]]:
        """Jobs running per queue, from the live processes' work hashes, the earliest start per
        queue, and the queues with a job whose start is unknown (said once each); None when an
        entry names no queue (said)."""
        self._works.start_tick()
        running: Dict[str, int] = {}
        since: Dict[str, float] = {}
        ageless: Set[str] = set()
        for identity, ((info, _, _), *works) in processes:
            if info is None:
                continue  # a dead process's work hash lasts up to 60 s more
            for suffix, work in zip(WORK_KEY_SUFFIXES, works):
                if isinstance(work, ReplyError):
                    key = self._key_prefix + decode_name(identity + suffix)
                    errors.about_reply(NAME, f"work hash {show_name(key)}", work, "a hash")
                    return None
                for thread, value in zip(work[::2], work[1::2]):
                    try:
                        queue, run_at = self._works.parsed(value, work_entry)
                    except PayloadError as error:
                        where = f"process {show_name(decode_name(identity))} thread {show_name(decode_name(thread))}"
                        errors.add(f"{NAME} {where}: {error}: jobs running per queue unknown")
                        return None
                    running[queue] = running.get(queue, 0) + 1
                    if run_at is None:
                        ageless.add(queue)
                    elif run_at < since.get(queue, math.inf):
                        since[queue] = run_at
        for queue in sorted(ageless):
            errors.about_queue(NAME, queue, f"running_age unknown: a work entry has no {RUN_AT_FIELD!r}")
        return running, since, ageless

    def _due(self, values: list, sizes: list, now: float, errors: ErrorLog) -> Optional[Dict[str, Tuple[int, float]]]:
        """Due jobs per queue (count, when the earliest fell due), from both sets' replies; None,
        said, when a set cannot be read (`sizes`: their ZCARDs), holds more due jobs than were read, or a job names no
        queue (it is then unknown where each goes)."""
        self._due_jobs.start_tick()
        due: Dict[str, Tuple[int, float]] = {}
        for index, key in enumerate(DUE_KEYS):
            entries, total = values[2 * index : 2 * index + 2]
            shown = show_name(self._key_prefix + key)
            failed = entries if isinstance(entries, ReplyError) else total
            if isinstance(sizes[index], ReplyError):
                return None  # said with the set's size
            if isinstance(failed, ReplyError):
                errors.about_reply(NAME, f"due jobs of {shown}", failed, "a sorted set")
                return None
            if total > len(entries) // 2:
                errors.add(sidekiq_due_unread(shown, total, DUE_READ_LIMIT, now - float(entries[1])))
                return None
            for payload, score in zip(entries[::2], entries[1::2]):
                try:
                    queue = self._due_jobs.parsed(payload, job_queue)
                except PayloadError as error:
                    errors.add(f"{NAME} {shown}: a due {error}: due jobs per queue unknown")
                    return None
                at = float(score)
                count, earliest = due.get(queue, (0, at))
                due[queue] = (count + 1, min(earliest, at))
        return due

    def _process_figures(self, processes: list, errors: ErrorLog) -> List[Figure]:
        """Live processes, busy threads, concurrency and utilization, as `ProcessSet` sums them;
        none when a process's hash cannot be read (a sum without it would be short, and doctor
        would take 0 processes for none running)."""
        unreadable = [(identity, reply) for identity, (reply, *_) in processes if isinstance(reply, ReplyError)]
        if unreadable:
            identity, reply = unreadable[0]
            errors.add(
                describe_unreadable_members(
                    NAME,
                    "process heartbeat hashes",
                    len(unreadable),
                    show_name(decode_name(identity)),
                    reply,
                    self._process_patterns,
                    "processes, busy threads, concurrency and utilization",
                )
            )
            return []
        live = busy = concurrency = 0
        concurrency_known = True
        self._infos.start_tick()
        for identity, (reply, *_) in processes:  # HMGET: [info, busy, quiet]
            info, threads, _ = reply
            if info is None:
                continue  # its heartbeat expired: the process is gone
            live += 1
            try:
                busy += whole_number(threads, "busy")
                concurrency += self._infos.parsed(info, process_concurrency)
            except PayloadError as error:
                errors.add(f"{NAME} process {show_name(decode_name(identity))}: {error}")
                concurrency_known = False
        figures = [Figure("processes", live, "{process}"), Figure("busy", busy, "{thread}")]
        if concurrency_known:
            figures.append(Figure("concurrency", concurrency, "{thread}"))
            if concurrency:
                figures.append(Figure("utilization", busy / concurrency, UNIT_RATIO))
        return figures

    def describe(self) -> List[str]:
        where = f"namespace {self.settings.namespace!r}" if self.settings.namespace else "no namespace"
        return [f"keys read with {where} (QUEUE_METRICS_SIDEKIQ_NAMESPACE for a redis-namespace app)"]


SYSTEM = SystemSpec(NAME, SidekiqSettings.from_env, Sidekiq)  # type: ignore[arg-type]
