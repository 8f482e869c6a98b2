"""GoodJob (Rails, Postgres only): a job is a row of `good_jobs`, kept after it finishes (until
GoodJob's cleanup, 14 days by default), so the table grows and is read only through its partial
indexes.

Table (bensheldon/good_job, lib/generators/good_job/templates/install/migrations/
create_good_jobs.rb.erb; v3.0.0 to v4.19.2): `queue_name`, `scheduled_at`, `performed_at`,
`finished_at`, `error`, `created_at`; from 3.x on `error_event`, `locked_by_id`, `locked_at`
(the process that runs it), `retried_good_job_id` (3.x: the row a retry replaced, its old row
kept finished with the error); 4.15 adds `lock_type`. Every version has the index
`index_good_jobs_on_queue_name_and_scheduled_at (queue_name, scheduled_at) WHERE finished_at IS
NULL`: what has not finished is read through it, whatever the number of finished rows. The
discarded ones are read through `index_good_jobs_on_discarded (finished_at) WHERE finished_at IS
NOT NULL AND error IS NOT NULL` (update migration 12, GoodJob 4.18.2); before it, through the
finished rows' index (their count grows with the table: BENCHMARKS.md).

States, as GoodJob's own scopes say them (app/models/good_job/job.rb, 4.19.2;
base_execution.rb, 3.99.1):
- queued (`size`): `performed_at IS NULL AND finished_at IS NULL AND scheduled_at <= now`. GoodJob
  3 leaves `scheduled_at` NULL for a job enqueued to run now (enqueue_args sets it only for a
  scheduled job; 4 sets it to the enqueue time), so a job became ready at
  `coalesce(scheduled_at, created_at)`, and latency = now - the oldest of those. A row claimed by
  a process (`locked_by_id`, set before `performed_at` by the skip-locked and hybrid lock
  strategies of 4.x) is running, not queued.
- scheduled: unfinished, not started, `scheduled_at` in the future: new scheduled jobs and jobs
  waiting for a retry (GoodJob's `scheduled` and `retried` scopes together).
- running: `performed_at` set (at the start of perform) or claimed, and not finished. A job whose
  process died stays here until another process takes it again, as in GoodJob's `running` scope.
- failed: GoodJob's `discarded`: finished with an error (in 3.x, the last row of its retries).
- paused (1/0): the queue is in `good_job_settings` key `pauses`, value `{"queues": [...]}`
  (GoodJob 4.8's `enable_pauses`, the `exclude_paused` scope). A paused queue's jobs still count in
  `size` and `latency`, as GoodJob's `queued` counts them: they wait, and `paused` says why.
  A queue paused while empty is reported too. Pauses by job class or label are not shown.

- running_age (with extras): seconds since the earliest running job started: its `performed_at`
  (set at the start of perform), or `locked_at` for one claimed and not yet performing (3.99+);
  omitted when none runs. A job whose process died counts until GoodJob takes it again.
GoodJob 4's `good_job_processes` rows hold each process's `state` (jsonb: its schedulers' queue
strings, in GoodJob's own queue syntax with `-` exclusions, `+` ordering and `:threads`): not
parsed here, so no `consumers` yet. A due job is in `size` already: no `due`.
A NULL `queue_name` (possible before GoodJob set `default` at enqueue) is reported as `default`.
One SELECT: per-queue aggregates of the unfinished rows, of the discarded rows, and of the pauses,
put together with UNION ALL and grouped again per queue.
"""

from __future__ import annotations

from typing import List, Mapping, Optional

from queue_metrics.errors import TableShapeError
from queue_metrics.systems.contract import SystemSpec
from queue_metrics.systems.sql import Columns

NAME = "good_job"
TABLE = "good_jobs"
SETTINGS = "good_job_settings"
# good_job_settings row holding the pauses (GoodJob::Setting::PAUSES, app/models/good_job/setting.rb).
PAUSES_KEY = "pauses"
# GoodJob::Job::DEFAULT_QUEUE_NAME: what a NULL queue_name is reported as.
NO_QUEUE = "default"
NEEDED = frozenset({"queue_name", "scheduled_at", "performed_at", "finished_at", "created_at", "error"})
SETTINGS_NEEDED = frozenset({"key", "value"})
FIGURES = ("scheduled", "running", "failed", "paused")


class GoodJobSettings:
    """GoodJob takes no setting: its version shows in its columns."""

    @classmethod
    def from_env(cls, values: Mapping[str, str]) -> Optional["GoodJobSettings"]:
        return None


class GoodJob:
    """A `systems.sql.SqlSystem`."""

    name = NAME
    tables = (TABLE, SETTINGS)

    def __init__(self, settings: object, extras: bool) -> None:
        self.extras = extras

    def query(self, columns: Columns) -> Optional[str]:
        found = columns.get(TABLE)
        if found is None:
            return None
        if not NEEDED <= found:
            raise TableShapeError(f"table {TABLE} has no column {', '.join(sorted(NEEDED - found))}")
        queue = f"coalesce(queue_name, '{NO_QUEUE}')"
        ready_at = "coalesce(scheduled_at, created_at)"
        # Claimed by a process before it started (4.x skip-locked and hybrid lock strategies).
        unclaimed = "performed_at IS NULL" + (" AND locked_by_id IS NULL" if "locked_by_id" in found else "")
        # When a running job started: performed_at, or its claim (locked_at) before it performs.
        started = "coalesce(performed_at, locked_at)" if "locked_at" in found else "performed_at"
        ready = f"{unclaimed} AND {ready_at} <= now()"
        if not self.extras:
            return (
                f"SELECT {queue} AS queue, count(*) FILTER (WHERE {ready}) AS size, "
                f"extract(epoch FROM now() - min({ready_at}) FILTER (WHERE {ready})) AS latency "
                f"FROM {TABLE} WHERE finished_at IS NULL GROUP BY 1"
            )
        # 3.x keeps the rows its retries replaced, finished with their error: not the job's end.
        last_try = " AND retried_good_job_id IS NULL" if "retried_good_job_id" in found else ""
        # Without a settings table (before GoodJob 3.x's good_job_settings) there is no pause to say.
        pauses = SETTINGS_NEEDED <= columns.get(SETTINGS, frozenset())
        unpaused = "0" if pauses else "NULL::integer"
        parts = [
            f"SELECT {queue} AS queue, count(*) FILTER (WHERE {ready}) AS size, "
            f"extract(epoch FROM now() - min({ready_at}) FILTER (WHERE {ready}))::float8 AS latency, "
            f"count(*) FILTER (WHERE {unclaimed} AND {ready_at} > now()) AS scheduled, "
            f"count(*) FILTER (WHERE NOT ({unclaimed})) AS running, "
            f"extract(epoch FROM now() - min({started}) FILTER (WHERE NOT ({unclaimed})))::float8 AS running_age, "
            f"0 AS failed, {unpaused} AS paused "
            f"FROM {TABLE} WHERE finished_at IS NULL GROUP BY 1",
            f"SELECT {queue}, 0, NULL::float8, 0, 0, NULL::float8, count(*), {unpaused} "
            f"FROM {TABLE} WHERE finished_at IS NOT NULL AND error IS NOT NULL{last_try} GROUP BY 1",
        ]
        if pauses:
            parts.append(
                "SELECT DISTINCT jsonb_array_elements_text(value->'queues'), 0, NULL::float8, 0, 0, NULL::float8, "
                f"0, 1 "
                f"FROM {SETTINGS} WHERE key = '{PAUSES_KEY}' AND jsonb_typeof(value->'queues') = 'array'"
            )
        union = " UNION ALL ".join(f"({part})" for part in parts)
        return (
            "SELECT queue, sum(size) AS size, max(latency) AS latency, "
            "sum(scheduled) AS scheduled, sum(running) AS running, max(running_age) AS running_age, "
            "sum(failed) AS failed, max(paused) AS paused "
            f"FROM ({union}) AS per_table GROUP BY queue"
        )

    def describe(self, columns: Columns) -> List[str]:
        found = columns.get(TABLE)
        if found is None:
            return []
        if not NEEDED <= found:
            return [f"GoodJob: table {TABLE} lacks {', '.join(sorted(NEEDED - found))}: not read"]
        if "lock_type" in found:
            version = "GoodJob 4.15 or later (lock strategies)"
        elif "locked_by_id" in found:
            version = "GoodJob 3.99 or 4"
        else:
            version = "GoodJob 3 (before locked_by_id)"
        pauses = "pauses read" if SETTINGS_NEEDED <= columns.get(SETTINGS, frozenset()) else "no settings table"
        return [f"GoodJob: table {TABLE}, columns of {version}, {pauses}"]


SYSTEM = SystemSpec(NAME, GoodJobSettings.from_env, GoodJob, datastore="postgres")  # type: ignore[arg-type]
