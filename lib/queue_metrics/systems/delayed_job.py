"""Delayed Job (ActiveRecord backend): jobs are rows of `delayed_jobs`, in Postgres.

Table (delayed_job_active_record 4.1, lib/generators/delayed_job/templates/migration.rb):
`priority`, `attempts`, `handler`, `last_error`, `run_at`, `locked_at`, `failed_at`,
`locked_by`, `queue` (added by upgrade_migration.rb; older tables have none), timestamps; one
index, `(priority, run_at)`. Finished jobs are deleted, and so are failed ones unless the app sets
`destroy_failed_jobs = false`: the table holds what waits, runs, and (maybe) failed.

Which jobs a worker may take is the gem's `ready_to_run` (lib/delayed/backend/active_record.rb):
`run_at <= now AND (locked_at IS NULL OR locked_at < now - max_run_time) AND failed_at IS NULL`.
Enqueue sets `run_at` to the enqueue time (or the time asked for), and a retry to its next try,
so `run_at` is when the job became ready: latency = now - min(run_at) of the ready rows. A row
locked longer ago than `max_run_time` (4 h by default; Delayed::Worker.max_run_time, here
QUEUE_METRICS_DELAYED_JOB_MAX_RUN_TIME) is a job whose worker died: ready again, as the gem
says, and not running.

Per queue (`queue`, NULL read as `default`, which is what a worker without `--queue` takes along
with the rest): `size`, `latency`, `scheduled` (not yet due), `running` (locked within
max_run_time), `running_age` (seconds since the earliest of those was locked: `locked_at`, which
the worker sets when it reserves the job, just before running it; omitted when none runs),
`failed` (kept failed rows). One SELECT over the table, whose size is what waits. Delayed Job
keeps no record of its workers (`locked_by` names a worker only while it runs a job), so no
`consumers`; and no `due`: a due job is in `size` already, there is no scheduler to stop.
"""

from __future__ import annotations

from typing import List, Mapping, NamedTuple, Optional

from queue_metrics.errors import ConfigError, TableShapeError
from queue_metrics.systems.contract import SystemSpec
from queue_metrics.systems.sql import Columns

NAME = "delayed_job"
TABLE = "delayed_jobs"
QUEUE_COLUMN = "queue"
# A NULL queue, as reported.
NO_QUEUE = "default"
# Delayed::Worker::DEFAULT_MAX_RUN_TIME (delayed_job 4.1, lib/delayed/worker.rb).
DEFAULT_MAX_RUN_TIME = 4 * 3600
MAX_RUN_TIME_SETTING = "QUEUE_METRICS_DELAYED_JOB_MAX_RUN_TIME"
NEEDED = frozenset({"run_at", "locked_at", "failed_at"})


class DelayedJobSettings(NamedTuple):
    max_run_time: int = DEFAULT_MAX_RUN_TIME

    @classmethod
    def from_env(cls, values: Mapping[str, str]) -> "DelayedJobSettings":
        text = values.get(MAX_RUN_TIME_SETTING, "").strip()
        if not text:
            return cls()
        if not text.isdigit() or int(text) == 0:
            raise ConfigError(
                f"{MAX_RUN_TIME_SETTING} must be a whole number of seconds (Delayed::Worker.max_run_time)"
            )
        return cls(int(text))


class DelayedJob:
    """A `systems.sql.SqlSystem`."""

    name = NAME
    tables = (TABLE,)

    def __init__(self, settings: Optional[DelayedJobSettings], extras: bool) -> None:
        self.settings = settings or DelayedJobSettings()
        self.extras = extras

    def query(self, columns: Columns) -> Optional[str]:
        found = columns.get(TABLE)
        if found is None:
            return None
        if not NEEDED <= found:
            raise TableShapeError(f"table {TABLE} has no column {', '.join(sorted(NEEDED - found))}")
        queue = f"coalesce({QUEUE_COLUMN}, '{NO_QUEUE}')" if QUEUE_COLUMN in found else f"'{NO_QUEUE}'"
        stale = f"now() - interval '{self.settings.max_run_time} seconds'"
        ready = f"failed_at IS NULL AND run_at <= now() AND (locked_at IS NULL OR locked_at < {stale})"
        return (
            f"SELECT {queue} AS queue, "
            f"count(*) FILTER (WHERE {ready}) AS size, "
            f"extract(epoch FROM now() - min(run_at) FILTER (WHERE {ready})) AS latency, "
            f"count(*) FILTER (WHERE failed_at IS NULL AND locked_at IS NULL AND run_at > now()) AS scheduled, "
            f"count(*) FILTER (WHERE failed_at IS NULL AND locked_at >= {stale}) AS running, "
            f"extract(epoch FROM now() - min(locked_at) FILTER (WHERE failed_at IS NULL AND locked_at >= {stale}))"
            "::float8 AS running_age, "
            f"count(*) FILTER (WHERE failed_at IS NOT NULL) AS failed "
            f"FROM {TABLE} GROUP BY 1"
        )

    def describe(self, columns: Columns) -> List[str]:
        found = columns.get(TABLE)
        if found is None:
            return []
        if not NEEDED <= found:
            return [f"Delayed Job: table {TABLE} lacks {', '.join(sorted(NEEDED - found))}: not read"]
        if QUEUE_COLUMN not in found:
            return [
                f"Delayed Job: table {TABLE} has no queue column (before its upgrade migration): one queue, default"
            ]
        return [f"Delayed Job: table {TABLE}, max_run_time {self.settings.max_run_time} s"]


SYSTEM = SystemSpec(NAME, DelayedJobSettings.from_env, DelayedJob, datastore="postgres")  # type: ignore[arg-type]
