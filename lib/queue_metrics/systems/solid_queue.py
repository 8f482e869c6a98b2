"""Solid Queue (Rails 8's default): a job is a row of `solid_queue_jobs` plus one execution row
saying where it stands, in Postgres (often its own `queue` database: HEROKU_POSTGRESQL_<COLOR>_URL).

Tables (rails/solid_queue 1.5.0, lib/generators/solid_queue/install/templates/db/queue_schema.rb;
the columns read here are the same since 0.2's single migration): `solid_queue_jobs` keeps every
job, finished ones too (`finished_at` set, until `clear_finished_jobs_after`), so it is the table
that grows and is read only through its primary key. Executions are small, and hold `queue_name`
themselves except claimed and failed ones:
- `ready_executions`: a worker may take it now. `created_at` is when it became ready: written at
  enqueue (Job#prepare_for_execution -> dispatch -> ready), by the dispatcher moving a due
  scheduled job, by a retry, or by the release of a blocked one.
- `scheduled_executions`: waits for `scheduled_at`; the dispatcher moves due ones (batches of
  500, every second by default: Dispatcher#poll, ScheduledExecution.dispatch_next_batch).
- `claimed_executions`: running (queue from its job); `failed_executions`: failed (idem).
- `blocked_executions`: held back by a concurrency limit (`limits_concurrency`) until the job
  holding the key's semaphore finishes (it then releases the next one itself), or, as a safety
  net, until `expires_at`: the dispatcher's concurrency maintenance (every 600 s by default)
  takes the keys of expired blocked executions, drops expired semaphores, and releases ONE
  blocked execution per key whose semaphore is free (absent, or value > 0): BlockedExecution.unblock,
  .releasable, .release_one. An expired one whose key's semaphore is still held by a running job
  (a fresh semaphore of value 0) stays blocked: that is the limit working, not a job ready.
- `pauses`: a paused queue is skipped by every worker (QueueSelector#queue_names).

Per queue, `size` = ready executions + due scheduled executions (the dispatcher's next step) +
one per concurrency key that the next maintenance will release (an expired blocked execution
whose key's semaphore is free): what is ready to run now. HireFire counts every expired blocked
execution (and the claimed ones): that counts a burst behind a limit of 1 as ready once the
burst outlives `concurrency_duration`, while only one of them can run. Solid Queue's own
`Queue#size` counts ready executions only. `latency` = now - the oldest ready time among them:
ready `created_at`, due `scheduled_at`, the key's expiry (or its expired semaphore's, if later).
A paused queue is counted as Solid Queue's `Queue#size` and `#latency` count it (its jobs do
wait; its latency keeps growing), with `paused` = 1 for who wants to leave it out.

Figures: `scheduled` (not yet due), `running` (claimed), `failed`, `blocked` (the blocked
executions not counted in size), `paused` (1/0). One SELECT: a UNION ALL of per-table
aggregates, grouped again per queue; a queue seen only in `pauses` is reported too.

With extras, the figures every system names alike (issue 27):
- `running_age`: seconds since the oldest claimed execution was claimed (its `created_at`: the
  worker's claim, just before it runs the job); omitted when none runs.
- `due` and `due_age`: the scheduled executions already due that no dispatcher has moved yet,
  and seconds since the earliest fell due. They are counted in `size` too (a running dispatcher
  makes them ready within a second): a `due_age` above a few seconds says no dispatcher runs.
- `consumers`: the live workers whose queues take the queue. A worker's row in
  `solid_queue_processes` (kind `Worker`, heartbeat within SolidQueue.process_alive_threshold,
  5 minutes by default: older ones are what the supervisor prunes as dead) carries in `metadata`
  (JSON) `"queues":"a,b"` (Worker#metadata: its queues joined by commas); `*` is every queue and
  `prefix*` the queues starting with the prefix (QueueSelector). The list is read with a regular
  expression, so a malformed `metadata` cannot fail the SELECT: when a live worker's queues
  cannot be read (no `queues`, or an escaped character), `consumers` is left out of every queue
  rather than counted short. Read only when the role may SELECT `solid_queue_processes`
  (`GRANT SELECT ON solid_queue_processes`): else no `consumers`.
"""

from __future__ import annotations

from typing import List, Mapping, Optional

from queue_metrics.errors import TableShapeError
from queue_metrics.systems.contract import SystemSpec
from queue_metrics.systems.sql import READABLE, Columns

NAME = "solid_queue"
JOBS = "solid_queue_jobs"
READY = "solid_queue_ready_executions"
SCHEDULED = "solid_queue_scheduled_executions"
CLAIMED = "solid_queue_claimed_executions"
FAILED = "solid_queue_failed_executions"
BLOCKED = "solid_queue_blocked_executions"
SEMAPHORES = "solid_queue_semaphores"
PAUSES = "solid_queue_pauses"
PROCESSES = "solid_queue_processes"

# The columns read, per table (queue_schema.rb, 1.5.0; since 0.2).
NEEDED = {
    READY: frozenset({"queue_name", "created_at"}),
    SCHEDULED: frozenset({"queue_name", "scheduled_at"}),
    BLOCKED: frozenset({"queue_name", "concurrency_key", "expires_at"}),
    SEMAPHORES: frozenset({"key", "value", "expires_at"}),
    JOBS: frozenset({"id", "queue_name"}),
    CLAIMED: frozenset({"job_id"}),
    FAILED: frozenset({"job_id"}),
    PAUSES: frozenset({"queue_name"}),
}
FIGURES = ("scheduled", "running", "failed", "blocked", "paused", "due")
# Per branch, the times the ages are made from (NULL where a branch has none).
TIMES = ("due_since", "running_since")
# Workers' rows (processes table: the same columns since 0.2), for `consumers`.
PROCESSES_NEEDED = frozenset({"kind", "last_heartbeat_at", "metadata"})
# SolidQueue.process_alive_threshold's default: a heartbeat older than this is a dead process.
ALIVE_THRESHOLD = "5 minutes"
# A worker's queues in its metadata (JSON.generate: no spaces); NULL when absent. A value with a
# backslash (an escaped character) is not decoded here: it makes the figure unknown.
QUEUES_IN_METADATA = r"""substring(metadata from '"queues":"((?:[^"\\]|\\.)*)"')"""


def settings_from_env(values: Mapping[str, str]) -> None:
    """No setting: Solid Queue's intervals and limits change when a job gets ready, not whether
    it is; its table names are fixed (SolidQueue::Record)."""
    return None


def _row(queue: str, size: str, since: str, **figures: str) -> str:
    """One branch of the UNION ALL: its columns in the order of the outer SELECT."""
    values = [figures.get(name, "0") for name in FIGURES] + [figures.get(name, "NULL::timestamp") for name in TIMES]
    return f"SELECT {queue} AS queue_name, {size} AS size, {since} AS since, " + ", ".join(
        f"{value} AS {name}" for name, value in zip(FIGURES + TIMES, values)
    )


# An expired blocked execution whose key's semaphore is free: absent, open (value > 0), or
# expired (the maintenance deletes it before releasing: ConcurrencyMaintenance#expire_semaphores).
RELEASABLE = "b.expires_at < now() AND (s.key IS NULL OR s.value > 0 OR s.expires_at < now())"
# When it became releasable: its expiry, or its semaphore's when that ran out later.
RELEASABLE_SINCE = "greatest(b.expires_at, CASE WHEN s.value > 0 THEN NULL ELSE s.expires_at END)"


def branches(extras: bool, claimed_since: bool = True) -> List[str]:
    """The per-table aggregates, each grouped by queue."""
    due = "scheduled_at <= now()"
    parts = [
        _row("queue_name", "count(*)", "min(created_at)") + f" FROM {READY} GROUP BY queue_name",
        _row(
            "queue_name",
            f"count(*) FILTER (WHERE {due})",
            f"min(scheduled_at) FILTER (WHERE {due})",
            scheduled=f"count(*) FILTER (WHERE NOT {due})",
            due=f"count(*) FILTER (WHERE {due})",
            due_since=f"min(scheduled_at) FILTER (WHERE {due})",
        )
        + f" FROM {SCHEDULED} GROUP BY queue_name",
        _row(
            "b.queue_name",
            f"count(DISTINCT b.concurrency_key) FILTER (WHERE {RELEASABLE})",
            f"min({RELEASABLE_SINCE}) FILTER (WHERE {RELEASABLE})",
            blocked=f"count(*) - count(DISTINCT b.concurrency_key) FILTER (WHERE {RELEASABLE})",
        )
        + f" FROM {BLOCKED} b LEFT JOIN {SEMAPHORES} s ON s.key = b.concurrency_key GROUP BY b.queue_name",
    ]
    if extras:
        claimed = {"running": "count(*)"}
        if claimed_since:
            claimed["running_since"] = "min(e.created_at)"
        for table, figures in ((CLAIMED, claimed), (FAILED, {"failed": "count(*)"})):
            parts.append(
                _row("j.queue_name", "0", "NULL::timestamp", **figures)
                + f" FROM {table} e JOIN {JOBS} j ON j.id = e.job_id GROUP BY j.queue_name"
            )
        parts.append(_row("queue_name", "0", "NULL::timestamp", paused="1") + f" FROM {PAUSES}")
    return parts


# The live workers and the list of queues each takes.
WORKERS = (
    f"SELECT {QUEUES_IN_METADATA} AS queues FROM {PROCESSES} "
    f"WHERE kind = 'Worker' AND last_heartbeat_at > now() - interval '{ALIVE_THRESHOLD}'"
)
# Per queue (the outer query's `queue_name`): the workers that take it; NULL when a live
# worker's queues cannot be read.
CONSUMERS = (
    "CASE WHEN EXISTS (SELECT 1 FROM workers WHERE queues IS NULL OR strpos(queues, chr(92)) > 0) THEN NULL "
    "ELSE (SELECT count(*) FROM workers w WHERE EXISTS (SELECT 1 FROM unnest(string_to_array(w.queues, ',')) "
    "AS taken(name) WHERE taken.name = '*' OR taken.name = queue_name OR (right(taken.name, 1) = '*' "
    "AND starts_with(queue_name, left(taken.name, -1))))) END"
)


class SolidQueue:
    """A `systems.sql.SqlSystem`."""

    name = NAME
    tables = (*NEEDED, PROCESSES)

    def __init__(self, settings: None, extras: bool) -> None:
        self.extras = extras

    def _missing(self, columns: Columns) -> Optional[str]:
        """What the tables lack, or None; TableShapeError is raised by the caller."""
        for table, needed in NEEDED.items():
            found = columns.get(table)
            if found is None:
                return f"no table {table}"
            if not needed <= found:
                return f"table {table} has no column {', '.join(sorted(needed - found))}"
        return None

    def query(self, columns: Columns) -> Optional[str]:
        if not any(table in columns for table in NEEDED):
            return None
        missing = self._missing(columns)
        if missing is not None:
            raise TableShapeError(missing)
        figures = ", ".join(f"sum({name}) AS {name}" for name in FIGURES if name != "paused")
        ages = ", ".join(
            f"extract(epoch FROM now() - min({name}_since))::float8 AS {name}_age" for name in ("due", "running")
        )
        workers = PROCESSES_NEEDED | {READABLE} <= columns.get(PROCESSES, frozenset()) and self.extras
        claimed_since = "created_at" in columns.get(CLAIMED, frozenset())
        union = " UNION ALL ".join(branches(self.extras, claimed_since))
        return (
            (f"WITH workers AS ({WORKERS}) " if workers else "") + "SELECT queue_name AS queue, sum(size) AS size, "
            "extract(epoch FROM now() - min(since)) AS latency, "
            f"{figures}, max(paused) AS paused, {ages}, {CONSUMERS if workers else 'NULL::bigint'} AS consumers "
            f"FROM ({union}) AS per_table GROUP BY queue_name"
        )

    def describe(self, columns: Columns) -> List[str]:
        if not any(table in columns for table in NEEDED):
            return []
        missing = self._missing(columns)
        if missing is not None:
            return [f"Solid Queue: {missing}: not read"]
        return [f"Solid Queue: tables {READY} and its siblings (0.2 or later)"]


SYSTEM = SystemSpec(NAME, settings_from_env, SolidQueue, datastore="postgres")  # type: ignore[arg-type]
