"""GoodJob on Postgres. GoodJob (a Rails engine) cannot be installed here, so each test makes the
tables of one GoodJob version from its own install migration, written out in SQL below with the
file and version named, and writes rows as that version's enqueue and perform write them (each
fact with its source). `size` and the figures are checked against GoodJob's own scopes, run as
the SQL they make (app/models/good_job/job.rb at 4.19.2, base_execution.rb at 3.99.1)."""

from __future__ import annotations

import time
from typing import Dict, Iterator, Optional

import pytest

from helpers.postgres import drop_database, make_database, psql, url
from helpers.sql_plans import median_ms, seq_scans
from queue_metrics.collector import Collector
from queue_metrics.config import Settings
from queue_metrics.sample import TickReport
from queue_metrics.systems.good_job import GoodJob

PASSWORD = "pw-Secr3t-x9"

# bensheldon/good_job v3.0.0, lib/generators/good_job/templates/install/migrations/create_good_jobs.rb.erb:
# `t.timestamp` columns and `t.timestamps` (created_at, updated_at NOT NULL), as Rails makes them
# (timestamp(6) without time zone, holding UTC), uuid primary key from gen_random_uuid().
GOOD_JOB_3_0 = """
CREATE TABLE good_jobs (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(), queue_name text, priority integer,
  serialized_params jsonb, scheduled_at timestamp(6), performed_at timestamp(6),
  finished_at timestamp(6), error text, created_at timestamp(6) NOT NULL,
  updated_at timestamp(6) NOT NULL, active_job_id uuid, concurrency_key text, cron_key text,
  retried_good_job_id uuid, cron_at timestamp(6));
CREATE TABLE good_job_processes (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  created_at timestamp(6) NOT NULL, updated_at timestamp(6) NOT NULL, state jsonb);
CREATE INDEX index_good_jobs_on_scheduled_at ON good_jobs (scheduled_at) WHERE (finished_at IS NULL);
CREATE INDEX index_good_jobs_on_queue_name_and_scheduled_at ON good_jobs (queue_name, scheduled_at)
  WHERE (finished_at IS NULL);
CREATE INDEX index_good_jobs_on_active_job_id_and_created_at ON good_jobs (active_job_id, created_at);
CREATE INDEX index_good_jobs_on_concurrency_key_when_unfinished ON good_jobs (concurrency_key)
  WHERE (finished_at IS NULL);
CREATE INDEX index_good_jobs_on_cron_key_and_created_at ON good_jobs (cron_key, created_at);
CREATE UNIQUE INDEX index_good_jobs_on_cron_key_and_cron_at ON good_jobs (cron_key, cron_at);
CREATE INDEX index_good_jobs_on_active_job_id ON good_jobs (active_job_id);
CREATE INDEX index_good_jobs_jobs_on_finished_at ON good_jobs (finished_at)
  WHERE retried_good_job_id IS NULL AND finished_at IS NOT NULL;
"""

# bensheldon/good_job v3.99.1 (the last 3.x; 4.0.0's template is the same for what is read here),
# lib/generators/good_job/templates/install/migrations/create_good_jobs.rb.erb.
_COLUMNS_3_99 = """
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(), queue_name text, priority integer,
  serialized_params jsonb, scheduled_at timestamp(6), performed_at timestamp(6),
  finished_at timestamp(6), error text, created_at timestamp(6) NOT NULL,
  updated_at timestamp(6) NOT NULL, active_job_id uuid, concurrency_key text, cron_key text,
  retried_good_job_id uuid, cron_at timestamp(6), batch_id uuid, batch_callback_id uuid,
  is_discrete boolean, executions_count integer, job_class text, error_event smallint,
  labels text[], locked_by_id uuid, locked_at timestamp(6)"""
_SETTINGS = """
CREATE TABLE good_job_settings (id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  created_at timestamp(6) NOT NULL, updated_at timestamp(6) NOT NULL, key text, value jsonb);
CREATE UNIQUE INDEX index_good_job_settings_on_key ON good_job_settings (key);
"""
_INDEXES_3_99 = """
CREATE INDEX index_good_jobs_on_scheduled_at ON good_jobs (scheduled_at) WHERE (finished_at IS NULL);
CREATE INDEX index_good_jobs_on_queue_name_and_scheduled_at ON good_jobs (queue_name, scheduled_at)
  WHERE (finished_at IS NULL);
CREATE INDEX index_good_jobs_on_active_job_id_and_created_at ON good_jobs (active_job_id, created_at);
CREATE INDEX index_good_jobs_on_concurrency_key_when_unfinished ON good_jobs (concurrency_key)
  WHERE (finished_at IS NULL);
CREATE INDEX index_good_jobs_on_cron_key_and_created_at_cond ON good_jobs (cron_key, created_at)
  WHERE (cron_key IS NOT NULL);
CREATE UNIQUE INDEX index_good_jobs_on_cron_key_and_cron_at_cond ON good_jobs (cron_key, cron_at)
  WHERE (cron_key IS NOT NULL);
CREATE INDEX index_good_jobs_jobs_on_priority_created_at_when_unfinished
  ON good_jobs (priority DESC NULLS LAST, created_at) WHERE finished_at IS NULL;
CREATE INDEX index_good_job_jobs_for_candidate_lookup ON good_jobs (priority ASC NULLS LAST, created_at)
  WHERE finished_at IS NULL;
CREATE INDEX index_good_jobs_on_batch_id ON good_jobs (batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX index_good_jobs_on_batch_callback_id ON good_jobs (batch_callback_id)
  WHERE batch_callback_id IS NOT NULL;
CREATE INDEX index_good_jobs_on_labels ON good_jobs USING gin (labels) WHERE (labels IS NOT NULL);
CREATE INDEX index_good_jobs_on_priority_scheduled_at_unfinished_unlocked
  ON good_jobs (priority ASC NULLS LAST, scheduled_at) WHERE finished_at IS NULL AND locked_by_id IS NULL;
CREATE INDEX index_good_jobs_on_locked_by_id ON good_jobs (locked_by_id) WHERE locked_by_id IS NOT NULL;
"""
GOOD_JOB_3_99 = (
    f"CREATE TABLE good_jobs ({_COLUMNS_3_99});"
    + _SETTINGS
    + _INDEXES_3_99
    + "CREATE INDEX index_good_jobs_jobs_on_finished_at ON good_jobs (finished_at) "
    "WHERE retried_good_job_id IS NULL AND finished_at IS NOT NULL;"
)

# bensheldon/good_job v4.19.2 (81db22b), the same install template: lock_type (4.15), and the
# indexes of update migrations 05, 08-14 (the discarded index: 12, 4.18.2); migration 06 dropped
# index_good_jobs_jobs_on_finished_at.
GOOD_JOB_4 = (
    f"CREATE TABLE good_jobs ({_COLUMNS_3_99}, lock_type smallint);"
    + _SETTINGS
    + _INDEXES_3_99
    + """
CREATE INDEX index_good_jobs_jobs_on_finished_at_only ON good_jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX index_good_jobs_on_job_class ON good_jobs (job_class);
CREATE INDEX index_good_jobs_on_priority_scheduled_at_unfinished ON good_jobs (priority, scheduled_at, id)
  WHERE finished_at IS NULL;
CREATE INDEX index_good_jobs_on_queue_name_priority_scheduled_at_unfinished
  ON good_jobs (queue_name, scheduled_at, id) WHERE finished_at IS NULL;
CREATE INDEX index_good_jobs_for_candidate_dequeue_unlocked
  ON good_jobs (priority ASC NULLS LAST, scheduled_at ASC, id ASC) WHERE finished_at IS NULL AND locked_by_id IS NULL;
CREATE INDEX index_good_jobs_on_concurrency_key_and_created_at ON good_jobs (concurrency_key, created_at);
CREATE INDEX index_good_jobs_on_queue_name ON good_jobs (queue_name);
CREATE INDEX index_good_jobs_on_created_at ON good_jobs (created_at);
CREATE INDEX index_good_jobs_on_discarded ON good_jobs (finished_at DESC)
  WHERE finished_at IS NOT NULL AND error IS NOT NULL;
CREATE INDEX index_good_jobs_on_scheduled_at_and_queue_name ON good_jobs (scheduled_at, queue_name);
CREATE INDEX index_good_jobs_on_unfinished_or_errored ON good_jobs (id) WHERE finished_at IS NULL OR error IS NOT NULL;
"""
)

# Rails writes UTC into `timestamp` columns: the database's clock, in UTC, `seconds` ago.
UTC_NOW = "(now() AT TIME ZONE 'UTC')"
PROCESS = "11111111-2222-4333-8444-555555555555"


def ago(seconds: float) -> str:
    return f"({UTC_NOW} - interval '{seconds} seconds')"


def enqueue_4(database: str, queue: Optional[str], count: int, age: float = 0.0, run_in: float = 0.0) -> None:
    """Rows as GoodJob 4 enqueues them (app/models/good_job/job.rb 4.19.2, enqueue_args, l.331-376):
    id = active_job_id = the ActiveJob job_id, job_class, queue_name (`presence || 'default'`),
    priority (`|| DEFAULT_PRIORITY` 0), serialized_params, created_at = now, scheduled_at = the
    time asked or now."""
    name = "NULL" if queue is None else "'" + queue.replace("'", "''") + "'"
    psql(
        "INSERT INTO good_jobs (id, active_job_id, job_class, queue_name, priority, serialized_params, "
        "created_at, updated_at, scheduled_at) "
        f"SELECT u, u, 'MailJob', {name}, 0, jsonb_build_object('job_class', 'MailJob', 'job_id', u::text, "
        f"'queue_name', {name}, 'arguments', '[]'::jsonb, 'executions', 0), t, t, t + interval '{run_in} seconds' "
        f"FROM (SELECT gen_random_uuid() AS u, {ago(age)} AS t FROM generate_series(1, {count})) AS made",
        database=database,
    )


def enqueue_3(database: str, queue: str, count: int, age: float = 0.0, run_in: Optional[float] = None) -> None:
    """Rows as GoodJob 3.0 enqueues them (lib/models/good_job/execution.rb v3.0.0, Execution.enqueue,
    l.195-225): active_job_id, queue_name, priority, serialized_params, scheduled_at only when
    asked (NULL for a job to run now), timestamps."""
    scheduled = "NULL" if run_in is None else f"t + interval '{run_in} seconds'"
    psql(
        "INSERT INTO good_jobs (active_job_id, queue_name, priority, serialized_params, scheduled_at, "
        "created_at, updated_at) "
        f"SELECT u, '{queue}', 0, jsonb_build_object('job_class', 'MailJob', 'job_id', u::text), {scheduled}, t, t "
        f"FROM (SELECT gen_random_uuid() AS u, {ago(age)} AS t FROM generate_series(1, {count})) AS made",
        database=database,
    )


def update_one(database: str, queue: str, where: str, assignments: str) -> None:
    psql(
        f"UPDATE good_jobs SET {assignments} WHERE id = (SELECT id FROM good_jobs WHERE queue_name = '{queue}' "
        f"AND {where} ORDER BY created_at DESC LIMIT 1)",
        database=database,
    )


# GoodJob 4's perform (job.rb 4.19.2, Job#perform l.794-810): at its start, in one update,
# performed_at, executions_count + 1, and the lock columns unless already claimed.
PERFORM_4 = (
    f"performed_at = {UTC_NOW}, executions_count = 1, locked_by_id = '{PROCESS}', locked_at = {UTC_NOW}, lock_type = 0"
)
# The skip-locked strategy's claim (job.rb, perform_with_skip_locked, with_skip_locked_claim):
# locked_by_id, locked_at, lock_type 1 (LockTypeAccessor::LOCK_TYPES "skiplocked"), before perform.
CLAIM_4 = f"locked_by_id = '{PROCESS}', locked_at = {UTC_NOW}, lock_type = 1"
# Discarded at the end of perform (l.860-890): finished_at, error "Class: message" (format_error),
# error_event 5 (ErrorEvents DISCARDED), lock columns cleared.
DISCARD_4 = (
    f"performed_at = {UTC_NOW}, finished_at = {UTC_NOW}, error = 'RuntimeError: boom', error_event = 5, "
    "executions_count = 1"
)
# A retry re-enqueues the same row (Job.enqueue, `retried` branch, l.505-512; end of perform):
# performed_at and finished_at NULL, scheduled_at the retry's time, error kept, error_event 3 (RETRIED).
RETRY_4 = (
    f"scheduled_at = {UTC_NOW} + interval '600 seconds', performed_at = NULL, finished_at = NULL, "
    "error = 'RuntimeError: boom', error_event = 3, executions_count = 1"
)
SUCCEED_4 = f"performed_at = {UTC_NOW}, finished_at = {UTC_NOW}, executions_count = 1"


def pause(database: str, *queues: str) -> None:
    """GoodJob::Setting.pause(queue:) (app/models/good_job/setting.rb 4.19.2, l.62-80): key `pauses`,
    value {"queues": [...], "job_classes": [], "labels": []}."""
    listed = ", ".join("'" + queue.replace("'", "''") + "'" for queue in queues)
    psql(
        "INSERT INTO good_job_settings (created_at, updated_at, key, value) "
        f"VALUES ({UTC_NOW}, {UTC_NOW}, 'pauses', jsonb_build_object('queues', jsonb_build_array({listed}), "
        "'job_classes', '[]'::jsonb, 'labels', '[]'::jsonb))",
        database=database,
    )


def scope_counts(database: str, where: str) -> Dict[str, int]:
    rows = psql(
        f"SET TimeZone = 'UTC'; SELECT queue_name, count(*) FROM good_jobs WHERE {where} GROUP BY 1",
        database=database,
    )
    return {line.split("|")[0]: int(line.split("|")[1]) for line in rows.splitlines() if line}


# GoodJob 4.19.2's scopes (app/models/good_job/job.rb l.83-95), as the SQL they make.
QUEUED = "performed_at IS NULL AND finished_at IS NULL AND scheduled_at <= now()"
SCHEDULED_OR_RETRIED = "finished_at IS NULL AND scheduled_at > now()"
RUNNING = "performed_at IS NOT NULL AND finished_at IS NULL"
DISCARDED = "finished_at IS NOT NULL AND error IS NOT NULL"


@pytest.fixture
def database() -> Iterator[str]:
    name = make_database("qmgj")
    yield name
    drop_database(name)


def reading(database: str, **env: str) -> Collector:
    return Collector(Settings.from_env({"QUEUE_METRICS_DATABASE_URLS": url(database), **env}))


def by_queue(report: TickReport) -> Dict[str, tuple]:
    """Sizes and figures; `running_age` (it moves) is checked by its own test."""
    return {
        sample.queue: (
            sample.size,
            {figure.name: figure.value for figure in sample.figures if figure.name != "running_age"},
        )
        for sample in report.samples
        if sample.backend == "good_job"
    }


def running_age(report: TickReport, queue: str) -> Optional[float]:
    (sample,) = [s for s in report.samples if (s.backend, s.queue) == ("good_job", queue)]
    return next((figure.value for figure in sample.figures if figure.name == "running_age"), None)


def latency_of(report: TickReport, queue: str) -> float:
    (sample,) = [s for s in report.samples if s.backend == "good_job" and s.queue == queue]
    return sample.latency


def test_good_job_4_sizes_follow_its_own_scopes_and_latency_the_oldest_ready_time(database):
    psql(GOOD_JOB_4, database=database)
    written = time.monotonic()  # the rows' ages are from about now
    enqueue_4(database, "mailers", 3, age=30)
    enqueue_4(database, "mailers", 2, age=10)
    enqueue_4(database, "mailers", 1, run_in=3600)  # scheduled for later
    update_one(database, "mailers", "scheduled_at <= now() AT TIME ZONE 'UTC'", PERFORM_4)  # running
    enqueue_4(database, "mailers", 1, age=45)
    update_one(database, "mailers", "created_at < now() AT TIME ZONE 'UTC' - interval '40 seconds'", CLAIM_4)
    enqueue_4(database, "mailers", 1, age=50)
    update_one(database, "mailers", "created_at < now() AT TIME ZONE 'UTC' - interval '40 seconds' "
               "AND locked_by_id IS NULL", RETRY_4)  # fmt: skip
    enqueue_4(database, "mailers", 2, age=120)
    psql(f"UPDATE good_jobs SET {DISCARD_4} WHERE created_at < {ago(100)}", database=database)
    enqueue_4(database, "default", 2, age=5)
    enqueue_4(database, "default", 4, age=500)
    psql(f"UPDATE good_jobs SET {SUCCEED_4} WHERE created_at < {ago(400)}", database=database)
    enqueue_4(database, None, 1, age=7)  # a NULL queue_name: reported as `default`
    pause(database, "mailers", "reports")

    report = reading(database).tick()
    elapsed = time.monotonic() - written
    assert report.errors == ()
    assert by_queue(report) == {
        # 5 queued by GoodJob's scope, less the one claimed by a process (running, here).
        "mailers": (4, {"scheduled": 2, "running": 2, "failed": 2, "paused": 1}),
        "default": (3, {"scheduled": 0, "running": 0, "failed": 0, "paused": 0}),
        "reports": (0, {"scheduled": 0, "running": 0, "failed": 0, "paused": 1}),  # paused while empty
    }
    # GoodJob's own scopes: queued counts the claimed job (performed_at still NULL).
    assert scope_counts(database, QUEUED) == {"mailers": 5, "default": 2, "": 1}
    assert scope_counts(database, SCHEDULED_OR_RETRIED) == {"mailers": 2}
    assert scope_counts(database, RUNNING) == {"mailers": 1}
    assert scope_counts(database, DISCARDED) == {"mailers": 2}
    # The oldest ready mailers job was enqueued 30 s before the tick (the claimed 45 s one runs).
    assert 30 <= latency_of(report, "mailers") <= 30 + elapsed
    assert 7 <= latency_of(report, "default") <= 7 + elapsed
    assert latency_of(report, "reports") == 0.0


def test_running_age_is_the_earliest_start_of_a_running_or_claimed_job(database):
    psql(GOOD_JOB_4, database=database)
    enqueue_4(database, "mailers", 1, age=60)
    enqueue_4(database, "mailers", 1, age=50)
    enqueue_4(database, "idle", 1, run_in=3600)
    # One performing since about 20 s ago, one claimed (skip-locked) 30 s ago and not yet performing.
    psql(f"UPDATE good_jobs SET {PERFORM_4.replace(UTC_NOW, ago(20))} WHERE created_at < {ago(55)}", database=database)
    psql(
        f"UPDATE good_jobs SET {CLAIM_4.replace(UTC_NOW, ago(30))} "
        f"WHERE created_at >= {ago(55)} AND queue_name = 'mailers'",
        database=database,
    )
    collector = reading(database)
    ages = []
    for _ in range(2):
        report = collector.tick()
        assert report.errors == () and by_queue(report)["mailers"][1]["running"] == 2
        assert running_age(report, "mailers") == pytest.approx(30, abs=1.0)
        assert running_age(report, "idle") is None
        ages.append(running_age(report, "mailers"))
        time.sleep(0.3)
    assert ages[1] > ages[0]


def test_good_job_3_0_rows_without_scheduled_at_are_ready_from_created_at(database):
    psql(GOOD_JOB_3_0, database=database)
    written = time.monotonic()
    enqueue_3(database, "mailers", 3, age=20)
    enqueue_3(database, "mailers", 2, age=5, run_in=3600)  # scheduled: scheduled_at set
    enqueue_3(database, "mailers", 1, age=90, run_in=60)  # scheduled 90 s ago for 30 s ago: due
    # Execution#perform (v3.0.0 l.235-250): performed_at saved at its start (preserve_job_records
    # true by default), finished_at and error at its end.
    update_one(database, "mailers", "scheduled_at IS NULL", f"performed_at = {UTC_NOW}")
    # A retry (v3.0.0: a new row enqueued, the old one finished with its error and pointing to
    # it by retried_good_job_id, l.222): not a discarded job.
    enqueue_3(database, "mailers", 1, age=300, run_in=900)
    psql(
        f"INSERT INTO good_jobs (active_job_id, queue_name, priority, serialized_params, performed_at, finished_at, "
        f"error, retried_good_job_id, created_at, updated_at) SELECT active_job_id, queue_name, 0, serialized_params, "
        f"{ago(300)}, {ago(300)}, 'RuntimeError: boom', id, {ago(300)}, {ago(300)} FROM good_jobs "
        f"WHERE created_at < {ago(250)}",
        database=database,
    )
    enqueue_3(database, "mailers", 1, age=1000)
    psql(
        f"UPDATE good_jobs SET performed_at = {ago(999)}, finished_at = {ago(999)}, error = 'KeyError: gone' "
        f"WHERE created_at < {ago(999)}",
        database=database,
    )
    report = reading(database).tick()
    assert report.errors == ()
    assert by_queue(report) == {"mailers": (3, {"scheduled": 3, "running": 1, "failed": 1})}
    # v3.99.1 base_execution.rb scopes: running l.183; Job's finished/discarded keep the last row
    # of a job (default_scope retried_good_job_id IS NULL, job.rb l.41-63).
    assert scope_counts(database, RUNNING) == {"mailers": 1}
    assert scope_counts(database, DISCARDED + " AND retried_good_job_id IS NULL") == {"mailers": 1}
    # The due scheduled job became ready 30 s ago; the others were enqueued 20 s ago.
    assert 30 <= latency_of(report, "mailers") <= 30 + time.monotonic() - written
    assert GoodJob(None, True).describe(report_columns(database)) == [
        "GoodJob: table good_jobs, columns of GoodJob 3 (before locked_by_id), no settings table"
    ]


def report_columns(database: str) -> Dict[str, frozenset]:
    rows = psql(
        "SELECT c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "WHERE c.relname IN ('good_jobs', 'good_job_settings') AND a.attnum > 0 AND NOT a.attisdropped",
        database=database,
    )
    found: Dict[str, set] = {}
    for line in rows.splitlines():
        table, column = line.split("|")
        found.setdefault(table, set()).add(column)
    return {table: frozenset(columns) for table, columns in found.items()}


def test_good_job_3_99_and_extras_off_reads_size_and_latency_only(database):
    psql(GOOD_JOB_3_99, database=database)
    written = time.monotonic()
    enqueue_4(database, "mailers", 2, age=12)
    enqueue_4(database, "mailers", 1, run_in=600)
    report = reading(database, QUEUE_METRICS_EXTRAS="false").tick()
    assert report.errors == () and by_queue(report) == {"mailers": (2, {})}
    assert 12 <= latency_of(report, "mailers") <= 12 + time.monotonic() - written
    assert GoodJob(None, False).describe(report_columns(database)) == [
        "GoodJob: table good_jobs, columns of GoodJob 3.99 or 4, pauses read"
    ]
    assert "UNION" not in (GoodJob(None, False).query(report_columns(database)) or "")


def test_odd_queue_names_are_data_and_a_drained_queue_stays_at_zero(database):
    psql(GOOD_JOB_4, database=database)
    names = ["with space", "it's", "ünïcödé", "{}", 'quo"te']
    for name in names:
        enqueue_4(database, name, 1, age=3)
    pause(database, "it's")
    collector = reading(database)
    report = collector.tick()
    assert report.errors == ()
    assert {queue: size for queue, (size, _) in by_queue(report).items()} == {name: 1 for name in names}
    assert by_queue(report)["it's"][1]["paused"] == 1
    psql(f"UPDATE good_jobs SET {SUCCEED_4}; DELETE FROM good_job_settings", database=database)
    assert by_queue(collector.tick()) == {
        name: (0, {"scheduled": 0, "running": 0, "failed": 0, "paused": 0}) for name in names
    }


def test_a_table_of_another_shape_is_one_line_and_settings_of_another_shape_are_left_alone(database):
    psql(GOOD_JOB_4, database=database)
    enqueue_4(database, "mailers", 1)
    psql("ALTER TABLE good_job_settings DROP COLUMN value", database=database)
    collector = reading(database)
    report = collector.tick()
    assert report.errors == () and by_queue(report)["mailers"][0] == 1
    psql("ALTER TABLE good_jobs DROP COLUMN performed_at", database=database)
    (line,) = collector.tick().errors
    assert line == "good_job: table good_jobs has no column performed_at: a migration not yet run?"


def test_read_only_as_a_role_with_select_only_and_nothing_changes(database):
    psql(GOOD_JOB_4, database=database)
    enqueue_4(database, "mailers", 4, age=2)
    pause(database, "mailers")
    psql(
        f"DROP ROLE IF EXISTS qm_gj_reader; CREATE ROLE qm_gj_reader LOGIN PASSWORD '{PASSWORD}'; "
        f"GRANT CONNECT ON DATABASE {database} TO qm_gj_reader; "
        "GRANT SELECT ON good_jobs, good_job_settings TO qm_gj_reader;",
        database=database,
    )

    def changes() -> str:
        return psql(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables "
            "WHERE relname LIKE 'good_job%' ORDER BY relname",
            database=database,
        )

    try:
        before = changes()
        collector = Collector(
            Settings.from_env({"QUEUE_METRICS_DATABASE_URLS": url(database, "qm_gj_reader", PASSWORD)})
        )
        for _ in range(200):
            report = collector.tick()
            assert report.errors == () and by_queue(report)["mailers"] == (
                4,
                {"scheduled": 0, "running": 0, "failed": 0, "paused": 1},
            )
        for datastore in collector.datastores:
            datastore.close()
        time.sleep(0.6)  # the statistics collector's flush
        assert changes() == before
    finally:
        psql(f"REVOKE ALL ON DATABASE {database} FROM qm_gj_reader", database=database)
        psql("REVOKE ALL ON good_jobs, good_job_settings FROM qm_gj_reader; DROP ROLE qm_gj_reader", database=database)


def fill(database: str, schema: str) -> None:
    """1,000,000 finished rows (1 % discarded) and 10,000 waiting, in 20 queues, then ANALYZE."""
    psql(schema, database=database)
    psql(
        "INSERT INTO good_jobs (id, active_job_id, job_class, queue_name, priority, created_at, updated_at, "
        "scheduled_at, performed_at, finished_at, error) "
        "SELECT u, u, 'MailJob', 'queue_' || (i % 20), 0, t, t, t, t, t, "
        "CASE WHEN i % 100 = 0 THEN 'RuntimeError: boom' END "
        f"FROM (SELECT gen_random_uuid() AS u, i, {ago(86400)} + i * interval '50 ms' AS t "
        "FROM generate_series(1, 1000000) AS i) AS made",
        database=database,
    )
    psql(
        "INSERT INTO good_jobs (id, active_job_id, job_class, queue_name, priority, created_at, updated_at, "
        f"scheduled_at) SELECT u, u, 'MailJob', 'queue_' || (i % 20), 0, t, t, t "
        f"FROM (SELECT gen_random_uuid() AS u, i, {ago(600)} + i * interval '10 ms' AS t "
        "FROM generate_series(1, 10000) AS i) AS made; ANALYZE good_jobs",
        database=database,
    )


@pytest.mark.parametrize(
    "version, schema, whole",
    [
        # GoodJob 4.18.2 and later: every part index-served.
        ("4.19.2", GOOD_JOB_4, []),
        # 3.99.1 to 4.18.1: the discarded count has no index of its own (index_good_jobs_jobs_on_finished_at
        # holds every finished row): the planner reads the table for it. Size and latency are index-served.
        ("3.99.1", GOOD_JOB_3_99, ["good_jobs"]),
    ],
)
def test_explain_at_a_million_finished_rows(database, version, schema, whole):
    fill(database, schema)
    reader = GoodJob(None, True)
    columns = report_columns(database)
    full = reader.query(columns)
    lean = GoodJob(None, False).query(columns)
    assert full and lean
    print(f"\nGoodJob {version}, 1,000,000 finished + 10,000 waiting:")
    assert seq_scans(full, database) == whole
    assert seq_scans(lean, database) == []
    print(f"  extras on: {median_ms(full, database):.1f} ms, off: {median_ms(lean, database):.1f} ms (median of 5)")
    report = reading(database).tick()
    assert report.errors == ()
    assert sum(s.size for s in report.samples) == 10000
    assert sum(dict((f.name, f.value) for f in s.figures)["failed"] for s in report.samples) == 10000
