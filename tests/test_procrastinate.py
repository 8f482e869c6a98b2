"""procrastinate on Postgres, against the real library (PyPI procrastinate 3.10 with psycopg): its
own `schema --apply` makes the tables, its own `defer` writes the jobs, its own worker runs them,
and its own fetch function (procrastinate_fetch_job_v2, in a transaction rolled back) and
`list_queues` are the references for `size`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Dict, Iterator, List, Optional

import procrastinate
import psycopg
import pytest

from helpers.postgres import drop_database, make_database, psql, url
from helpers.sql_plans import median_ms, scans
from helpers.workers import HELPERS, wait_for, worker_process
from queue_metrics.collector import Collector
from queue_metrics.config import Settings
from queue_metrics.outputs.format import json_document, librato_lines, metric_queue_part
from queue_metrics.sample import TickReport
from queue_metrics.systems.procrastinate import Procrastinate, ProcrastinateSettings

TESTS = os.path.dirname(HELPERS)
BIN = os.path.dirname(sys.executable)
APP = "helpers.procrastinate_app.app"
ODD = "Mails with spaces 'quoted' ünï {}"
PASSWORD = "pw-Secr3t-x9"


def env_of(database: str) -> Dict[str, str]:
    return {"PROCRASTINATE_DATABASE_URL": url(database), "PYTHONPATH": TESTS}


@pytest.fixture
def database() -> Iterator[str]:
    name = make_database("qmpc")
    subprocess.run(
        [os.path.join(BIN, "procrastinate"), f"--app={APP}", "schema", "--apply"],
        env={**os.environ, **env_of(name)},
        check=True,
        capture_output=True,
        timeout=120,
    )
    yield name
    drop_database(name)


@pytest.fixture
def app(database):
    from helpers import procrastinate_app

    connector = procrastinate.PsycopgConnector(conninfo=url(database))
    with procrastinate_app.app.replace_connector(connector), procrastinate_app.app.open():
        yield procrastinate_app


def defer(task, count: int, **options) -> List[float]:
    """Defers `count` jobs; the time each was deferred (bounds: just before its defer)."""
    stamps = []
    for _ in range(count):
        stamps.append(time.time())
        task.configure(**options).defer()
    return stamps


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
        if sample.backend == "procrastinate"
    }


def running_age(report: TickReport, queue: str) -> Optional[float]:
    (sample,) = [s for s in report.samples if (s.backend, s.queue) == ("procrastinate", queue)]
    return next((figure.value for figure in sample.figures if figure.name == "running_age"), None)


def status_of(database: str, where: str) -> str:
    return psql(f"SELECT string_agg(status::text, ',') FROM procrastinate_jobs WHERE {where}", database=database)


def fetchable(database: str, queue: str) -> int:
    """How many jobs procrastinate's own fetch function hands out now from `queue`, one after
    the other (a lock's next job waits for the one handed out), in a transaction rolled back."""
    with psycopg.connect(url(database)) as connection:
        count = 0
        while connection.execute("SELECT id FROM procrastinate_fetch_job_v2(%s, NULL)", ([queue],)).fetchone()[0]:
            count += 1
        connection.rollback()
    return count


def test_size_is_what_procrastinates_fetch_hands_out_and_latency_its_defer_time(app, database):
    mail = defer(app.nap, 3, queue="mail")
    plain = defer(app.nap, 2)
    defer(app.nap, 2, queue="mail", schedule_in={"hours": 1})  # later: scheduled, not waiting
    defer(app.nap, 3, queue="mail", lock="customer-1")  # one at a time: 1 ready, 2 blocked
    odd = defer(app.nap, 1, queue=ODD)
    app.broken.configure(queue="broken").defer()
    with worker_process(
        [os.path.join(BIN, "procrastinate"), f"--app={APP}", "worker", "--queues", "broken", "--wait"],
        env_of(database),
    ):
        wait_for(lambda: status_of(database, "queue_name = 'broken'") == "failed", "the job to fail")
    before = time.time()
    report = reading(database, QUEUE_METRICS_PROCRASTINATE_TABLE_SCAN="true").tick()
    after = time.time()
    assert report.errors == ()
    queues = by_queue(report)
    assert queues == {
        "mail": (4, {"scheduled": 2, "blocked": 2, "running": 0, "failed": 0}),
        "default": (2, {"scheduled": 0, "blocked": 0, "running": 0, "failed": 0}),
        ODD: (1, {"scheduled": 0, "blocked": 0, "running": 0, "failed": 0}),
        "broken": (0, {"scheduled": 0, "blocked": 0, "running": 0, "failed": 1}),
    }
    for queue, (size, _) in queues.items():
        assert size == fetchable(database, queue)
    # procrastinate's own figure: its `todo` counts the scheduled and the blocked jobs too.
    own = {row["name"]: row for row in app.app.job_manager.list_queues()}
    for queue, (size, figures) in queues.items():
        assert own[queue]["todo"] == size + figures["scheduled"] + figures["blocked"]
        assert own[queue]["failed"] == figures["failed"]
    latencies = {sample.queue: sample.latency for sample in report.samples}
    for queue, stamps in (("mail", mail), ("default", plain), (ODD, odd)):
        assert before - stamps[0] - 0.5 <= latencies[queue] <= after - stamps[0] + 0.05
    assert latencies["broken"] == 0.0
    # An odd name is data: it comes out whole, escaped by the output, not cut.
    assert f"sample#queue.procrastinate.{metric_queue_part(ODD)}.size=1" in " ".join(librato_lines(report))
    assert ODD in [entry["queue"] for entry in json_document(report)["queues"]]  # type: ignore[index, union-attr]
    # Without the table scan, no failed count; with extras off, size and latency only.
    without_scan = by_queue(reading(database).tick())
    assert "broken" not in without_scan  # only failed jobs there: a queue it does not see
    assert without_scan["mail"] == (4, {"scheduled": 2, "blocked": 2, "running": 0})
    assert by_queue(reading(database, QUEUE_METRICS_EXTRAS="false").tick())["mail"] == (4, {})


def test_a_due_scheduled_job_counts_from_its_scheduled_time_and_a_running_lock_blocks(app, database):
    # Scheduled 1.5 s ahead: scheduled now, due (and waiting since then) afterwards.
    app.nap.configure(queue="mail", schedule_in={"seconds": 1.5}).defer()
    scheduled_at = float(psql("SELECT extract(epoch FROM scheduled_at) FROM procrastinate_jobs", database=database))
    collector = reading(database)
    assert by_queue(collector.tick())["mail"] == (0, {"scheduled": 1, "blocked": 0, "running": 0})
    wait_for(lambda: time.time() > scheduled_at + 1.0, "the job to be due")
    before = time.time()
    report = collector.tick()
    after = time.time()
    assert by_queue(report)["mail"] == (1, {"scheduled": 0, "blocked": 0, "running": 0})
    (sample,) = report.samples
    assert before - scheduled_at - 0.05 <= sample.latency <= after - scheduled_at + 0.05
    assert fetchable(database, "mail") == 1
    # A job running with a lock holds back the lock's next job, in any queue.
    app.nap.configure(queue="slow", lock="L").defer(seconds=60)
    app.nap.configure(queue="mail", lock="L").defer()
    with worker_process(
        [os.path.join(BIN, "procrastinate"), f"--app={APP}", "worker", "--queues", "slow"], env_of(database)
    ):
        wait_for(lambda: status_of(database, "queue_name = 'slow'") == "doing", "the worker to start the job")
        queues = by_queue(collector.tick())
        assert queues["slow"] == (0, {"scheduled": 0, "blocked": 0, "running": 1})
        assert queues["mail"] == (1, {"scheduled": 0, "blocked": 1, "running": 0})
        assert fetchable(database, "mail") == 1


def test_a_real_worker_drains_a_backlog_and_the_drained_queue_stays_at_zero(app, database):
    stamps = defer(app.nap, 12, queue="mail")
    psql("UPDATE procrastinate_jobs SET args = '{\"seconds\": 0.4}'", database=database)
    collector = reading(database)
    assert by_queue(collector.tick())["mail"][0] == 12
    seen_running = False
    with worker_process(
        [os.path.join(BIN, "procrastinate"), f"--app={APP}", "worker", "--queues", "mail", "--concurrency", "1"],
        env_of(database),
    ):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            started = time.time()
            report = collector.tick()
            size, figures = by_queue(report)["mail"]
            (sample,) = [s for s in report.samples if s.queue == "mail"]
            seen_running = seen_running or figures["running"] == 1
            assert figures["running"] <= 1 and size + figures["running"] <= 12
            if size:
                # The oldest waiting job is one of those deferred, no older than the first.
                waiting = stamps[12 - size - figures["running"] :]
                assert started - waiting[-1] - 0.5 <= sample.latency <= time.time() - stamps[0] + 0.05
            if size == 0 and figures["running"] == 0:
                break
            time.sleep(0.2)
    assert seen_running
    assert by_queue(report)["mail"] == (0, {"scheduled": 0, "blocked": 0, "running": 0})
    assert psql("SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'", database=database) == "12"


def test_running_age_grows_from_the_started_event_a_real_worker_writes(app, database):
    defer(app.nap, 1, queue="slow")
    defer(app.nap, 1, queue="idle", schedule_in={"hours": 1})
    psql("UPDATE procrastinate_jobs SET args = '{\"seconds\": 30}'", database=database)
    with worker_process(
        [os.path.join(BIN, "procrastinate"), f"--app={APP}", "worker", "--queues", "slow", "--concurrency", "1"],
        env_of(database),
    ):
        wait_for(lambda: status_of(database, "queue_name = 'slow'") == "doing", "the worker to take the job")
        # When the worker took it, as procrastinate recorded it (the status trigger's event).
        started = float(
            psql("SELECT extract(epoch FROM at) FROM procrastinate_events WHERE type = 'started'", database=database)
        )
        collector = reading(database)
        ages = []
        for _ in range(3):
            report = collector.tick()
            now = time.time()
            assert by_queue(report)["slow"][1]["running"] == 1
            assert running_age(report, "slow") == pytest.approx(now - started, abs=1.0)
            assert running_age(report, "idle") is None
            ages.append(running_age(report, "slow"))
            time.sleep(0.4)
        assert ages[0] < ages[1] < ages[2]


def test_read_only_as_a_role_with_select_only_and_nothing_changes(app, database):
    defer(app.nap, 5, queue="mail")
    tables = "procrastinate_jobs, procrastinate_events"
    psql(
        f"DROP ROLE IF EXISTS qm_reader; CREATE ROLE qm_reader LOGIN PASSWORD '{PASSWORD}'; "
        f"GRANT CONNECT ON DATABASE {database} TO qm_reader; GRANT SELECT ON {tables} TO qm_reader;",
        database=database,
    )

    def changes() -> str:
        return psql(
            "SELECT sum(n_tup_ins), sum(n_tup_upd), sum(n_tup_del) FROM pg_stat_user_tables",
            database=database,
        )

    try:
        before = changes()
        collector = Collector(Settings.from_env({"QUEUE_METRICS_DATABASE_URLS": url(database, "qm_reader", PASSWORD)}))
        for _ in range(200):
            report = collector.tick()
            assert report.errors == () and by_queue(report)["mail"][0] == 5
        for datastore in collector.datastores:
            datastore.close()
        time.sleep(0.6)  # the statistics collector's flush
        assert changes() == before
    finally:
        psql(f"REVOKE ALL ON DATABASE {database} FROM qm_reader", database=database)
        psql(f"REVOKE ALL ON {tables} FROM qm_reader; DROP ROLE qm_reader", database=database)


def test_tables_of_another_shape_are_one_line_each(app, database):
    defer(app.nap, 1, queue="mail")
    collector = reading(database)
    assert collector.tick().errors == ()
    psql("ALTER TABLE procrastinate_jobs DROP COLUMN lock CASCADE", database=database)
    (line,) = collector.tick().errors
    assert line == "procrastinate: table procrastinate_jobs has no column lock: a migration not yet run?"


def test_the_queries_are_served_by_procrastinates_indexes_at_a_million_finished_jobs(database):
    # Jobs and events as the schema's triggers write them (deferred, started, succeeded), in bulk.
    psql(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, status, args) "
        "SELECT 'q' || (g % 5), 'nap', 'succeeded', '{}' FROM generate_series(1, 1000000) g; "
        "INSERT INTO procrastinate_events (job_id, type, at) SELECT id, 'deferred', now() - interval '1 day' "
        "FROM procrastinate_jobs; "
        "INSERT INTO procrastinate_jobs (queue_name, task_name, status, args, lock, scheduled_at) "
        "SELECT 'q' || (g % 5), 'nap', 'todo', '{}', CASE WHEN g % 10 = 0 THEN 'lock' || (g % 100) END, "
        "CASE WHEN g % 7 = 0 THEN now() + interval '1 hour' END FROM generate_series(1, 10000) g; "
        "INSERT INTO procrastinate_jobs (queue_name, task_name, status, args, lock) "
        "SELECT 'q' || (g % 5), 'nap', 'doing', '{}', 'lock' || g FROM generate_series(1, 20) g; "
        "ANALYZE",
        database=database,
    )
    columns = {
        "procrastinate_jobs": frozenset({"id", "queue_name", "status", "scheduled_at", "lock", "priority"}),
        "procrastinate_events": frozenset({"job_id", "type", "at"}),
    }
    timings = {}
    for label, settings, extras in (
        ("size and latency (extras off)", ProcrastinateSettings(), False),
        ("default: + scheduled, blocked, running", ProcrastinateSettings(), True),
    ):
        sql = Procrastinate(settings, extras).query(columns)
        assert sql is not None
        found = scans(sql, database)
        assert not [scan for scan in found if scan[0] == "Seq Scan"], found
        assert {relation for _, relation, _ in found} == {"procrastinate_jobs", "procrastinate_events"}
        timings[label] = median_ms(sql, database)
    # `failed`: no index serves it; what the table scan costs at this size.
    sql = Procrastinate(ProcrastinateSettings(table_scan=True), True).query(columns)
    assert sql is not None
    assert ("Seq Scan", "procrastinate_jobs", "") in scans(sql, database)
    timings["QUEUE_METRICS_PROCRASTINATE_TABLE_SCAN=true: + failed"] = median_ms(sql, database)
    for label, milliseconds in timings.items():
        print(f"procrastinate, 1,000,000 finished + 10,000 todo: {label}: {milliseconds:.1f} ms")
