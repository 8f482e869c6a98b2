"""procrastinate (Python): jobs are rows of `procrastinate_jobs`, in Postgres.

Table (procrastinate 3.10, procrastinate/sql/schema.sql): `id` (bigserial), `queue_name`,
`priority` (higher first; since 2.0.3), `lock`, `status` (`todo`, `doing`, `succeeded`,
`failed`, `cancelled`, `aborted`), `scheduled_at` (NULL: run now). There is no enqueue time in
the row: triggers write `procrastinate_events(job_id, type, at)`, `deferred` at insert (`at`
defaults to now()), `deferred_for_retry` and `retried` when a job goes back to `todo`. Finished
jobs stay (unless the app deletes them), so the table grows: every read below goes through the
partial indexes on `status = 'todo'` and `status = 'doing'`, whose size is what waits and runs.

Which job a worker takes is `procrastinate_fetch_job_v2` (schema.sql; 3.3's migration
03.03.00_01_pre_priority_lock_fetch_job.sql): `todo`, due (`scheduled_at IS NULL OR
scheduled_at <= now()`), and not held back by its `lock`: no `doing` job with the same lock, and
no `todo` job (due or not) with the same lock ahead of it (higher priority, or the same priority
and a lower id; before 3.3, a lower id alone). Of the jobs sharing a lock one at a time may run,
so `size` counts what a worker would take now: each lock's head, plus every job without a lock;
the others, due but held back by their lock, are the figure `blocked`. procrastinate's own
figure (`list_queues`, sql/queries.sql: a count per status) counts as `todo` the jobs scheduled
for later and the blocked ones too.

Ready time: a retry always sets `scheduled_at` (procrastinate_retry_job_v2 sets it to
`retry_at`, which the manager fills with now() when none is asked), so a job's ready time is
its `scheduled_at`, else the `at` of its latest deferred/deferred_for_retry/retried event.
Latency = now() minus the oldest of these per queue: the least `scheduled_at` of the ready jobs,
and the event of the lowest-id ready job without one (its id order is its defer order), looked up
through the events' `job_id` index: one lookup per queue.

Figures per queue: `scheduled` (todo, not yet due), `blocked`, `running` (doing), `running_age`
(seconds since the earliest running job started: the `at` of its latest `started` event, which the
status trigger writes when a worker takes it; one lookup per running job through the events'
`job_id` index; omitted when none runs). procrastinate's workers table (3.x:
`procrastinate_workers`, id and heartbeat) does not say which queues a worker takes: no
`consumers`; and a due job is in `size` already (no scheduler moves it): no `due`. `failed` needs
the whole table (no index serves `status = 'failed'`): only with
QUEUE_METRICS_PROCRASTINATE_TABLE_SCAN=true (its cost is in BENCHMARKS.md).
"""

from __future__ import annotations

from typing import List, Mapping, NamedTuple, Optional

from queue_metrics.errors import TableShapeError
from queue_metrics.setting_values import boolean
from queue_metrics.systems.contract import SystemSpec
from queue_metrics.systems.sql import Columns

NAME = "procrastinate"
JOBS = "procrastinate_jobs"
EVENTS = "procrastinate_events"
NEEDED = frozenset({"id", "queue_name", "status", "scheduled_at", "lock"})
EVENTS_NEEDED = frozenset({"job_id", "type", "at"})
# Added by procrastinate 2.0.3 (migration 02.00.03_01_add_job_priority.sql).
PRIORITY = "priority"
# The events that put a job (back) in `todo` (schema.sql, the status triggers).
READY_EVENTS = ("deferred", "deferred_for_retry", "retried")
# The event of a job taken by a worker (todo -> doing, the status trigger).
STARTED_EVENT = "started"
TABLE_SCAN_SETTING = "QUEUE_METRICS_PROCRASTINATE_TABLE_SCAN"


class ProcrastinateSettings(NamedTuple):
    # Also count failed jobs, reading the whole jobs table each tick.
    table_scan: bool = False

    @classmethod
    def from_env(cls, values: Mapping[str, str]) -> "ProcrastinateSettings":
        return cls(boolean(values, TABLE_SCAN_SETTING, default=False))


def ready_time_of(job: str) -> str:
    """The SQL of the time the job of id `job` last went to `todo` (NULL for none)."""
    types = ", ".join(f"'{name}'" for name in READY_EVENTS)
    return f"(SELECT max(e.at) FROM {EVENTS} e WHERE e.job_id = {job} AND e.type IN ({types}))"


def started_at_of(job: str) -> str:
    """The SQL of a subquery giving `at`, when the job of id `job` last went to `doing` (its
    `started` event), one row (NULL for none)."""
    return f"(SELECT max(e.at) AS at FROM {EVENTS} e WHERE e.job_id = {job} AND e.type = '{STARTED_EVENT}')"


class Procrastinate:
    """A `systems.sql.SqlSystem`."""

    name = NAME
    tables = (JOBS, EVENTS)

    def __init__(self, settings: Optional[ProcrastinateSettings], extras: bool) -> None:
        self.settings = settings or ProcrastinateSettings()
        self.extras = extras

    def _shape(self, columns: Columns) -> Optional[frozenset]:
        found = columns.get(JOBS)
        if found is None:
            return None
        if not NEEDED <= found:
            raise TableShapeError(f"table {JOBS} has no column {', '.join(sorted(NEEDED - found))}")
        events = columns.get(EVENTS)
        if events is None:
            raise TableShapeError(f"table {EVENTS} is missing")
        if not EVENTS_NEEDED <= events:
            raise TableShapeError(f"table {EVENTS} has no column {', '.join(sorted(EVENTS_NEEDED - events))}")
        return found

    def query(self, columns: Columns) -> Optional[str]:
        found = self._shape(columns)
        if found is None:
            return None
        if PRIORITY in found:
            # 3.3 on: a lock's jobs run by priority, then id; a `doing` one holds the lock.
            head = "row_number() OVER (PARTITION BY j.lock ORDER BY j.priority DESC, j.id) = 1"
        else:
            head = "row_number() OVER (PARTITION BY j.lock ORDER BY j.id) = 1"
        # At most one `doing` job per lock (the unique index procrastinate_jobs_lock_idx_v1):
        # joining them adds no row.
        doing_locks = f"SELECT lock FROM {JOBS} WHERE status = 'doing' AND lock IS NOT NULL"
        held = f"j.lock IS NOT NULL AND (NOT {head} OR d.lock IS NOT NULL)"
        ready = "due AND NOT held"
        todo = (
            f"SELECT j.id, j.queue_name, j.scheduled_at, "
            f"(j.scheduled_at IS NULL OR j.scheduled_at <= now()) AS due, {held} AS held "
            f"FROM {JOBS} j LEFT JOIN ({doing_locks}) d ON d.lock = j.lock WHERE j.status = 'todo'"
        )
        waiting = (
            f"SELECT queue_name AS queue, count(*) FILTER (WHERE {ready}) AS size, "
            f"min(scheduled_at) FILTER (WHERE {ready}) AS first_scheduled, "
            f"min(id) FILTER (WHERE {ready} AND scheduled_at IS NULL) AS first_plain, "
            f"count(*) FILTER (WHERE NOT due) AS scheduled, "
            f"count(*) FILTER (WHERE due AND held) AS blocked "
            f"FROM todo GROUP BY 1"
        )
        latency = f"extract(epoch FROM now() - least(w.first_scheduled, {ready_time_of('w.first_plain')}))"
        if not self.extras:
            return (
                f"WITH todo AS ({todo}), waiting AS ({waiting}) "
                f"SELECT w.queue AS queue, w.size AS size, {latency} AS latency FROM waiting w"
            )
        parts = [f"todo AS ({todo})", f"waiting AS ({waiting})"]
        parts.append(
            f"running AS (SELECT j.queue_name AS queue, count(*) AS n, min(s.at) AS since FROM {JOBS} j "
            f"LEFT JOIN LATERAL {started_at_of('j.id')} AS s ON true WHERE j.status = 'doing' GROUP BY 1)"
        )
        joins = "FROM waiting w FULL JOIN running r ON r.queue = w.queue"
        queue = "coalesce(w.queue, r.queue)"
        failed = ""
        if self.settings.table_scan:
            parts.append(
                f"failed AS (SELECT queue_name AS queue, count(*) AS n FROM {JOBS} WHERE status = 'failed' GROUP BY 1)"
            )
            joins += f" FULL JOIN failed f ON f.queue = {queue}"
            queue = "coalesce(w.queue, r.queue, f.queue)"
            failed = ", coalesce(f.n, 0) AS failed"
        return (
            f"WITH {', '.join(parts)} "
            f"SELECT {queue} AS queue, coalesce(w.size, 0) AS size, {latency} AS latency, "
            f"coalesce(w.scheduled, 0) AS scheduled, coalesce(w.blocked, 0) AS blocked, "
            f"coalesce(r.n, 0) AS running, extract(epoch FROM now() - r.since)::float8 AS running_age{failed} {joins}"
        )

    def describe(self, columns: Columns) -> List[str]:
        try:
            found = self._shape(columns)
        except TableShapeError as error:
            return [f"procrastinate: {error}: not read"]
        if found is None:
            return []
        order = "priority, then id" if PRIORITY in found else "id (before 2.0.3: no priority)"
        failed = "failed counted (whole-table scan)" if self.settings.table_scan else "failed not counted"
        return [f"procrastinate: tables {JOBS}, {EVENTS}; a lock's jobs in order of {order}; {failed}"]


SYSTEM = SystemSpec(NAME, ProcrastinateSettings.from_env, Procrastinate, datastore="postgres")  # type: ignore[arg-type]
