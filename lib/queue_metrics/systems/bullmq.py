"""BullMQ 1-6 and Bull 3/4 (Node.js) on Redis: one layout, read by one module.

Every key is `<prefix>:<queue>:<type>`, the prefix `bull` by default. There is no registry of
queues: each queue has a job counter, STRING `<prefix>:<queue>:id` (INCR at every add, custom job
ids too, in BullMQ and Bull alike; never deleted but by `obliterate`), so the keyspace walk finds
the queues by SCAN MATCH `<prefix>:*:id`, and a whole pass says which are gone. A queue that only
ever had delayed jobs has its `id` too; Bull writes no `meta` hash but when paused, so `meta` could
not find every queue. Bull allows `:` in queue names (BullMQ 5.81 and 6.7 refuse it): the name
is what lies between the prefix and `:id`. Several prefixes (QUEUE_METRICS_BULLMQ_PREFIX) are
walked with one pattern, `*:id`, keeping the keys under them, and their queues are shown as
`<prefix>:<queue>`. Other prefixes are not guessed: a key `x:y:id` may be any app's.

Size is what waits for a worker now:
- LIST `wait`: producers LPUSH, workers RPOPLPUSH from the right, `lifo` jobs are RPUSHed; BullMQ
  before 5 could leave a marker id `0:<ms>` at its right end, which BullMQ's own count drops;
- LIST `paused`: BullMQ 1-5 RENAME `wait` to it while paused, Bull too (BullMQ 6 keeps jobs in
  `wait` and sets `meta.paused`), counted as waiting as `getWaitingCount()` counts it;
- ZSET `prioritized` (BullMQ 4+; Bull and BullMQ 1-3 keep priority jobs in `wait`);
- due delayed jobs: ZSET `delayed`, score = ready ms * 4096 + a 12-bit sequence. Only a worker
  moves due jobs to `wait`, so with workers scaled to zero they pile up there unseen: counted as
  waiting. `getWaitingCount() + getPrioritizedCount() + getDelayedCount(now + 1)` in BullMQ 6's
  own API.
Jobs waiting for their children (flows, ZSET `waiting-children`) cannot run: not waiting.

Latency: now minus the ready time of the oldest waiting job (`job_ready_ms`), over each list's two
ends (the oldest FIFO job is at the right end unless `lifo` jobs wait, as RQ's `at_front`: the
figure is then the older of the two ends' jobs), the oldest of the first PRIORITIZED_READ
prioritized jobs (by their insertion counter: exact up to that many), and the earliest due
delayed job (its due time). Bull inserts priority jobs inside `wait` by rank: there too the
figure is the older of the two ends' jobs. A paused queue's latency keeps growing: `paused` says so.

A job's ready time is read once (HMGET, in the follow-up round trip); while it stays at an end of
its list, each tick only checks that its `processedOn` is unchanged (one HGET in the first round
trip): a job run again (a retry, a stalled job moved back) gets a new `processedOn` and is read
anew. So a steady queue costs one round trip a tick.

Figures per queue: `active`, `delayed` (not yet due), `failed`, `completed`, `prioritized`,
`paused` (1/0); with extras, the figures every system names alike (issue 27):
- `running` (= `active`) and `running_age`: seconds since the longest-running active job started,
  from its `processedOn` (ms, the worker's clock, written when the job moves to `active`).
  Workers LPUSH a job to `active` when they take it (RPOPLPUSH from `wait`, LPUSH from
  `prioritized`) and LREM it when done, so the job at the right end (LINDEX -1) started first. Its
  id and `processedOn` are read once; while it stays there, each tick reads its `processedOn`
  again in the first round trip (a stalled job taken again gets a new one).
- `due` and `due_age`: the due delayed jobs, already counted in `size` (above: no worker has
  promoted them yet), and seconds since the earliest fell due. A healthy app shows `due` near 0;
  a `due_age` that grows says no worker runs to promote them. From the ZCOUNT that size needs.
`consumers` is not reported: BullMQ's workers are Redis client names (`CLIENT LIST`, an admin
command), not keys.
"""

from __future__ import annotations

import json
import math
from typing import Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Set, Tuple

from queue_metrics.datastores.redis.resp import NameKey
from queue_metrics.errors import (
    ErrorLog,
    PayloadError,
    ReplyError,
    bullmq_queues_unseen_without_walk,
    describe_reply_error,
    show_name,
)
from queue_metrics.sample import UNIT_RATIO, UNIT_SECONDS, Figure, QueueSample
from queue_metrics.setting_values import name_list
from queue_metrics.systems.contract import (
    EMPTY_BATCH,
    Batch,
    BatchTemplate,
    Found,
    QueueReader,
    SystemReader,
    SystemSpec,
    batch,
    decode_name,
    encode_key,
    evidence,
    glob_escape,
)
from queue_metrics.systems.timestamps import EARLIEST_PLAUSIBLE, latency

NAME = "bullmq"
DEFAULT_PREFIX = "bull"
# The queue's keys, after `<prefix>:<queue>`.
ID_KEY = ":id"  # STRING job counter: how the walk finds queues
WAIT_KEY = ":wait"  # LIST of job ids; next at -1
PAUSED_KEY = ":paused"  # LIST, BullMQ <= 5 and Bull while paused
PRIORITIZED_KEY = ":prioritized"  # ZSET, score priority * 2^32 + insertion counter (BullMQ 4+)
DELAYED_KEY = ":delayed"  # ZSET, score ready_ms * 4096 + sequence
ACTIVE_KEY = ":active"  # LIST of running jobs
FAILED_KEY = ":failed"  # ZSET
COMPLETED_KEY = ":completed"  # ZSET
META_KEY = ":meta"  # HASH; `paused` = 1 while paused (BullMQ, Bull 4)
META_PAUSED_KEY = ":meta-paused"  # STRING, Bull while paused
PAUSED_FIELD = "paused"
# A job's HASH is `<prefix>:<queue>:<id>`; the fields its ready time comes from.
JOB_FIELDS = ("timestamp", "delay", "processedOn", "atm", "opts")
# Read each tick for the jobs whose ready time the last tick found: unchanged, it still holds.
CHECK_FIELD = "processedOn"
MARKER_MARK = b"0:"  # BullMQ < 5 marker ids in `wait`
DELAY_SCALE = 4096  # delayed score = ready ms * 0x1000 + sequence
PRIORITY_COUNTER = 2**32  # prioritized score = priority * 2^32 + counter
# Prioritized jobs read to find the oldest: exact when no more wait, else the oldest of the
# next ones in line.
PRIORITIZED_READ = 16
ACL_PATTERN = "{prefix}:*"


def _number(value: object, field: str, job: str) -> Optional[float]:
    """A numeric hash field (bytes), None when missing; a PayloadError naming the job when not a
    number."""
    if value is None or value == b"":
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        raise PayloadError(f"job {show_name(job)} has a {field} that is not a number: {text[:40]!r}") from None
    if not math.isfinite(number):
        raise PayloadError(f"job {show_name(job)} has a {field} that is not a finite number")
    return number


def _backoff_ms(opts: dict, attempts: float) -> float:
    """The wait BullMQ/Bull put before a retry: `backoff` a number (fixed ms) or {type, delay};
    exponential doubles from `delay` at each attempt; a custom strategy is unknown (0)."""
    backoff = opts.get("backoff")
    if isinstance(backoff, bool):
        return 0.0
    if isinstance(backoff, (int, float)):
        return float(backoff)
    if not isinstance(backoff, dict):
        return 0.0
    delay = backoff.get("delay")
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not math.isfinite(delay):
        return 0.0
    kind = backoff.get("type")
    if kind == "fixed":
        return float(delay)
    if kind == "exponential":
        return float(2 ** max(0, min(int(attempts) - 1, 60)) * delay)
    return 0.0


def _opts(raw: object) -> dict:
    if not isinstance(raw, bytes):
        return {}
    try:
        value = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return {}  # opts only refines the ready time: without it, timestamp + delay
    return value if isinstance(value, dict) else {}


def job_ready_ms(fields: Sequence[object], job: str) -> float:
    """When a waiting job became ready to run, in epoch ms, from its hash's JOB_FIELDS.

    - A job never run: `timestamp` (creation, ms) plus its delay: the `delay` field, which BullMQ
      4+ resets to 0 when it promotes the job, so then `opts.delay`, the delay it was added with.
    - A job retried (`atm` attempts made, `processedOn` its last start): that start plus the
      backoff before the retry; the failed attempt's run time is not recorded, so not counted.
    A missing `timestamp` means the hash expired or was deleted: PayloadError, as for any field
    that is not a number.
    """
    timestamp_raw, delay_raw, processed_raw, attempts_raw, opts_raw = fields
    timestamp = _number(timestamp_raw, "timestamp", job)
    if timestamp is None:
        raise PayloadError(f"job {show_name(job)} has no timestamp (its hash expired or was deleted)")
    if timestamp < EARLIEST_PLAUSIBLE * 1000:
        raise PayloadError(f"job {show_name(job)} has a timestamp before the year 2000: {timestamp:.0f}")
    processed = _number(processed_raw, "processedOn", job)
    attempts = _number(attempts_raw, "atm", job) or 0.0
    if processed is not None and attempts > 0:
        backoff = _backoff_ms(_opts(opts_raw), attempts) if opts_raw and b"backoff" in opts_raw else 0.0  # type: ignore[operator]
        return processed + backoff
    delay = _number(delay_raw, "delay", job) or 0.0
    if delay <= 0 and isinstance(opts_raw, bytes) and b'"delay"' in opts_raw:
        original = _opts(opts_raw).get("delay")
        if not isinstance(original, bool) and isinstance(original, (int, float)) and math.isfinite(original):
            delay = max(0.0, float(original))
    return timestamp + delay


def delayed_due_ms(score: object) -> float:
    """The due time (epoch ms) a `delayed` score encodes."""
    try:
        value = int(score)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        value = int(float(score))  # type: ignore[arg-type]
    return float(value // DELAY_SCALE)


def due_bound(now: float) -> int:
    """The highest `delayed` score of a job due at `now` (epoch s): BullMQ's own promotion bound,
    (now_ms + 1) * 4096 - 1."""
    return (int(now * 1000) + 1) * DELAY_SCALE - 1


def queue_latency(ready_times_ms: Iterable[float], now: float) -> float:
    """Seconds the oldest waiting job has waited; 0 with none waiting."""
    oldest = min(ready_times_ms, default=None)
    return 0.0 if oldest is None else latency(oldest / 1000.0, now)


def _ends(tail: object, head: object) -> Tuple[List[bytes], int]:
    """The job ids at a list's two ends (LRANGE -2 -1, LINDEX 0), markers left out, and how many
    jobs BullMQ's own count leaves out (1 when the right end is a marker)."""
    ids: List[bytes] = []
    markers = 0
    if isinstance(tail, list) and tail:
        if tail[-1].startswith(MARKER_MARK):
            markers = 1
            if len(tail) > 1 and not tail[0].startswith(MARKER_MARK):
                ids.append(tail[0])
        else:
            ids.append(tail[-1])
    if isinstance(head, bytes) and not head.startswith(MARKER_MARK) and head not in ids:
        ids.append(head)
    return ids, markers


class _KnownJob(NamedTuple):
    """A waiting job's ready time, and its `processedOn` (set anew at every run)."""

    job_id: bytes
    processed_on: Optional[bytes]
    ready_ms: float


_NOTHING_KNOWN: Tuple[Batch, Tuple[_KnownJob, ...]] = (EMPTY_BATCH, ())


class _RunningJob(NamedTuple):
    """A queue's oldest active job: its id, the packed HGET of its `processedOn` (sent with the
    next tick's first batch), that field as read, and its value (ms)."""

    job_id: bytes
    check: Batch
    raw: bytes
    started_ms: float


class BullMQSettings(NamedTuple):
    # Key prefixes (BullMQ's and Bull's `prefix` option); several: queue names carry theirs.
    prefixes: Tuple[str, ...] = (DEFAULT_PREFIX,)
    # Queues to read besides those the walk finds (a server without SCAN).
    queues: Tuple[str, ...] = ()

    @classmethod
    def from_env(cls, values: Mapping[str, str]) -> "BullMQSettings":
        return cls(
            prefixes=name_list(values.get("QUEUE_METRICS_BULLMQ_PREFIX")) or (DEFAULT_PREFIX,),
            queues=name_list(values.get("QUEUE_METRICS_BULLMQ_QUEUES")),
        )


# Where each read's reply is in a queue's first batch: `wait` and `paused` (LLEN, LRANGE -2 -1,
# LINDEX 0), `prioritized` (ZCARD, ZRANGE), `delayed` (ZCARD, ZRANGE 0 0), `meta.paused`, EXISTS
# `meta-paused`, then the extras (`active`, `failed`, `completed`), then the checks of known jobs.
AT_WAIT, AT_PAUSED, AT_PRIORITIZED, AT_DELAYED, AT_META, AT_META_PAUSED, AT_EXTRAS = 0, 3, 6, 8, 10, 11, 12
SIZE_READS = (
    (AT_WAIT, 3, WAIT_KEY, "a list"),
    (AT_PAUSED, 3, PAUSED_KEY, "a list"),
    (AT_PRIORITIZED, 2, PRIORITIZED_KEY, "a sorted set"),
    (AT_DELAYED, 2, DELAYED_KEY, "a sorted set"),
    (AT_META, 1, META_KEY, "a hash"),
    (AT_META_PAUSED, 1, META_PAUSED_KEY, "a string"),
)
FIGURES_CACHED = 4096
# Extras: the oldest active job (workers LPUSH at start), at the end of the extras' reads.
AT_OLDEST_ACTIVE = AT_EXTRAS + 3
# The keys a lean first batch asks EXISTS of, and the replies it stands for when none exists.
RARE_KEYS = (PAUSED_KEY, PRIORITIZED_KEY, DELAYED_KEY, META_PAUSED_KEY)
LEAN_AT_GATE = 4
# What the paused, prioritized and delayed reads answer for absent keys; `meta-paused`'s EXISTS: 0.
ABSENT_READS: List[object] = [0, [], None, 0, [], 0, []]
EXTRA_FIGURES = (("active", "a list"), ("failed", "a sorted set"), ("completed", "a sorted set"))


class BullMQ:
    name = NAME
    workers = None  # workers are Redis client names (CLIENT LIST), not keys

    def __init__(self, settings: Optional[BullMQSettings] = None, extras: bool = True) -> None:
        self.settings = settings or BullMQSettings()
        self.extras = extras
        prefixes = self.settings.prefixes
        # One prefix: queues are shown by name; several: as `<prefix>:<name>`.
        self._single = len(prefixes) == 1
        self._key_before = f"{prefixes[0]}:" if self._single else ""
        self.key_patterns = tuple(ACL_PATTERN.format(prefix=glob_escape(prefix)) for prefix in prefixes)
        # Several prefixes need one pattern for them all: `*:id`, keys kept under the prefixes only.
        self._scan = f"{glob_escape(prefixes[0])}:*{ID_KEY}" if self._single else f"*{ID_KEY}"
        before = encode_key(self._key_before)

        def key(after: str) -> NameKey:
            return NameKey(before, encode_key(after))

        commands: List[Tuple[object, ...]] = [
            ("LLEN", key(WAIT_KEY)),
            ("LRANGE", key(WAIT_KEY), -2, -1),
            ("LINDEX", key(WAIT_KEY), 0),
            ("LLEN", key(PAUSED_KEY)),
            ("LRANGE", key(PAUSED_KEY), -2, -1),
            ("LINDEX", key(PAUSED_KEY), 0),
            ("ZCARD", key(PRIORITIZED_KEY)),
            ("ZRANGE", key(PRIORITIZED_KEY), 0, PRIORITIZED_READ - 1, "WITHSCORES"),
            ("ZCARD", key(DELAYED_KEY)),
            ("ZRANGE", key(DELAYED_KEY), 0, 0, "WITHSCORES"),
            ("HGET", key(META_KEY), PAUSED_FIELD),
            ("EXISTS", key(META_PAUSED_KEY)),
        ]
        if extras:
            commands += [
                ("LLEN", key(ACTIVE_KEY)),
                ("ZCARD", key(FAILED_KEY)),
                ("ZCARD", key(COMPLETED_KEY)),
                ("LINDEX", key(ACTIVE_KEY), -1),
            ]
        self._template = BatchTemplate(*commands)
        # The lean first batch of a queue whose rarer keys (a `paused` list, `prioritized`,
        # `delayed`, `meta-paused`) were all absent at the last tick: one EXISTS of them all in
        # their place, so a common queue costs nine reads, not seventeen (the replies parsed are
        # most of a tick's CPU). When the EXISTS finds one, the full batch is read at once.
        lean = [*commands[:3], commands[AT_META], ("EXISTS", *(key(name) for name in RARE_KEYS)), *commands[AT_EXTRAS:]]
        self._lean_template = BatchTemplate(*lean)
        self._lean: Set[str] = set()
        # Figures by their values: most queues share a few.
        self._figures: Dict[Tuple[int, ...], Tuple[Figure, ...]] = {}
        # Queues (as shown) the walk found; those of the pass under way.
        self._walked: Set[str] = set()
        self._names: Tuple[str, ...] = tuple(sorted(set(self.settings.queues)))
        self.paused_seen = 0
        # Per queue, the last tick's candidate jobs and the packed check of each.
        self._known: Dict[str, Tuple[Batch, Tuple[_KnownJob, ...]]] = {}
        # Per queue with a job running, the oldest active job's id and the packed HGET of its
        # `processedOn`, sent with the next tick's first batch.
        self._active: Dict[str, _RunningJob] = {}
        # `running` and `due` figures by their values: most queues share a few.
        self._counts_made: Dict[Tuple[int, int], Tuple[Figure, ...]] = {}

    # ---- discovery

    @property
    def scan_pattern(self) -> str:
        return self._scan

    def queue_of_key(self, key: str) -> Optional[str]:
        """The queue (as shown) whose job counter `key` is; None for a key of no prefix of ours."""
        if not key.endswith(ID_KEY):
            return None
        # The longest prefix first: `bull:a` before `bull`.
        for prefix in sorted(self.settings.prefixes, key=len, reverse=True):
            if key.startswith(prefix + ":"):
                name = key[len(prefix) + 1 : -len(ID_KEY)]
                if not name:
                    return None
                return name if self._single else f"{prefix}:{name}"
        return None

    def found_keys(self, keys: Iterable[str], complete: bool) -> None:
        found = {queue for queue in map(self.queue_of_key, keys) if queue is not None}
        if complete:
            # A job counter is never deleted but with its queue (obliterate): not found, gone.
            self._walked = found
        else:
            self._walked |= found
        self._names = tuple(sorted(self._walked | set(self.settings.queues)))
        if complete:
            names = set(self._names)
            self._known = {queue: known for queue, known in self._known.items() if queue in names}
            self._active = {queue: known for queue, known in self._active.items() if queue in names}
            self._lean &= names

    def without_walk(self) -> Optional[str]:
        if self.settings.queues:
            return None
        return bullmq_queues_unseen_without_walk()

    def registry_batch(self) -> Batch:
        return EMPTY_BATCH

    def queues(self, replies: list, errors: ErrorLog) -> Found:
        self.paused_seen = 0  # counted anew at each tick
        walked = f"the keyspace walk found {len(self._walked)} queue(s) ({self._scan})" if self._walked else None
        return Found(self._names, evidence(walked, "QUEUE_METRICS_BULLMQ_QUEUES", bool(self.settings.queues)))

    # ---- one queue

    def _job_prefix(self, queue: str) -> bytes:
        return encode_key(self._key_before + queue + ":")

    def read_queue(self, queue: str, errors: ErrorLog) -> QueueReader:
        name = encode_key(queue)
        lean = queue in self._lean
        checks, known = self._known.get(queue, _NOTHING_KNOWN)
        active_known = self._active.get(queue) if self.extras else None
        tail = Batch(b"", 0)
        if known:
            tail = Batch(checks.packed, checks.replies)
        if active_known is not None:
            tail = Batch(tail.packed + active_known.check.packed, tail.replies + 1)
        head = (self._lean_template if lean else self._template).batch(name)
        replies = yield Batch(head.packed + tail.packed, head.replies + tail.replies)
        values = replies.values
        if lean:
            if values[LEAN_AT_GATE] == 0:
                # None of the rarer keys: their replies are what absent keys give.
                values = [*values[:AT_PAUSED], *ABSENT_READS, values[AT_PAUSED], 0, *values[LEAN_AT_GATE + 1 :]]
            else:
                # One of them appeared: the full batch, in this tick's next round trip.
                first = self._template.batch(name)
                replies = yield Batch(first.packed + tail.packed, first.replies + tail.replies)
                values = replies.values
        if ReplyError in map(type, values[:AT_EXTRAS]):
            self._size_unknown(queue, values, errors)
            return None
        wait_size, wait_tail, wait_head, paused_size, paused_tail, paused_head = values[:AT_PRIORITIZED]
        prioritized, prioritized_first, delayed, delayed_first = values[AT_PRIORITIZED:AT_META]
        if paused_size or prioritized or delayed or values[AT_META_PAUSED]:
            self._lean.discard(queue)
        else:
            self._lean.add(queue)
        wait_ids, wait_markers = _ends(wait_tail, wait_head)
        job_ids = wait_ids
        # BullMQ's count: a list of one marker counts 0, else one less.
        waiting = wait_size - wait_markers
        if paused_size:
            paused_ids, paused_markers = _ends(paused_tail, paused_head)
            waiting += paused_size - paused_markers
            job_ids = wait_ids + [job_id for job_id in paused_ids if job_id not in wait_ids]
        if prioritized_first:
            oldest = _oldest_prioritized(prioritized_first)
            if oldest is not None and oldest not in job_ids:
                job_ids = [*job_ids, oldest]
        # Jobs read at the last tick whose `processedOn` is the same: neither run nor retried
        # since, so the same ready time.
        still: Dict[bytes, _KnownJob] = {}
        if known:
            width = self._template.replies
            for job, check in zip(known, values[width : width + checks.replies]):
                if check == job.processed_on and job.job_id in job_ids:
                    still[job.job_id] = job
        due_first: Optional[float] = None
        if delayed_first:
            due_first = delayed_due_ms(delayed_first[1])
            if due_first > replies.now * 1000:
                due_first = None
        job_prefix = self._job_prefix(queue)
        unknown = [job_id for job_id in job_ids if job_id not in still] if still else job_ids
        commands: List[Tuple[object, ...]] = []
        if due_first is not None:
            commands.append(("ZCOUNT", job_prefix + DELAYED_KEY[1:].encode(), "-inf", due_bound(replies.now)))
        commands += [("HMGET", job_prefix + job_id, *JOB_FIELDS) for job_id in unknown]
        # The oldest active job, and its `processedOn` when the last tick read the same job.
        running_job = values[AT_OLDEST_ACTIVE] if self.extras else None
        started: object = None
        if isinstance(running_job, bytes):
            if active_known is not None and active_known.job_id == running_job:
                started = values[-1]
            else:
                commands.append(("HGET", job_prefix + running_job, CHECK_FIELD))
                active_known = None
        due = 0
        ready: List[float] = []
        now = replies.now
        answers: list = []
        if commands:
            follow = yield batch(*commands)
            answers = follow.values
            now = follow.now
            if isinstance(running_job, bytes) and active_known is None:
                started = answers[-1]
                answers = answers[:-1]
            if due_first is not None:
                counted = answers[0]
                answers = answers[1:]
                if isinstance(counted, ReplyError):
                    errors.about_queue(
                        NAME, queue, f"due delayed jobs: {describe_reply_error(counted, 'a sorted set')}"
                    )
                    return None
                due = counted
                if due:
                    ready.append(due_first)
        seconds = self._latency(queue, job_prefix, unknown, answers, still, ready, now, errors)
        paused = 1 if (values[AT_META] == b"1" or values[AT_META_PAUSED]) else 0
        self.paused_seen += paused
        extras = tuple(values[AT_EXTRAS : AT_EXTRAS + 3]) if self.extras else ()
        shape = (delayed - due, prioritized, paused, *extras)
        figures = self._figures.get(shape)  # type: ignore[arg-type]
        if figures is None:
            figures = self._make_figures(queue, shape, errors)
        if self.extras:
            figures += self._issue_figures(
                queue, job_prefix, values[AT_EXTRAS], running_job, started, due, due_first, now, errors
            )
        return QueueSample(NAME, queue, waiting + prioritized + due, seconds, figures)

    def _issue_figures(
        self,
        queue: str,
        job_prefix: bytes,
        active: object,
        running_job: object,
        started: object,
        due: int,
        due_first: Optional[float],
        now: float,
        errors: ErrorLog,
    ) -> Tuple[Figure, ...]:
        """`running`, `running_age`, `due`, `due_age` (see the module's docstring); an age that
        cannot be known is left out with the reason."""
        counts = (active, due)
        figures = self._counts_made.get(counts)  # type: ignore[arg-type]
        if figures is None:
            # `running` is left out when `active` could not be read (said with `active`).
            made = [] if isinstance(active, ReplyError) else [Figure("running", active)]  # type: ignore[arg-type]
            figures = (*made, Figure("due", due))
            if not isinstance(active, ReplyError):
                if len(self._counts_made) >= FIGURES_CACHED:
                    self._counts_made.clear()
                self._counts_made[counts] = figures  # type: ignore[index]
        if isinstance(running_job, bytes):
            age = self._running_age(queue, job_prefix, running_job, started, now, errors)
            if age is not None:
                figures += (Figure("running_age", age, UNIT_SECONDS),)
        elif self._active:
            self._active.pop(queue, None)
        if due and due_first is not None:
            figures += (Figure("due_age", latency(due_first / 1000.0, now), UNIT_SECONDS),)
        return figures

    def _running_age(
        self, queue: str, job_prefix: bytes, job_id: bytes, started: object, now: float, errors: ErrorLog
    ) -> Optional[float]:
        known = self._active.get(queue)
        if known is not None and known.job_id == job_id and known.raw == started:
            return latency(known.started_ms / 1000.0, now)  # the same job, still running
        job = decode_name(job_id)
        try:
            if isinstance(started, ReplyError):
                raise PayloadError(f"job {show_name(job)}: {describe_reply_error(started, 'a hash')}")
            started_ms = _number(started, "processedOn", job)
            if started_ms is None:
                raise PayloadError(f"active job {show_name(job)} has no processedOn (its hash expired or was deleted)")
            if started_ms < EARLIEST_PLAUSIBLE * 1000:
                raise PayloadError(f"job {show_name(job)} has a processedOn before the year 2000: {started_ms:.0f}")
        except PayloadError as error:
            errors.about_queue(NAME, queue, f"running_age unknown: {error}")
            self._active.pop(queue, None)
            return None
        check = (
            known.check
            if known is not None and known.job_id == job_id
            else batch(("HGET", job_prefix + job_id, CHECK_FIELD))
        )
        self._active[queue] = _RunningJob(job_id, check, started, started_ms)  # type: ignore[arg-type]
        return latency(started_ms / 1000.0, now)

    def _make_figures(self, queue: str, shape: tuple, errors: ErrorLog) -> Tuple[Figure, ...]:
        figures = [Figure("delayed", shape[0]), Figure("prioritized", shape[1]), Figure("paused", shape[2], UNIT_RATIO)]
        failed = False
        for name, reply, kind in zip(
            ("active", "failed", "completed"), shape[3:], ("a list", "a sorted set", "a sorted set")
        ):
            if isinstance(reply, ReplyError):
                errors.about_queue(NAME, queue, f"{name} jobs: {describe_reply_error(reply, kind)}")
                failed = True
            else:
                figures.append(Figure(name, reply))
        made = tuple(figures)
        if not failed:
            if len(self._figures) >= FIGURES_CACHED:
                self._figures.clear()
            self._figures[shape] = made  # type: ignore[index]
        return made

    def _size_unknown(self, queue: str, values: list, errors: ErrorLog) -> None:
        """Says which read failed (a key of the wrong type): the size cannot be known."""
        for at, count, key, kind in SIZE_READS:
            for reply in values[at : at + count]:
                if isinstance(reply, ReplyError):
                    shown = show_name(self._key_before + queue + key)
                    errors.about_queue(NAME, queue, f"{shown}: {describe_reply_error(reply, kind)}")
                    return

    def _latency(
        self,
        queue: str,
        job_prefix: bytes,
        unknown: Sequence[bytes],
        answers: list,
        still: Dict[bytes, "_KnownJob"],
        ready: List[float],
        now: float,
        errors: ErrorLog,
    ) -> Optional[float]:
        """The queue's latency from its candidate jobs' ready times (those still known, and those
        read now), kept for the next tick; None with the reason said when a job cannot be read."""
        jobs = list(still.values())
        for job_id, fields in zip(unknown, answers):
            job = decode_name(job_id)
            if isinstance(fields, ReplyError):
                reason = describe_reply_error(fields, "a hash")
                errors.about_queue(NAME, queue, f"latency unknown: job {show_name(job)}: {reason}")
                self._known.pop(queue, None)
                return None
            try:
                jobs.append(_KnownJob(job_id, fields[2], job_ready_ms(fields, job)))
            except PayloadError as error:
                errors.about_queue(NAME, queue, f"latency unknown: {error}")
                self._known.pop(queue, None)
                return None
        if jobs:
            kept = tuple(jobs)
            last = self._known.get(queue)
            if last is None or last[1] != kept:
                self._known[queue] = (batch(*[("HGET", job_prefix + job.job_id, CHECK_FIELD) for job in kept]), kept)
        else:
            self._known.pop(queue, None)
        ready.extend(job.ready_ms for job in jobs)
        return queue_latency(ready, now)

    def read_system(self, errors: ErrorLog) -> Optional[SystemReader]:
        return None

    def describe(self) -> List[str]:
        prefixes = ", ".join(repr(prefix) for prefix in self.settings.prefixes)
        lines = [
            f"key prefix {prefixes} (QUEUE_METRICS_BULLMQ_PREFIX for others); queues found by SCAN MATCH {self._scan}"
        ]
        if self.paused_seen:
            lines.append(f"paused queues: {self.paused_seen} (their latency grows; alert on `paused` apart)")
        return lines


def _oldest_prioritized(members_and_scores: object) -> Optional[bytes]:
    """The job of the lowest insertion counter (score mod 2^32) among ZRANGE ... WITHSCORES."""
    if not isinstance(members_and_scores, list) or not members_and_scores:
        return None
    best: Optional[bytes] = None
    best_counter = math.inf
    for member, score in zip(members_and_scores[0::2], members_and_scores[1::2]):
        try:
            counter = int(score) % PRIORITY_COUNTER
        except ValueError:
            counter = int(float(score)) % PRIORITY_COUNTER
        if counter < best_counter:
            best, best_counter = member, counter
    return best


SYSTEM = SystemSpec(NAME, BullMQSettings.from_env, BullMQ)  # type: ignore[arg-type]
