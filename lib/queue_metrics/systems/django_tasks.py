"""django-tasks' database backend (PyPI django-tasks-db; Django 6's `django.tasks` or the
django-tasks backport): tasks are rows of `django_tasks_database_dbtaskresult`, in Postgres.

Table (django-tasks-db 0.13, django_tasks_db/models.py): uuid `id`, `status`, `enqueued_at`
(set at enqueue), `run_after` (NOT NULL; 9999-01-01 is "no run_after", since migration 0016),
`priority`, `queue_name`, `backend_name` (the `TASKS` alias that enqueued it), `started_at`,
`finished_at`... Indexes: a partial one on `status = 'READY'` (status, priority, run_after,
enqueued_at), one on `queue_name`, one on `backend_name`. Finished tasks stay until the app
prunes them (`prune_db_task_results`), so the table grows: size, latency and `scheduled` are read
through the READY index, whose size is what waits.

Which tasks a worker takes is `DBTaskResultQuerySet.ready()` (models.py): `status = 'READY'` and
`run_after` the sentinel or `<= now()`; the `db_worker` command takes them for its one
`--backend` (`filter(backend_name=...)`). Ready time: `run_after` when set, else `enqueued_at`
(the framework has no retries). Latency = now() minus the oldest of these.

Status values: READY/RUNNING/FAILED/SUCCESSFUL since migration 0018; 0016 renamed NEW to READY
and brought the sentinel (before it, `run_after` was NULL for "now"). The columns do not show the
migration, so tables from before 0016 (django-tasks before June 2025) are not supported: their
waiting tasks (status NEW) would not be counted.

Queues: a queue of the `default` backend is reported as its name; one of another backend (an app
with several database backends sharing the table, each with its own `db_worker --backend`) as
`<backend>/<queue>`: a worker of one backend never takes another's tasks, so their sums would
say nothing about either.

Figures per queue: `scheduled` (READY, run_after in the future). `running` and `failed` need the
whole table (no index serves RUNNING or FAILED): only with
QUEUE_METRICS_DJANGO_TASKS_TABLE_SCAN=true (the cost is in BENCHMARKS.md), and with them
`running_age`: seconds since the earliest RUNNING task's `started_at` (omitted when none runs).
The table records no workers (`db_worker` keeps no row of its own): no `consumers`; a due task is
in `size` already: no `due`.
"""

from __future__ import annotations

from typing import List, Mapping, NamedTuple, Optional

from queue_metrics.errors import TableShapeError
from queue_metrics.setting_values import boolean
from queue_metrics.systems.contract import SystemSpec
from queue_metrics.systems.sql import Columns

NAME = "django_tasks"
TABLE = "django_tasks_database_dbtaskresult"
NEEDED = frozenset({"status", "enqueued_at", "run_after", "queue_name", "backend_name"})
# django.tasks' DEFAULT_TASK_BACKEND_ALIAS: its queues are reported by their bare name.
DEFAULT_BACKEND = "default"
# `get_date_max()` (models.py) is 9999-01-01 00:00 in UTC, or in TIME_ZONE when USE_TZ is off
# (Django then writes naive times in that zone): anything from the day before is the sentinel.
SENTINEL_FROM = "9998-12-31 00:00:00+00"
READY, RUNNING, FAILED = "READY", "RUNNING", "FAILED"
# Set by the worker when it starts the task (DBTaskResult.claim: status RUNNING, started_at now).
STARTED_AT = "started_at"
TABLE_SCAN_SETTING = "QUEUE_METRICS_DJANGO_TASKS_TABLE_SCAN"


class DjangoTasksSettings(NamedTuple):
    # Also count running and failed tasks, reading the whole table each tick.
    table_scan: bool = False

    @classmethod
    def from_env(cls, values: Mapping[str, str]) -> "DjangoTasksSettings":
        return cls(boolean(values, TABLE_SCAN_SETTING, default=False))


class DjangoTasks:
    """A `systems.sql.SqlSystem`."""

    name = NAME
    tables = (TABLE,)

    def __init__(self, settings: Optional[DjangoTasksSettings], extras: bool) -> None:
        self.settings = settings or DjangoTasksSettings()
        self.extras = extras

    def query(self, columns: Columns) -> Optional[str]:
        found = columns.get(TABLE)
        if found is None:
            return None
        if not NEEDED <= found:
            raise TableShapeError(f"table {TABLE} has no column {', '.join(sorted(NEEDED - found))}")
        queue = (
            f"CASE WHEN backend_name = '{DEFAULT_BACKEND}' THEN queue_name ELSE backend_name || '/' || queue_name END"
        )
        unset = f"run_after >= '{SENTINEL_FROM}'"
        due = f"({unset} OR run_after <= now())"
        ready_at = f"CASE WHEN {unset} THEN enqueued_at ELSE run_after END"
        columns_sql = [
            f"{queue} AS queue",
            f"count(*) FILTER (WHERE status = '{READY}' AND {due}) AS size",
            f"extract(epoch FROM now() - min({ready_at}) FILTER (WHERE status = '{READY}' AND {due})) AS latency",
        ]
        if self.extras:
            columns_sql.append(f"count(*) FILTER (WHERE status = '{READY}' AND NOT {due}) AS scheduled")
        if self.extras and self.settings.table_scan:
            columns_sql.append(f"count(*) FILTER (WHERE status = '{RUNNING}') AS running")
            if STARTED_AT in found:
                columns_sql.append(
                    f"extract(epoch FROM now() - min({STARTED_AT}) FILTER (WHERE status = '{RUNNING}'))::float8 "
                    "AS running_age"
                )
            columns_sql.append(f"count(*) FILTER (WHERE status = '{FAILED}') AS failed")
            where = f"status IN ('{READY}', '{RUNNING}', '{FAILED}')"
        else:
            # The READY partial index's own predicate: only what waits is read.
            where = f"status = '{READY}'"
        return f"SELECT {', '.join(columns_sql)} FROM {TABLE} WHERE {where} GROUP BY 1"

    def describe(self, columns: Columns) -> List[str]:
        found = columns.get(TABLE)
        if found is None:
            return []
        if not NEEDED <= found:
            return [f"django_tasks: table {TABLE} lacks {', '.join(sorted(NEEDED - found))}: not read"]
        scan = "counted (whole-table scan)" if self.settings.table_scan else "not counted"
        return [f"django_tasks: table {TABLE} (migration 0016 or later); running and failed {scan}"]


SYSTEM = SystemSpec(NAME, DjangoTasksSettings.from_env, DjangoTasks, datastore="postgres")  # type: ignore[arg-type]
