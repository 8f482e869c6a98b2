"""Que (Ruby, Postgres only): a job is a row of `que_jobs`; a worker runs it while its session
holds an advisory lock on the job's id.

Table, by schema version (que-rb/que lib/que/migrations/<n>/up.sql, read at 2.4.1):
- 1-3 (Que 0.x): `job_id`, `priority`, `run_at`, `error_count`; 3 adds `queue` (default `''`,
  which migration 4 renames `default`); primary key `(queue, priority, run_at, job_id)`. A job
  run is deleted, a failing one retried forever: nothing finished or failed stays.
- 4 (Que 1.0-1.2), 5 (1.3-1.4: `job_schema_version`), 6-7 (Que 2: `kwargs`): `id`, `queue`
  (default `default`), `run_at`, `error_count`, `finished_at` (a job that called `finish`),
  `expired_at` (retries exhausted); index `que_poll_idx (queue, priority, run_at, id) WHERE
  finished_at IS NULL AND expired_at IS NULL` (5 adds one led by job_schema_version, which 6
  renames que_poll_idx): what is left to run is read through it.

Enqueue (lib/que/job.rb SQL[:insert_job]) writes `run_at = coalesce(the time asked, now())`; a
failure (lib/que/job_methods.rb SQL[:set_error]) bumps `error_count` and sets `run_at` to the
retry's time; an exhausted job gets `expired_at`. So `run_at` is when the job became ready.

Running: the locker takes `pg_try_advisory_lock(id)` (lib/que/locker.rb, lock_jobs; the poller
the same, lib/que/poller.rb) and keeps it until the job is done. A bigint key shows in `pg_locks`
as `locktype = 'advisory'`, `objsubid = 1`, `classid` its high 32 bits and `objid` its low 32
bits, in the lock holder's database. Reading `pg_locks` takes no lock. The locker locks jobs for
its buffer ahead of its workers (up to `maximum_buffer_size`, 8 by default): those count as
running, as they are no longer there for another worker.

Per queue: `size` = not finished, not expired, `run_at <= now()`, not locked (jobs retrying after
an error, whose retry time has come, included: Que's `que_determine_job_state` calls them
`errored`, but a worker takes them); `latency` = now - the oldest `run_at` of those; `scheduled` =
`run_at` in the future and not locked (retries waiting included); `running` = locked; `failed` =
expired (Que 1 and 2). Jobs with another `job_schema_version` (Que 1 rows under Que 2 workers)
are counted: they wait all the same. Expired rows have no index: counting them reads the table
(BENCHMARKS.md); QUEUE_METRICS_EXTRAS=false leaves that out.
`consumers` (Que 1 and 2, with extras): the lockers whose `queues` name the queue. Each running
Que process's locker writes its row in the UNLOGGED table `que_lockers` (migration 4: `pid`, the
locker's backend pid, and `queues text[]`, exact names) and deletes it when it stops; a row of a
process that died is deleted by the next locker's start, so only rows whose `pid` is a session of
the server (`pg_stat_activity`, whose pids any role may see) are counted. Read only when the role
may SELECT `que_lockers`. Que records no start time for a job (the advisory lock has none), so
there is no `running_age`; and no scheduler moves due jobs (a due job is in `size`): no `due`.
"""

from __future__ import annotations

from typing import List, Mapping, Optional

from queue_metrics.errors import TableShapeError
from queue_metrics.systems.contract import SystemSpec
from queue_metrics.systems.sql import READABLE, Columns

NAME = "que"
TABLE = "que_jobs"
# Que 0.x's default queue is '' (migration 3); migration 4 renames it `default`: reported so.
NO_QUEUE = "default"
NEEDED = frozenset({"run_at"})
LOCKERS = "que_lockers"
LOCKERS_NEEDED = frozenset({"pid", "queues"})
# Per queue (the outer query's `queue`): the lockers of live sessions that take it.
CONSUMERS = (
    f"(SELECT count(*) FROM {LOCKERS} l WHERE queue = ANY(l.queues) "
    "AND l.pid IN (SELECT pid FROM pg_catalog.pg_stat_activity))"
)
# The held advisory locks of this database, each as the bigint key it was taken with.
LOCKED_IDS = (
    "SELECT DISTINCT (classid::bigint << 32) | objid::bigint AS locked_id FROM pg_catalog.pg_locks "
    "WHERE locktype = 'advisory' AND objsubid = 1 AND granted "
    "AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())"
)


class QueSettings:
    """Que takes no setting: its schema version shows in its columns."""

    @classmethod
    def from_env(cls, values: Mapping[str, str]) -> Optional["QueSettings"]:
        return None


def schema_of(found: frozenset) -> str:
    """Que's schema version range, from the columns of `que_jobs`."""
    if "kwargs" in found:
        return "6-7 (Que 2)"
    if "job_schema_version" in found:
        return "5 (Que 1.3-1.4)"
    if "finished_at" in found:
        return "4 (Que 1.0-1.2)"
    if "queue" in found:
        return "3 (Que 0.x)"
    return "1-2 (Que 0.x, one queue)"


class Que:
    """A `systems.sql.SqlSystem`."""

    name = NAME
    tables = (TABLE, LOCKERS)

    def __init__(self, settings: object, extras: bool) -> None:
        self.extras = extras

    def query(self, columns: Columns) -> Optional[str]:
        found = columns.get(TABLE)
        if found is None:
            return None
        if "id" in found and {"finished_at", "expired_at"} <= found:
            key, modern = "id", True
        elif "job_id" in found:
            key, modern = "job_id", False
        else:
            raise TableShapeError(f"table {TABLE} has neither id with finished_at and expired_at (Que 1, 2) nor job_id")
        if not NEEDED <= found:
            raise TableShapeError(f"table {TABLE} has no column {', '.join(sorted(NEEDED - found))}")
        if "queue" not in found:
            queue = f"'{NO_QUEUE}'"
        elif modern:
            queue = "queue"
        else:
            queue = f"coalesce(nullif(queue, ''), '{NO_QUEUE}')"
        pending = "finished_at IS NULL AND expired_at IS NULL" if modern else "true"
        free = "locks.locked_id IS NULL"
        ready = f"{free} AND run_at <= now()"
        head = (
            f"SELECT {queue} AS queue, count(*) FILTER (WHERE {ready}) AS size, "
            f"extract(epoch FROM now() - min(run_at) FILTER (WHERE {ready}))::float8 AS latency"
        )
        body = (
            f"FROM {TABLE} LEFT JOIN ({LOCKED_IDS}) AS locks ON locks.locked_id = {TABLE}.{key} "
            f"WHERE {pending} GROUP BY 1"
        )
        if not self.extras:
            return f"{head} {body}"
        pending_part = (
            f"{head}, count(*) FILTER (WHERE {free} AND run_at > now()) AS scheduled, "
            f"count(*) FILTER (WHERE NOT ({free})) AS running, {'0' if modern else 'NULL'}::bigint AS failed {body}"
        )
        if not modern:
            # Que 0.x keeps no failed job: no failed figure.
            return pending_part
        lockers = LOCKERS_NEEDED | {READABLE} <= columns.get(LOCKERS, frozenset())
        return (
            "SELECT queue, sum(size) AS size, max(latency) AS latency, sum(scheduled) AS scheduled, "
            f"sum(running) AS running, sum(failed) AS failed, {CONSUMERS if lockers else 'NULL::bigint'} AS consumers "
            f"FROM (({pending_part}) UNION ALL "
            f"(SELECT {queue}, 0, NULL::float8, 0, 0, count(*) FROM {TABLE} WHERE expired_at IS NOT NULL GROUP BY 1)) "
            "AS per_state GROUP BY queue"
        )

    def describe(self, columns: Columns) -> List[str]:
        found = columns.get(TABLE)
        if found is None:
            return []
        try:
            self.query(columns)
        except TableShapeError as error:
            return [f"Que: {error}: not read"]
        return [f"Que: table {TABLE}, schema {schema_of(found)}"]


SYSTEM = SystemSpec(NAME, QueSettings.from_env, Que, datastore="postgres")  # type: ignore[arg-type]
