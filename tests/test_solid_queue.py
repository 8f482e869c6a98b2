"""Solid Queue on Postgres. The gem needs Rails 7.1+, which cannot be installed here: its tables
come from its own schema file (rails/solid_queue v1.5.0, lib/generators/solid_queue/install/
templates/db/queue_schema.rb, copied to tests/payloads/solid_queue/queue_schema.rb and loaded by
ActiveRecord), and its rows are written as its enqueue, worker and dispatcher code writes them
(helpers/solid_queue.py, each write with its source). Solid Queue's own `Queue#size` and
`#latency` (queue.rb) are the reference for what it counts."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Dict, Iterator, List

import pytest

from helpers import solid_queue as sq
from helpers.postgres import drop_database, make_database, psql, url
from helpers.sql_plans import median_ms, scans
from queue_metrics.collector import Collector
from queue_metrics.config import Settings
from queue_metrics.outputs.format import json_document, librato_lines, metric_queue_part
from queue_metrics.sample import TickReport
from queue_metrics.systems.solid_queue import CLAIMED, JOBS, NEEDED, PROCESSES, PROCESSES_NEEDED, SolidQueue
from queue_metrics.systems.sql import READABLE

PASSWORD = "pw-Secr3t-sq7"
ODD = 'it\'s a "queue" ünï {}'
SLACK = 0.05


@pytest.fixture
def database() -> Iterator[str]:
    name = make_database("qmsq")
    sq.schema(name)
    yield name
    drop_database(name)


@pytest.fixture(params=sorted(sq.SCHEMA_FILES))
def any_version(request) -> Iterator[str]:
    """A database with the tables of each version: 1.5.0's schema file, 0.2.1's migrations."""
    name = make_database("qmsq")
    sq.schema(name, request.param)
    yield name
    drop_database(name)


def reading(database: str, **env: str) -> Collector:
    return Collector(Settings.from_env({"QUEUE_METRICS_DATABASE_URLS": url(database), **env}))


# Figures checked by their own tests below (ages move; `consumers` needs workers' rows).
INCIDENT_FIGURES = ("due", "due_age", "running_age", "consumers")


def by_queue(report: TickReport) -> Dict[str, tuple]:
    return {
        sample.queue: (
            sample.size,
            {figure.name: figure.value for figure in sample.figures if figure.name not in INCIDENT_FIGURES},
        )
        for sample in report.samples
        if sample.backend == "solid_queue"
    }


def incident_figures(report: TickReport, queue: str) -> Dict[str, float]:
    (sample,) = [sample for sample in report.samples if (sample.backend, sample.queue) == ("solid_queue", queue)]
    return {figure.name: figure.value for figure in sample.figures if figure.name in INCIDENT_FIGURES}


def latencies(report: TickReport) -> Dict[str, float]:
    return {sample.queue: sample.latency for sample in report.samples}


def figures(scheduled: int = 0, running: int = 0, failed: int = 0, blocked: int = 0, paused: int = 0) -> dict:
    return {"scheduled": scheduled, "running": running, "failed": failed, "blocked": blocked, "paused": paused}


def test_size_is_what_is_ready_now_and_each_figure_its_executions(any_version):
    database = any_version
    mailers = sq.enqueue(database, "mailers", 3)
    plain = sq.enqueue(database, "default", 2)
    sq.enqueue(database, "mailers", 2, run_at=sq.now() + timedelta(hours=1))  # later: scheduled
    # Scheduled ten minutes ago for five minutes ago, and no dispatcher has moved them: ready now.
    long_ago = sq.now() - timedelta(minutes=10)
    due_at = long_ago + timedelta(minutes=5)
    sq.enqueue(database, "reports", 2, run_at=due_at, at=long_ago)
    worker = sq.register_worker(database)
    sq.enqueue(database, "busy", 3)
    sq.claim(database, "busy", 1, worker)  # running
    sq.fail(database, sq.claim(database, "busy", 1, worker))  # failed
    odd = sq.enqueue(database, ODD, 1)
    sq.pause(database, ODD)
    sq.pause(database, "idle")  # a paused queue that never had a job
    before = time.time()
    report = reading(database).tick()
    after = time.time()
    assert report.errors == ()
    assert by_queue(report) == {
        "mailers": (3, figures(scheduled=2)),
        "default": (2, figures()),
        "reports": (2, figures()),
        "busy": (1, figures(running=1, failed=1)),
        ODD: (1, figures(paused=1)),
        "idle": (0, figures(paused=1)),
    }
    own = sq.queue_size_and_latency(database)
    # Solid Queue's Queue#size counts ready executions only: ours adds the due scheduled ones.
    assert {queue: size for queue, (size, _) in own.items()} == {
        "mailers": 3,
        "default": 2,
        "reports": 0,
        "busy": 1,
        ODD: 1,
    }
    seen = latencies(report)
    for queue, stamps in (("mailers", mailers), ("default", plain), (ODD, odd), ("reports", [due_at])):
        assert before - min(stamps).timestamp() - SLACK <= seen[queue] <= after - min(stamps).timestamp() + SLACK
        if own[queue][0]:
            assert int(seen[queue]) in (own[queue][1], own[queue][1] - 1, own[queue][1] + 1)
    assert seen["idle"] == 0.0
    # The odd name is data in SQL, and its own in every output.
    document = json_document(report)
    assert {entry["queue"] for entry in document["queues"]} >= {ODD}  # type: ignore[union-attr]
    odd_paused = f"sample#queue.solid_queue.{metric_queue_part(ODD)}.paused=1"
    assert any(odd_paused in line for line in librato_lines(report))


def test_the_dispatcher_moves_due_jobs_and_the_ready_time_becomes_the_move(database):
    run_at = sq.now() + timedelta(seconds=1.5)
    sq.enqueue(database, "later", 4, run_at=run_at)
    collector = reading(database)
    assert by_queue(collector.tick())["later"] == (0, figures(scheduled=4))
    while time.time() < run_at.timestamp() + 0.3:
        time.sleep(0.1)
    report = collector.tick()
    # Due and not yet moved: ready now, waiting since its scheduled time.
    assert by_queue(report)["later"] == (4, figures())
    assert latencies(report)["later"] >= time.time() - run_at.timestamp() - 0.5
    sq.dispatch_due(database)
    moved = time.time()
    report = collector.tick()
    assert by_queue(report)["later"] == (4, figures())
    assert sq.queue_size_and_latency(database)["later"][0] == 4
    # A moved job's ready time is the move (ReadyExecution#created_at), as Solid Queue's latency.
    assert latencies(report)["later"] <= time.time() - moved + 0.5


def test_blocked_jobs_count_when_the_dispatcher_would_release_them(any_version):
    database = any_version
    long_ago = sq.now() - timedelta(minutes=10)
    # Key a: a job holds the semaphore (fresh: re-taken a minute ago), two wait behind it, their
    # blocks expired: the limit holds them, not the dispatcher. Blocked.
    sq.enqueue(database, "limited", 3, concurrency_key="a", at=long_ago)
    psql(
        "UPDATE solid_queue_semaphores SET expires_at = now() AT TIME ZONE 'UTC' + interval '2 minutes'",
        database=database,
    )
    # Key b: two blocked behind a semaphore that expired (its holder died): the maintenance
    # drops the semaphore and releases one of them: one ready, one still blocked.
    sq.enqueue(database, "limited", 3, concurrency_key="b", at=long_ago)
    # Key c: blocked within its concurrency_duration: blocked.
    sq.enqueue(database, "limited", 2, concurrency_key="c")
    worker = sq.register_worker(database)
    holders = sq.claim(database, "limited", 3, worker)
    assert len(holders) == 3
    report = reading(database).tick()
    assert report.errors == ()
    assert by_queue(report)["limited"] == (1, figures(running=3, blocked=4))
    expired = long_ago + sq.DEFAULT_CONCURRENCY_DURATION
    assert abs(latencies(report)["limited"] - (time.time() - expired.timestamp())) < 1.0
    # Key c's holder finishes: Solid Queue signals the semaphore and releases the next blocked job
    # at once (job/concurrency_controls.rb #unblock_next_blocked_job) - as a ready execution.
    psql(
        "BEGIN; UPDATE solid_queue_semaphores SET value = value + 1 WHERE key = 'c';"
        "UPDATE solid_queue_semaphores SET value = value - 1 WHERE key = 'c' AND value > 0;"
        "INSERT INTO solid_queue_ready_executions (job_id, queue_name, priority, created_at) "
        "SELECT job_id, queue_name, priority, now() AT TIME ZONE 'UTC' FROM solid_queue_blocked_executions "
        "WHERE concurrency_key = 'c';"
        "DELETE FROM solid_queue_blocked_executions WHERE concurrency_key = 'c'; COMMIT;",
        database=database,
    )
    assert by_queue(reading(database).tick())["limited"] == (2, figures(running=3, blocked=3))


def test_a_worker_drains_a_backlog_and_the_drained_queue_stays_at_zero(database):
    stamps: List[float] = []
    for _ in range(8):
        stamps += [stamp.timestamp() for stamp in sq.enqueue(database, "mailers", 1)]
        time.sleep(0.05)
    collector = reading(database)
    worker = sq.register_worker(database)
    left = 8
    while left:
        taken = sq.claim(database, "mailers", 1, worker)
        left -= len(taken)
        started = time.time()
        report = collector.tick()
        assert by_queue(report)["mailers"] == (left, figures(running=1, failed=0))
        if left:
            oldest = stamps[8 - left]
            assert started - oldest - SLACK <= latencies(report)["mailers"] <= time.time() - oldest + SLACK
        sq.finish(database, taken)
    report = collector.tick()
    assert by_queue(report)["mailers"] == (0, figures())
    assert latencies(report)["mailers"] == 0.0
    assert psql("SELECT count(*) FROM solid_queue_jobs WHERE finished_at IS NOT NULL", database=database) == "8"


def test_extras_off_reads_size_and_latency_only(database):
    sq.enqueue(database, "mailers", 2)
    sq.pause(database, "idle")
    report = reading(database, QUEUE_METRICS_EXTRAS="false").tick()
    assert report.errors == () and by_queue(report) == {"mailers": (2, {})}


def test_read_only_as_a_role_with_select_only_and_nothing_changes(database):
    sq.enqueue(database, "mailers", 5)
    tables = ", ".join(NEEDED)
    psql(
        f"DROP ROLE IF EXISTS qm_sq_reader; CREATE ROLE qm_sq_reader LOGIN PASSWORD '{PASSWORD}'; "
        f"GRANT CONNECT ON DATABASE {database} TO qm_sq_reader; GRANT SELECT ON {tables} TO qm_sq_reader;",
        database=database,
    )

    def changes() -> str:
        return psql(
            "SELECT sum(n_tup_ins), sum(n_tup_upd), sum(n_tup_del) FROM pg_stat_user_tables "
            "WHERE relname LIKE 'solid_queue%'",
            database=database,
        )

    try:
        before = changes()
        collector = Collector(
            Settings.from_env({"QUEUE_METRICS_DATABASE_URLS": url(database, "qm_sq_reader", PASSWORD)})
        )
        for _ in range(200):
            report = collector.tick()
            assert report.errors == () and by_queue(report)["mailers"][0] == 5
            # solid_queue_processes not granted: no `consumers`, and nothing else lost.
            assert "consumers" not in incident_figures(report, "mailers")
        for datastore in collector.datastores:
            datastore.close()
        time.sleep(0.6)  # the statistics collector's flush
        assert changes() == before
    finally:
        psql(f"REVOKE ALL ON DATABASE {database} FROM qm_sq_reader", database=database)
        psql(f"REVOKE ALL ON {tables} FROM qm_sq_reader; DROP ROLE qm_sq_reader", database=database)


def test_tables_of_another_shape_are_one_line_each(database):
    sq.enqueue(database, "mailers", 1)
    collector = reading(database)
    assert collector.tick().errors == ()
    psql("ALTER TABLE solid_queue_blocked_executions DROP COLUMN expires_at", database=database)
    (line,) = collector.tick().errors
    assert line == (
        "solid_queue: table solid_queue_blocked_executions has no column expires_at: a migration not yet run?"
    )
    psql(
        "ALTER TABLE solid_queue_blocked_executions ADD COLUMN expires_at timestamp; DROP TABLE solid_queue_semaphores",
        database=database,
    )
    (line,) = collector.tick().errors
    assert line == "solid_queue: no table solid_queue_semaphores: a migration not yet run?"


def test_a_null_or_odd_value_is_never_a_wrong_number(database):
    # The schema makes queue_name and created_at NOT NULL; a table changed by hand may not be.
    psql("ALTER TABLE solid_queue_ready_executions ALTER COLUMN created_at DROP NOT NULL", database=database)
    sq.enqueue(database, "mailers", 2)
    psql("UPDATE solid_queue_ready_executions SET created_at = NULL", database=database)
    report = reading(database).tick()
    # Two ready, no known ready time: size 2, latency unknown (min() skips NULLs), not a number.
    assert report.errors == () and by_queue(report)["mailers"][0] == 2
    assert latencies(report)["mailers"] is None


# --- Stuck jobs, due jobs no dispatcher moves, queues no worker takes (issue 27) ---------------


def test_due_jobs_with_no_dispatcher_then_the_dispatcher_moves_them(database):
    run_at = sq.now() + timedelta(seconds=1)
    sq.enqueue(database, "later", 3, run_at=run_at)
    collector = reading(database)
    assert incident_figures(collector.tick(), "later") == {"due": 0, "consumers": 0}
    while time.time() < run_at.timestamp() + 0.3:
        time.sleep(0.1)
    ages = []
    for _ in range(2):
        report = collector.tick()
        now = time.time()
        found = incident_figures(report, "later")
        # Counted in size as well: `due` says which part of it no dispatcher has moved.
        assert found["due"] == by_queue(report)["later"][0] == 3
        assert found["due_age"] == pytest.approx(now - run_at.timestamp(), abs=0.5)
        ages.append(found["due_age"])
        time.sleep(0.3)
    assert ages[1] > ages[0]
    sq.dispatch_due(database)
    report = collector.tick()
    assert incident_figures(report, "later") == {"due": 0, "consumers": 0} and by_queue(report)["later"][0] == 3


def test_running_age_is_the_oldest_claim(database):
    worker = sq.register_worker(database, queues="busy")
    sq.enqueue(database, "busy", 3)
    before = time.time()
    sq.claim(database, "busy", 1, worker)
    after = time.time()
    time.sleep(0.5)
    sq.claim(database, "busy", 1, worker)
    collector = reading(database)
    ages = []
    for _ in range(2):
        report = collector.tick()
        now = time.time()
        found = incident_figures(report, "busy")
        assert now - after - SLACK <= found["running_age"] <= now - before + SLACK
        assert by_queue(report)["busy"] == (1, figures(running=2))
        ages.append(found["running_age"])
        time.sleep(0.3)
    assert ages[1] > ages[0]
    sq.finish(database, psql("SELECT job_id FROM solid_queue_claimed_executions", database=database).split())
    assert "running_age" not in incident_figures(reading(database).tick(), "busy")


def test_consumers_are_the_live_workers_whose_queues_take_the_queue(database):
    for queue in ("mailers", "default", "reports_daily", "nobody"):
        sq.enqueue(database, queue, 1)
    sq.register_worker(database, queues="mailers,default")
    sq.register_worker(database, queues="reports*")
    sq.register_worker(database, queues="*", heartbeat=sq.now() - timedelta(minutes=6))  # dead
    collector = reading(database)
    report = collector.tick()
    assert report.errors == ()
    consumers = {
        queue: incident_figures(report, queue)["consumers"]
        for queue in ("mailers", "default", "reports_daily", "nobody")
    }
    assert consumers == {"mailers": 1, "default": 1, "reports_daily": 1, "nobody": 0}
    sq.register_worker(database, queues="*")
    assert incident_figures(collector.tick(), "nobody")["consumers"] == 1
    # A live worker whose queues cannot be read: unknown everywhere, never counted short.
    sq.register_worker(database, metadata="{not json")
    report = collector.tick()
    assert report.errors == ()
    assert all("consumers" not in incident_figures(report, queue) for queue in consumers)
    assert by_queue(report)["mailers"] == (1, figures())


# --- Cost: the query at 1,000,000 finished jobs and 10,000 waiting ------------------------------

FINISHED = 1_000_000
READY_ROWS = 10_000


def test_the_query_is_served_by_solid_queues_indexes_at_a_million_finished_jobs(database):
    # Bulk rows as the gem leaves them: finished jobs keep their row (preserve_finished_jobs) and
    # lose every execution; waiting jobs have a ready execution; a few scheduled, claimed,
    # failed, blocked. Queue names spread over 20 queues.
    psql(
        f"""
        INSERT INTO solid_queue_jobs (queue_name, class_name, priority, active_job_id, scheduled_at,
            finished_at, created_at, updated_at)
        SELECT 'queue_' || (i % 20), 'NapJob', 0, md5(i::text), t, t + interval '1 second', t, t
        FROM generate_series(1, {FINISHED}) AS i,
             LATERAL (SELECT now() AT TIME ZONE 'UTC' - interval '1 day' + i * interval '50 ms' AS t) AS at;
        INSERT INTO solid_queue_jobs (queue_name, class_name, priority, active_job_id, scheduled_at,
            created_at, updated_at)
        SELECT 'queue_' || (i % 20), 'NapJob', 0, md5('w' || i), now() AT TIME ZONE 'UTC',
            now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC'
        FROM generate_series(1, {READY_ROWS + 400}) AS i;
        INSERT INTO solid_queue_ready_executions (job_id, queue_name, priority, created_at)
        SELECT id, queue_name, 0, created_at FROM solid_queue_jobs WHERE finished_at IS NULL
        ORDER BY id LIMIT {READY_ROWS};
        INSERT INTO solid_queue_scheduled_executions (job_id, queue_name, priority, scheduled_at, created_at)
        SELECT id, queue_name, 0, created_at + interval '1 hour', created_at FROM solid_queue_jobs
        WHERE finished_at IS NULL ORDER BY id OFFSET {READY_ROWS} LIMIT 100;
        INSERT INTO solid_queue_processes (kind, last_heartbeat_at, pid, name, created_at)
        VALUES ('Worker', now(), 1, 'worker-1', now());
        INSERT INTO solid_queue_claimed_executions (job_id, process_id, created_at)
        SELECT id, 1, created_at FROM solid_queue_jobs WHERE finished_at IS NULL
        ORDER BY id OFFSET {READY_ROWS + 100} LIMIT 100;
        INSERT INTO solid_queue_failed_executions (job_id, error, created_at)
        SELECT id, '{{}}', created_at FROM solid_queue_jobs WHERE finished_at IS NULL
        ORDER BY id OFFSET {READY_ROWS + 200} LIMIT 100;
        INSERT INTO solid_queue_blocked_executions
            (job_id, queue_name, priority, concurrency_key, expires_at, created_at)
        SELECT id, queue_name, 0, 'key_' || queue_name, created_at - interval '1 minute', created_at
        FROM solid_queue_jobs WHERE finished_at IS NULL ORDER BY id OFFSET {READY_ROWS + 300} LIMIT 100;
        INSERT INTO solid_queue_pauses (queue_name, created_at) VALUES ('queue_3', now());
        ANALYZE;
        """,
        database=database,
    )
    # Every column read, the workers' table too (issue 27's running_age and consumers).
    columns = {**NEEDED, CLAIMED: NEEDED[CLAIMED] | {"created_at"}, PROCESSES: PROCESSES_NEEDED | {READABLE}}
    query = SolidQueue(None, True).query(columns)
    assert query is not None and "solid_queue_processes" in query
    scans_of_jobs = [scan for scan in scans(query, database) if scan[1] == JOBS]
    assert scans_of_jobs and all(kind != "Seq Scan" for kind, _, _ in scans_of_jobs)
    assert all(index == "solid_queue_jobs_pkey" for _, _, index in scans_of_jobs)
    for extras in (True, False):
        timed = SolidQueue(None, extras).query(columns)
        print(
            f"solid_queue query (extras {'on' if extras else 'off'}) at {FINISHED} finished jobs and "
            f"{READY_ROWS} ready: median of 5 EXPLAIN ANALYZE {median_ms(timed, database):.2f} ms"
        )
    report = reading(database).tick()
    assert report.errors == ()
    sizes = {queue: size for queue, (size, _) in by_queue(report).items()}
    # And one per expired blocked key, whose semaphore is gone: one key per queue.
    assert sum(sizes.values()) == READY_ROWS + 20
    assert by_queue(report)["queue_3"][1]["paused"] == 1


def test_an_app_clock_ahead_of_the_databases_never_gives_a_negative_latency(database):
    """Rails writes `created_at` from the app's clock, the query subtracts it from the database's
    `now()`: a dyno whose clock runs ahead writes ready times in the database's future. The job
    has waited no time: latency 0, never below (as timestamps.latency says for Redis systems)."""
    sq.enqueue(database, "default", 2, at=sq.now() + timedelta(seconds=3))
    report = reading(database).tick()
    assert report.errors == ()
    assert by_queue(report)["default"][0] == 2
    assert latencies(report)["default"] == 0.0
