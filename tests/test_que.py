"""Que on Postgres. Que (a Ruby gem) cannot be installed here, so each test makes `que_jobs` as
one schema version's migrations leave it (que-rb/que lib/que/migrations/<n>/up.sql, read at
2.4.1, 17fb2c3; written out in SQL below), writes rows as that version's enqueue SQL writes them,
and holds jobs the way Que's locker does: a session advisory lock on the job's id
(`pg_try_advisory_lock(id)`, lib/que/locker.rb l.426-429), from another connection (psycopg)."""

from __future__ import annotations

import threading
import time
from typing import Dict, Iterator, List, Optional

import psycopg
import pytest

from helpers.postgres import drop_database, make_database, psql, url
from helpers.sql_plans import median_ms, seq_scans
from queue_metrics.collector import Collector
from queue_metrics.config import Settings
from queue_metrics.sample import TickReport
from queue_metrics.systems.que import Que

PASSWORD = "pw-Secr3t-x9"

# Schema 3 (Que 0.x): migrations 1 (table, primary key (priority, run_at, job_id)), 2 (priority
# default 100), 3 (priority smallint, `queue` text NOT NULL DEFAULT '', primary key
# (queue, priority, run_at, job_id)).
SCHEMA_3 = """
CREATE TABLE que_jobs (
  priority smallint NOT NULL DEFAULT 100, run_at timestamptz NOT NULL DEFAULT now(),
  job_id bigserial NOT NULL, job_class text NOT NULL, args json NOT NULL DEFAULT '[]'::json,
  error_count integer NOT NULL DEFAULT 0, last_error text, queue text NOT NULL DEFAULT '',
  CONSTRAINT que_jobs_pkey PRIMARY KEY (queue, priority, run_at, job_id));
"""

# Schema 4 (Que 1.0-1.2): migration 4 renames job_id to id (primary key), last_error to
# last_error_message, adds last_error_backtrace, finished_at, expired_at, args jsonb, data jsonb,
# queue default 'default', fillfactor 90, que_poll_idx and the gin indexes (its CHECK constraints,
# que_values, que_lockers and the notify triggers are left out: nothing read here).
SCHEMA_4 = """
CREATE TABLE que_jobs (
  priority smallint NOT NULL DEFAULT 100, run_at timestamptz NOT NULL DEFAULT now(),
  id bigserial PRIMARY KEY, job_class text NOT NULL, error_count integer NOT NULL DEFAULT 0,
  last_error_message text, queue text NOT NULL DEFAULT 'default', last_error_backtrace text,
  finished_at timestamptz, expired_at timestamptz, args jsonb NOT NULL DEFAULT '[]',
  data jsonb NOT NULL DEFAULT '{}') WITH (fillfactor = 90);
CREATE INDEX que_poll_idx ON que_jobs (queue, priority, run_at, id) WHERE (finished_at IS NULL AND expired_at IS NULL);
CREATE INDEX que_jobs_data_gin_idx ON que_jobs USING gin (data jsonb_path_ops);
CREATE INDEX que_jobs_args_gin_idx ON que_jobs USING gin (args jsonb_path_ops);
"""
# Schema 5 (Que 1.3-1.4): job_schema_version integer DEFAULT 1 and an index led by it.
SCHEMA_5 = (
    SCHEMA_4
    + """
ALTER TABLE que_jobs ADD COLUMN job_schema_version INTEGER DEFAULT 1;
CREATE INDEX que_poll_idx_with_job_schema_version ON que_jobs (job_schema_version, queue, priority, run_at, id)
  WHERE (finished_at IS NULL AND expired_at IS NULL);
"""
)
# Schemas 6 and 7 (Que 2): kwargs jsonb NOT NULL DEFAULT '{}' and its gin index; que_poll_idx
# dropped and the job_schema_version one renamed que_poll_idx; job_schema_version NOT NULL with no
# default. Migration 7 changes triggers only.
SCHEMA_7 = (
    SCHEMA_5
    + """
ALTER TABLE que_jobs ADD COLUMN kwargs JSONB NOT NULL DEFAULT '{}';
CREATE INDEX que_jobs_kwargs_gin_idx ON que_jobs USING gin (kwargs jsonb_path_ops);
DROP INDEX que_poll_idx;
ALTER INDEX que_poll_idx_with_job_schema_version RENAME TO que_poll_idx;
ALTER TABLE que_jobs ALTER COLUMN job_schema_version DROP DEFAULT;
ALTER TABLE que_jobs ALTER COLUMN job_schema_version SET NOT NULL;
"""
)


def quoted(queue: Optional[str]) -> str:
    return "NULL" if queue is None else "'" + queue.replace("'", "''") + "'"


def enqueue(database: str, schema: int, queue: Optional[str], count: int, age: float = 0.0, run_in: float = 0.0):
    """Rows as each Que's insert SQL writes them, run_at = coalesce(the time asked, now()):
    0.14.3 lib/que/sql.rb :insert_job (queue coalesce($1, '')); 1.0.0 lib/que/job.rb
    SQL[:insert_job] (queue coalesce($1, 'default'), args, data); 1.4.1 the same plus
    job_schema_version 1; 2.4.1 plus kwargs, job_schema_version 2 (Que.job_schema_version)."""
    run_at = f"now() - interval '{age} seconds' + interval '{run_in} seconds'"
    if schema <= 3:
        columns, values = "queue, priority, run_at, job_class, args", f"coalesce({quoted(queue)}, ''), 100"
        values += f", {run_at}, 'MailJob', '[]'::json"
    else:
        columns = "queue, priority, run_at, job_class, args, data"
        values = f"coalesce({quoted(queue)}, 'default'), 100, {run_at}, 'MailJob', '[]'::jsonb, '{{}}'::jsonb"
        if schema == 5:
            columns, values = columns + ", job_schema_version", values + ", 1"
        elif schema >= 6:
            columns, values = columns + ", kwargs, job_schema_version", values + ", '{}'::jsonb, 2"
    psql(f"INSERT INTO que_jobs ({columns}) SELECT {values} FROM generate_series(1, {count})", database=database)


def ids(database: str, where: str, key: str = "id", first: Optional[int] = None) -> List[int]:
    """The ids of the jobs `where` says, oldest run_at first (the `first` ones only, if given)."""
    limit = f" LIMIT {first}" if first else ""
    sql = f"SELECT {key} FROM que_jobs WHERE {where} ORDER BY run_at, {key}{limit}"
    return [int(i) for i in psql(sql, database=database).split()]


# lib/que/job_methods.rb (2.4.1) l.4-33: what a run leaves behind.
def finish(database: str, job: int) -> None:
    psql(f"UPDATE que_jobs SET finished_at = now() WHERE id = {job}", database=database)


def expire(database: str, job: int) -> None:
    psql(f"UPDATE que_jobs SET error_count = error_count + 1, expired_at = now() WHERE id = {job}", database=database)


def set_error(database: str, job: int, delay: float) -> None:
    psql(
        "UPDATE que_jobs SET error_count = error_count + 1, "
        f"run_at = now() + {delay}::float * '1 second'::interval, last_error_message = left('boom', 500) "
        f"WHERE id = {job}",
        database=database,
    )


class Locker:
    """A worker session holding jobs as Que's locker does: `pg_try_advisory_lock(id)`, kept until
    the session lets go."""

    def __init__(self, database: str) -> None:
        self.connection = psycopg.connect(url(database), autocommit=True)

    def lock(self, jobs: List[int], key: str = "id") -> None:
        listed = ", ".join(str(job) for job in jobs)
        rows = self.connection.execute(
            f"WITH jobs AS MATERIALIZED (SELECT * FROM que_jobs WHERE {key} IN ({listed})) "
            f"SELECT {key} FROM jobs WHERE pg_try_advisory_lock({key})"
        ).fetchall()
        assert sorted(row[0] for row in rows) == sorted(jobs)

    def close(self) -> None:
        self.connection.close()


@pytest.fixture
def database() -> Iterator[str]:
    name = make_database("qmque")
    yield name
    drop_database(name)


@pytest.fixture
def locker(database: str) -> Iterator[Locker]:
    held = Locker(database)
    yield held
    held.close()


def reading(database: str, **env: str) -> Collector:
    return Collector(Settings.from_env({"QUEUE_METRICS_DATABASE_URLS": url(database), **env}))


def by_queue(report: TickReport) -> Dict[str, tuple]:
    return {
        sample.queue: (sample.size, {figure.name: figure.value for figure in sample.figures})
        for sample in report.samples
        if sample.backend == "que"
    }


def latency_of(report: TickReport, queue: str) -> float:
    (sample,) = [s for s in report.samples if s.backend == "que" and s.queue == queue]
    return sample.latency


def columns_of(database: str) -> Dict[str, frozenset]:
    rows = psql(
        "SELECT a.attname FROM pg_attribute a WHERE a.attrelid = 'que_jobs'::regclass AND a.attnum > 0 "
        "AND NOT a.attisdropped",
        database=database,
    )
    return {"que_jobs": frozenset(rows.split())}


def que_ready(database: str) -> Dict[str, int]:
    """Que's own state function (migration 4, que_determine_job_state) says `ready` for these; its
    `errored` state holds the retries, whatever their run_at."""
    rows = psql(
        "SELECT queue, count(*) FROM que_jobs WHERE CASE WHEN expired_at IS NOT NULL THEN 'expired' "
        "WHEN finished_at IS NOT NULL THEN 'finished' WHEN error_count > 0 THEN 'errored' "
        "WHEN run_at > CURRENT_TIMESTAMP THEN 'scheduled' ELSE 'ready' END = 'ready' GROUP BY 1",
        database=database,
    )
    return {line.split("|")[0]: int(line.split("|")[1]) for line in rows.splitlines()}


@pytest.mark.parametrize("schema", [4, 5, 7])
def test_que_1_and_2_locked_jobs_run_the_rest_wait_from_run_at(database, locker, schema):
    psql({4: SCHEMA_4, 5: SCHEMA_5, 7: SCHEMA_7}[schema], database=database)
    written = time.monotonic()
    enqueue(database, schema, "mailers", 4, age=25)
    enqueue(database, schema, "mailers", 2, age=10)
    enqueue(database, schema, "mailers", 1, run_in=3600)  # scheduled for later
    enqueue(database, schema, None, 2, age=3)  # no queue given: `default`
    enqueue(database, schema, "reports", 3, age=400)
    mailers = ids(database, "queue = 'mailers'", first=2)
    locker.lock(mailers)  # the two oldest: being worked
    reports = ids(database, "queue = 'reports'")
    finish(database, reports[0])  # finished, kept (the job called `finish`)
    expire(database, reports[1])  # retries exhausted
    set_error(database, reports[2], 30)  # failed once, retried in 30 s
    retried = ids(database, "queue = 'mailers' AND run_at > now() - interval '20 seconds' AND run_at < now()")
    set_error(database, retried[0], -12)  # failed once, its retry time came 12 s ago: ready
    report = reading(database).tick()
    elapsed = time.monotonic() - written
    assert report.errors == ()
    assert by_queue(report) == {
        "mailers": (4, {"scheduled": 1, "running": 2, "failed": 0}),
        "default": (2, {"scheduled": 0, "running": 0, "failed": 0}),
        "reports": (0, {"scheduled": 1, "running": 0, "failed": 1}),
    }
    # Que's own `ready` leaves out the retried one; the locked ones it cannot see.
    assert que_ready(database) == {"mailers": 5, "default": 2}
    # The oldest unlocked mailers job was enqueued 25 s ago (the two locked ones too, but run).
    assert 25 <= latency_of(report, "mailers") <= 25 + elapsed
    assert 3 <= latency_of(report, "default") <= 3 + elapsed
    # The worker lets go (the job done and destroyed): the count follows.
    locker.connection.execute(f"SELECT pg_advisory_unlock({mailers[0]})")
    psql(f"DELETE FROM que_jobs WHERE id = {mailers[0]}", database=database)
    assert by_queue(reading(database).tick())["mailers"] == (4, {"scheduled": 1, "running": 1, "failed": 0})


def work(database: str, queue: str, pace: float, stop: threading.Event) -> None:
    """One worker as Que's runs a job (lib/que/locker.rb lock_jobs, lib/que/job_methods.rb): the
    next job in (priority, run_at, id) order, locked with pg_try_advisory_lock(id) in its session,
    run (`pace` seconds), destroyed (SQL[:destroy_job]), unlocked (pg_advisory_unlock)."""
    with psycopg.connect(url(database), autocommit=True) as connection:
        while not stop.is_set():
            row = connection.execute(
                "SELECT id FROM que_jobs WHERE queue = %s AND finished_at IS NULL AND expired_at IS NULL "
                "AND run_at <= now() ORDER BY priority, run_at, id LIMIT 1",
                (queue,),
            ).fetchone()
            if row is None:
                return
            locked = connection.execute(
                "WITH jobs AS MATERIALIZED (SELECT * FROM que_jobs WHERE id = %s) "
                "SELECT id FROM jobs WHERE pg_try_advisory_lock(id)",
                (row[0],),
            ).fetchone()
            assert locked is not None
            time.sleep(pace)
            connection.execute("DELETE FROM que_jobs WHERE id = %s", (row[0],))
            connection.execute("SELECT pg_advisory_unlock(%s)", (row[0],))


def test_a_worker_drains_a_backlog_and_latency_follows_the_oldest_waiting_run_at(database):
    psql(SCHEMA_7, database=database)
    for age in range(12):
        enqueue(database, 7, "mailers", 1, age=60 - age)  # one a second: run_at 60 s to 49 s ago
    stamps = [float(t) for t in psql(
        "SELECT extract(epoch FROM run_at) FROM que_jobs ORDER BY run_at", database=database
    ).split()]  # fmt: skip
    collector = reading(database)
    assert by_queue(collector.tick())["mailers"] == (12, {"scheduled": 0, "running": 0, "failed": 0})
    stop = threading.Event()
    worker = threading.Thread(target=work, args=(database, "mailers", 0.3, stop))
    worker.start()
    seen_running, previous = False, 12
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            started = time.time()
            report = collector.tick()
            ended = time.time()
            assert report.errors == ()
            size, figures = by_queue(report)["mailers"]
            running = figures["running"]
            seen_running = seen_running or running == 1
            # One worker: at most one job held; what is left only goes down.
            assert running <= 1 and size + running <= previous
            previous = size + running
            if size:
                # Jobs run in run_at order: those waiting are the last `size`, the oldest of them
                # became ready at stamps[12 - size].
                oldest = stamps[12 - size]
                assert started - oldest - 0.05 <= latency_of(report, "mailers") <= ended - oldest + 0.05
            if size == 0 and running == 0:
                break
            time.sleep(0.1)
    finally:
        stop.set()
        worker.join()
    assert seen_running and previous == 0
    assert by_queue(collector.tick())["mailers"] == (0, {"scheduled": 0, "running": 0, "failed": 0})


def test_a_lock_on_the_same_key_in_another_database_or_on_another_key_is_not_a_running_job(database, locker):
    psql(SCHEMA_7, database=database)
    # An id past 2**32: its lock's key is split between classid (high bits) and objid (low bits).
    psql("SELECT setval('que_jobs_id_seq', 4294967296 + 5)", database=database)
    enqueue(database, 7, "mailers", 3, age=5)
    first, second, third = sorted(ids(database, "true"))
    assert first > 2**32
    locker.lock([second])
    other = make_database("qmque")
    try:
        stranger = psycopg.connect(url(other), autocommit=True)
        try:
            # Another app's advisory lock on the same number, in another database; and one on a
            # number sharing `third`'s low 32 bits only.
            stranger.execute(f"SELECT pg_advisory_lock({third})")
            locker.connection.execute(f"SELECT pg_advisory_lock({third - 2**32})")
            report = reading(database).tick()
        finally:
            stranger.close()
    finally:
        drop_database(other)
    assert report.errors == ()
    assert by_queue(report) == {"mailers": (2, {"scheduled": 0, "running": 1, "failed": 0})}


def test_que_0_schema_3_and_a_table_without_queue(database, locker):
    psql(SCHEMA_3, database=database)
    enqueue(database, 3, None, 3, age=15)  # Que 0.x's default queue: '' (reported `default`)
    enqueue(database, 3, "mailers", 2, age=4)
    enqueue(database, 3, "mailers", 1, run_in=600)
    locker.lock(ids(database, "queue = ''", "job_id", first=1), "job_id")
    report = reading(database).tick()
    assert report.errors == ()
    # Que 0.x keeps no failed job: no failed figure.
    assert by_queue(report) == {
        "default": (2, {"scheduled": 0, "running": 1}),
        "mailers": (2, {"scheduled": 1, "running": 0}),
    }
    assert Que(None, True).describe(columns_of(database)) == ["Que: table que_jobs, schema 3 (Que 0.x)"]
    psql("ALTER TABLE que_jobs DROP COLUMN queue CASCADE", database=database)  # schema 1-2: one queue
    report = reading(database).tick()
    assert report.errors == () and by_queue(report) == {"default": (4, {"scheduled": 1, "running": 1})}


# Migration 4's que_lockers (lib/que/migrations/4/up.sql; unchanged since), its CHECK constraints
# and index left out; and a locker's row as lib/que/locker.rb writes it at start (SQL[:register_locker]:
# its connection's pg_backend_pid(), worker count and priorities, Ruby pid, hostname, listening, queues).
LOCKERS_4 = """
CREATE UNLOGGED TABLE que_lockers (
  pid integer NOT NULL CONSTRAINT que_lockers_pkey PRIMARY KEY, worker_count integer NOT NULL,
  worker_priorities integer[] NOT NULL, ruby_pid integer NOT NULL, ruby_hostname text NOT NULL,
  queues text[] NOT NULL, listening boolean NOT NULL);
"""


def register_locker(database: str, pid: int, queues: List[str]) -> None:
    listed = ", ".join(quoted(queue) for queue in queues)
    psql(
        "INSERT INTO que_lockers (pid, worker_count, worker_priorities, ruby_pid, ruby_hostname, listening, queues) "
        f"VALUES ({pid}, 6, '{{10,30,50,NULL,NULL,NULL}}', 4242, 'web.1', true, ARRAY[{listed}]::text[])",
        database=database,
    )


def test_consumers_are_the_live_lockers_that_take_the_queue(database, locker):
    psql(SCHEMA_7 + LOCKERS_4, database=database)
    for queue in ("mailers", "reports", "nobody", "it's"):
        enqueue(database, 7, queue, 1)
    collector = reading(database)
    report = collector.tick()
    assert report.errors == ()
    assert {queue: figures["consumers"] for queue, (_, figures) in by_queue(report).items()} == dict.fromkeys(
        ("mailers", "reports", "nobody", "it's"), 0
    )
    (live,) = locker.connection.execute("SELECT pg_backend_pid()").fetchone()
    register_locker(database, live, ["mailers", "it's"])
    # A process that died without deleting its row (its session is gone): not a consumer.
    register_locker(database, 2_000_000_000, ["reports"])
    report = collector.tick()
    assert report.errors == ()
    assert {queue: figures["consumers"] for queue, (_, figures) in by_queue(report).items()} == {
        "mailers": 1,
        "it's": 1,
        "reports": 0,
        "nobody": 0,
    }
    assert all("running_age" not in figures for _, figures in by_queue(report).values())
    # A role that may not read que_lockers: no consumers, nothing else lost.
    psql(
        f"DROP ROLE IF EXISTS qm_que_lockers; CREATE ROLE qm_que_lockers LOGIN PASSWORD '{PASSWORD}'; "
        f"GRANT CONNECT ON DATABASE {database} TO qm_que_lockers; GRANT SELECT ON que_jobs TO qm_que_lockers;",
        database=database,
    )
    try:
        limited = Collector(
            Settings.from_env({"QUEUE_METRICS_DATABASE_URLS": url(database, "qm_que_lockers", PASSWORD)})
        )
        report = limited.tick()
        assert report.errors == () and by_queue(report)["mailers"] == (1, {"scheduled": 0, "running": 0, "failed": 0})
        for datastore in limited.datastores:
            datastore.close()
    finally:
        psql(
            f"REVOKE ALL ON DATABASE {database} FROM qm_que_lockers; REVOKE ALL ON que_jobs FROM qm_que_lockers; "
            "DROP ROLE qm_que_lockers",
            database=database,
        )


def test_describe_names_each_schema(database):
    described = []
    for schema in (SCHEMA_4, SCHEMA_5, SCHEMA_7):
        psql("DROP TABLE IF EXISTS que_jobs; " + schema, database=database)
        described += Que(None, True).describe(columns_of(database))
    assert described == [
        "Que: table que_jobs, schema 4 (Que 1.0-1.2)",
        "Que: table que_jobs, schema 5 (Que 1.3-1.4)",
        "Que: table que_jobs, schema 6-7 (Que 2)",
    ]


def test_odd_queue_names_extras_off_and_a_table_of_another_shape(database, locker):
    psql(SCHEMA_7, database=database)
    names = ["with space", "it's", "ünïcödé", "{}", 'quo"te']
    for name in names:
        enqueue(database, 7, name, 2, age=6)
    locker.lock(ids(database, "queue = 'it''s'", first=1))
    report = reading(database, QUEUE_METRICS_EXTRAS="false").tick()
    assert report.errors == ()
    assert by_queue(report) == {name: (1 if name == "it's" else 2, {}) for name in names}
    assert "UNION" not in (Que(None, False).query(columns_of(database)) or "")
    psql("ALTER TABLE que_jobs DROP COLUMN expired_at", database=database)
    (line,) = reading(database).tick().errors
    assert line == (
        "que: table que_jobs has neither id with finished_at and expired_at (Que 1, 2) nor job_id: "
        "a migration not yet run?"
    )


def test_read_only_as_a_role_with_select_only_and_nothing_changes(database, locker):
    psql(SCHEMA_7, database=database)
    enqueue(database, 7, "mailers", 4, age=2)
    locker.lock(ids(database, "true")[:1])
    psql(
        f"DROP ROLE IF EXISTS qm_que_reader; CREATE ROLE qm_que_reader LOGIN PASSWORD '{PASSWORD}'; "
        f"GRANT CONNECT ON DATABASE {database} TO qm_que_reader; GRANT SELECT ON que_jobs TO qm_que_reader;",
        database=database,
    )

    def changes() -> str:
        return psql(
            "SELECT n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables WHERE relname = 'que_jobs'",
            database=database,
        )

    try:
        before = changes()
        collector = Collector(
            Settings.from_env({"QUEUE_METRICS_DATABASE_URLS": url(database, "qm_que_reader", PASSWORD)})
        )
        for _ in range(200):
            report = collector.tick()
            # pg_locks is readable by every role: the locked job shows as running.
            assert report.errors == () and by_queue(report)["mailers"] == (
                3,
                {"scheduled": 0, "running": 1, "failed": 0},
            )
        for datastore in collector.datastores:
            datastore.close()
        time.sleep(0.6)  # the statistics collector's flush
        assert changes() == before
        # The reader took no advisory lock of its own: only the locker's is there.
        assert psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'", database=database) == "1"
    finally:
        psql(f"REVOKE ALL ON DATABASE {database} FROM qm_que_reader", database=database)
        psql("REVOKE ALL ON que_jobs FROM qm_que_reader; DROP ROLE qm_que_reader", database=database)


def test_explain_at_a_million_finished_rows(database, locker):
    """Que 2 (schema 7): 1,000,000 finished rows (jobs that called `finish`; 1 % expired instead),
    10,000 waiting in 20 queues, 8 of them locked as a locker's buffer holds them."""
    psql(SCHEMA_7, database=database)
    psql(
        "INSERT INTO que_jobs (queue, priority, run_at, job_class, args, data, kwargs, job_schema_version, "
        "finished_at, expired_at, error_count) SELECT 'queue_' || (i % 20), 100, t, 'MailJob', '[]', '{}', '{}', 2, "
        "CASE WHEN i % 100 <> 0 THEN t END, CASE WHEN i % 100 = 0 THEN t END, CASE WHEN i % 100 = 0 THEN 15 ELSE 0 END "
        "FROM (SELECT i, now() - interval '1 day' + i * interval '50 ms' AS t FROM generate_series(1, 1000000) AS i) m",
        database=database,
    )
    psql(
        "INSERT INTO que_jobs (queue, priority, run_at, job_class, args, data, kwargs, job_schema_version) "
        "SELECT 'queue_' || (i % 20), 100, now() - interval '600 seconds' + i * interval '10 ms', 'MailJob', "
        "'[]', '{}', '{}', 2 FROM generate_series(1, 10000) AS i; ANALYZE que_jobs",
        database=database,
    )
    locker.lock(ids(database, "finished_at IS NULL AND expired_at IS NULL", first=8))
    columns = columns_of(database)
    full, lean = Que(None, True).query(columns), Que(None, False).query(columns)
    assert full and lean
    print("\nQue 2 (schema 7), 1,000,000 finished + 10,000 waiting:")
    # Size, latency, scheduled and running through que_poll_idx; expired jobs have no index.
    assert [table for table in seq_scans(full, database) if table == "que_jobs"] == ["que_jobs"]
    assert [table for table in seq_scans(lean, database) if table == "que_jobs"] == []
    print(f"  extras on: {median_ms(full, database):.1f} ms, off: {median_ms(lean, database):.1f} ms (median of 5)")
    report = reading(database).tick()
    assert report.errors == ()
    assert sum(s.size for s in report.samples) == 10000 - 8
    figures = [dict((f.name, f.value) for f in s.figures) for s in report.samples]
    assert sum(f["running"] for f in figures) == 8 and sum(f["failed"] for f in figures) == 10000
