"""Sidekiq: queues are Redis lists of JSON jobs, named in the `queues` set.

Matches `Sidekiq::Queue#size` (LLEN) and `#latency` (age of the job at LINDEX -1, the next one a
worker's BRPOP takes, from its `enqueued_at`), with Sidekiq 8's millisecond timestamps read too.

System-wide, as `Sidekiq::Stats` and `Sidekiq::ProcessSet` report them: the scheduled, retry and
dead sets' sizes (ZCARD); the processes in the `processes` set whose heartbeat hash still exists
(it expires 60 s after a process's last beat; `ProcessSet` skips those, and so do we, but we never
remove them from the set), their busy threads (`busy`) and concurrency (the `info` JSON); and the
jobs processed and failed since the last tick, from the `stat:processed`/`stat:failed` totals
that every process adds to at each heartbeat (every 5 s).
"""

from __future__ import annotations

import math
from typing import Iterable, List, Mapping, NamedTuple, Optional, Tuple

from queue_metrics.errors import (
    ErrorLog,
    PayloadError,
    ReplyError,
    describe_unreadable_members,
    show_name,
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
    SystemReader,
    SystemSpec,
    Workers,
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
PROCESS_FIELDS = ("info", "busy")  # info: JSON with `concurrency`; busy: threads running a job
CONCURRENCY_FIELD = "concurrency"
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

    def __init__(self, settings: Optional[SidekiqSettings] = None, extras: bool = True) -> None:
        self.settings = settings or SidekiqSettings()
        self.extras = extras
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
        self._processes = MemberReads(lambda identity: batch(("HMGET", prefix.encode() + identity, *PROCESS_FIELDS)))
        self._interval = Interval()
        self._heads = ParsedHeads()
        self._registry_found = SameRegistry()
        # A process's `info` is the same at every heartbeat: parsed once.
        self._infos = ParsedHeads()

    def found_keys(self, keys: Iterable[str], complete: bool) -> None:
        """Sidekiq lists its queues in a set: nothing to discover."""

    def without_walk(self) -> Optional[str]:
        """It needs no keyspace walk: a server without SCAN costs it nothing."""
        return None

    def registry_batch(self) -> Batch:
        return self._registry

    def queues(self, replies: list, errors: ErrorLog) -> Found:
        self._heads.start_tick()
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
        if not head.readable:
            return QueueSample(NAME, queue, head.size, None)
        seconds = latency_or_report(NAME, queue, errors, lambda: queue_latency(head.oldest, replies.now, self._heads))
        return QueueSample(NAME, queue, head.size, seconds)

    def read_system(self, errors: ErrorLog) -> Optional[SystemReader]:
        return self._read_system(errors) if self.extras else None

    def _read_system(self, errors: ErrorLog) -> SystemReader:
        stats = self._stats_batch
        replies = yield joined((stats, self._processes.known_batch))
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
        processes = yield from self._processes.read(members, values[stats.replies :])
        if not isinstance(values[5], ReplyError):  # else no process is known: none is not 0
            figures.extend(self._process_figures(processes, errors))
        return SystemSample(NAME, tuple(figures + counters))

    def _process_figures(self, processes: list, errors: ErrorLog) -> List[Figure]:
        """Live processes, busy threads, concurrency and utilization, as `ProcessSet` sums them;
        none when a process's hash cannot be read (a sum without it would be short, and doctor
        would take 0 processes for none running)."""
        unreadable = [(identity, reply) for identity, (reply,) in processes if isinstance(reply, ReplyError)]
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
        for identity, (reply,) in processes:  # HMGET: [info, busy]
            info, threads = reply
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
