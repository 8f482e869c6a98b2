"""Delayed Job on Postgres, against the real gem (Debian's ruby-delayed-job 4.1 and
ruby-delayed-job-active-record 4.1 on ActiveRecord 6.1): its own migration makes the table, its
own `enqueue` writes the rows, its own worker runs them, and its own `ready_to_run` scope is the
reference for `size`."""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Dict, Iterator, List, Optional

import pytest

from helpers.postgres import drop_database, make_database, psql, url
from helpers.workers import HELPERS, wait_for, worker_process
from queue_metrics.collector import Collector
from queue_metrics.config import Settings
from queue_metrics.sample import TickReport

DRIVER = os.path.join(HELPERS, "delayed_job.rb")
PASSWORD = "pw-Secr3t-x9"


@pytest.fixture
def database() -> Iterator[str]:
    name = make_database("qmdj")
    yield name
    drop_database(name)


def ruby(database: str, *arguments: str, env: Optional[Dict[str, str]] = None) -> str:
    done = subprocess.run(
        ["ruby", DRIVER, *arguments],
        env={**os.environ, "DATABASE_URL": url(database), **(env or {})},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return done.stdout


def enqueue(database: str, queue: str, count: int, run_in: float = 0.0, nap: float = 0.0) -> List[float]:
    return json.loads(ruby(database, "enqueue", queue, str(count), str(run_in), str(nap)))


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
        if sample.backend == "delayed_job"
    }


def test_sizes_are_the_gems_own_ready_count_and_latency_its_run_at(database):
    ruby(database, "schema")
    mailers = enqueue(database, "mailers", 3)
    plain = enqueue(database, "-", 2)  # no queue: read as `default`
    enqueue(database, "mailers", 2, run_in=3600)  # scheduled for later: not waiting
    ruby(database, "fail", "broken")
    before = time.time()
    report = reading(database).tick()
    after = time.time()
    assert report.errors == ()
    counts = json.loads(ruby(database, "counts"))
    assert (
        {queue: size for queue, (size, _) in by_queue(report).items() if size} == counts == {"mailers": 3, "default": 2}
    )
    assert by_queue(report) == {
        "mailers": (3, {"scheduled": 2, "running": 0, "failed": 0}),
        "default": (2, {"scheduled": 0, "running": 0, "failed": 0}),
        "broken": (0, {"scheduled": 0, "running": 0, "failed": 1}),
    }
    latencies = {sample.queue: sample.latency for sample in report.samples}
    for queue, stamps in (("mailers", mailers), ("default", plain)):
        assert before - min(stamps) - 0.05 <= latencies[queue] <= after - min(stamps) + 0.05
    assert latencies["broken"] == 0.0


def test_a_table_from_before_the_queue_column_is_one_queue(database):
    # Delayed Job 4.1 always writes `queue`, so rows are written here as 3.0's `enqueue` did
    # (collectiveidea/delayed_job v3.0.0, lib/delayed/backend/base.rb: priority, attempts 0, the
    # YAML handler, run_at = db_time_now, timestamps), into the table its migration made then.
    ruby(database, "schema", "--no-queue")
    psql(
        "INSERT INTO delayed_jobs (priority, attempts, handler, run_at, created_at, updated_at) "
        "SELECT 0, 0, '--- !ruby/struct:NapJob\nseconds: 0\n', now() AT TIME ZONE 'UTC', "
        "now() AT TIME ZONE 'UTC', now() AT TIME ZONE 'UTC' FROM generate_series(1, 4)",
        database=database,
    )
    report = reading(database).tick()
    assert report.errors == () and {q: size for q, (size, _) in by_queue(report).items()} == {"default": 4}


def test_a_real_worker_drains_a_backlog_and_the_drained_queue_stays_at_zero(database):
    ruby(database, "schema")
    stamps = enqueue(database, "mailers", 12, nap=0.4)
    collector = reading(database)
    first = by_queue(collector.tick())["mailers"]
    assert first[0] == 12
    seen_running = False
    with worker_process(["ruby", DRIVER, "work", "mailers"], {"DATABASE_URL": url(database)}):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            started = time.time()
            report = collector.tick()
            size, figures = by_queue(report)["mailers"]
            (sample,) = [s for s in report.samples if s.queue == "mailers"]
            seen_running = seen_running or figures["running"] == 1
            assert figures["running"] <= 1 and size + figures["running"] <= 12
            if size:
                # The oldest waiting job is one of those enqueued, no older than the first.
                waiting = stamps[12 - size - figures["running"] :]
                assert started - waiting[-1] - 0.05 <= sample.latency <= time.time() - stamps[0] + 0.05
            if size == 0 and figures["running"] == 0:
                break
            time.sleep(0.2)
    assert seen_running
    assert by_queue(report)["mailers"] == (0, {"scheduled": 0, "running": 0, "failed": 0})
    assert psql("SELECT count(*) FROM delayed_jobs", database=database) == "0"  # the gem deleted them
    assert by_queue(collector.tick())["mailers"] == (0, {"scheduled": 0, "running": 0, "failed": 0})


def test_running_age_grows_from_the_workers_own_lock_time(database):
    ruby(database, "schema")
    enqueue(database, "slow", 1, nap=60)
    enqueue(database, "calm", 1, run_in=3600)
    with worker_process(["ruby", DRIVER, "work", "slow"], {"DATABASE_URL": url(database)}):
        wait_for(
            lambda: psql("SELECT count(*) FROM delayed_jobs WHERE locked_at IS NOT NULL", database=database) == "1",
            "the worker to lock the job",
        )
        # When the gem's worker reserved it, as it recorded it (UTC, `timestamp without time zone`).
        locked = float(
            psql(
                "SELECT extract(epoch FROM locked_at AT TIME ZONE 'UTC') FROM delayed_jobs WHERE locked_at IS NOT NULL",
                database=database,
            )
        )
        collector = reading(database)
        ages = []
        for _ in range(3):
            report = collector.tick()
            now = time.time()
            (slow,) = [sample for sample in report.samples if sample.queue == "slow"]
            figures = {figure.name: figure.value for figure in slow.figures}
            assert figures["running"] == 1
            assert figures["running_age"] == pytest.approx(now - locked, abs=1.0)
            ages.append(figures["running_age"])
            (calm,) = [sample for sample in report.samples if sample.queue == "calm"]
            assert "running_age" not in {figure.name for figure in calm.figures}
            time.sleep(0.4)
        assert ages[0] < ages[1] < ages[2]


def test_a_job_locked_longer_than_max_run_time_is_ready_again_as_the_gem_says(database):
    ruby(database, "schema")
    enqueue(database, "slow", 1, nap=60)
    with worker_process(["ruby", DRIVER, "work", "slow"], {"DATABASE_URL": url(database)}):
        wait_for(
            lambda: psql("SELECT count(*) FROM delayed_jobs WHERE locked_at IS NOT NULL", database=database) == "1",
            "the worker to lock the job",
        )
        assert by_queue(reading(database).tick())["slow"] == (0, {"scheduled": 0, "running": 1, "failed": 0})
        time.sleep(2.2)
        # Its worker may have died: past max_run_time the gem hands it out again.
        report = reading(database, QUEUE_METRICS_DELAYED_JOB_MAX_RUN_TIME="2").tick()
        counts = json.loads(ruby(database, "counts", env={"DJ_MAX_RUN_TIME": "2"}))
    assert by_queue(report)["slow"] == (1, {"scheduled": 0, "running": 0, "failed": 0})
    assert counts == {"slow": 1}


def test_read_only_as_a_role_with_select_only_and_nothing_changes(database):
    ruby(database, "schema")
    enqueue(database, "mailers", 5)
    psql(
        f"DROP ROLE IF EXISTS qm_reader; CREATE ROLE qm_reader LOGIN PASSWORD '{PASSWORD}'; "
        f"GRANT CONNECT ON DATABASE {database} TO qm_reader; GRANT SELECT ON delayed_jobs TO qm_reader;",
        database=database,
    )

    def changes() -> str:
        return psql(
            "SELECT n_tup_ins, n_tup_upd, n_tup_del, n_tup_hot_upd FROM pg_stat_user_tables "
            "WHERE relname = 'delayed_jobs'",
            database=database,
        )

    try:
        before = changes()
        rows_before = psql("SELECT * FROM delayed_jobs ORDER BY id", database=database)
        collector = Collector(Settings.from_env({"QUEUE_METRICS_DATABASE_URLS": url(database, "qm_reader", PASSWORD)}))
        for _ in range(1000):
            report = collector.tick()
            assert report.errors == () and by_queue(report)["mailers"][0] == 5
        for datastore in collector.datastores:
            datastore.close()
        time.sleep(0.6)  # the statistics collector's flush
        assert changes() == before
        assert psql("SELECT * FROM delayed_jobs ORDER BY id", database=database) == rows_before
    finally:
        psql(f"REVOKE ALL ON DATABASE {database} FROM qm_reader", database=database)
        psql("REVOKE ALL ON delayed_jobs FROM qm_reader; DROP ROLE qm_reader", database=database)


def test_a_locked_table_and_a_table_of_another_shape_are_one_line_each(database):
    ruby(database, "schema")
    enqueue(database, "mailers", 1)
    collector = reading(database, QUEUE_METRICS_TIMEOUT="3")
    assert collector.tick().errors == ()
    # A migration holding its lock: our query gives up after lock_timeout, the loop goes on.
    holder = subprocess.Popen(
        ["psql", "-X", "-h", "127.0.0.1", "-U", "postgres", "-d", database],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        holder.stdin.write("BEGIN; LOCK TABLE delayed_jobs IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(30);\n")
        holder.stdin.flush()
        wait_for(
            lambda: (
                psql(
                    "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                    "WHERE c.relname = 'delayed_jobs' AND l.mode = 'AccessExclusiveLock' AND l.granted",
                    database=database,
                )
                == "1"
            ),
            "the lock",
        )
        started = time.monotonic()
        report = collector.tick()
        assert time.monotonic() - started < 3
    finally:
        holder.kill()
        holder.wait()
    (line,) = report.errors
    assert line.startswith("delayed_job: its tables are locked")
    psql("ALTER TABLE delayed_jobs DROP COLUMN failed_at", database=database)
    (line,) = collector.tick().errors
    assert line == "delayed_job: table delayed_jobs has no column failed_at: a migration not yet run?"


def test_two_databases_each_with_its_label(database):
    ruby(database, "schema")
    enqueue(database, "mailers", 2)
    other = make_database("qmdj")
    try:
        ruby(other, "schema")
        enqueue(other, "mailers", 3)
        env = {"DATABASE_URL": url(database), "HEROKU_POSTGRESQL_AMBER_URL": url(other)}
        report = Collector(Settings.from_env(env)).tick()
    finally:
        drop_database(other)
    assert report.errors == ()
    assert sorted((s.queue, s.size) for s in report.samples) == [("mailers", 2), ("mailers", 3)]
    assert [section.label for section in report.datastores] == ["database", "heroku_postgresql_amber"]


def test_doctor_says_what_it_found_in_each_database(database):
    from queue_metrics.doctor import checkup_all

    ruby(database, "schema")
    enqueue(database, "mailers", 1)
    empty = make_database("qmdj")
    try:
        env = {"QUEUE_METRICS_DATABASE_URLS": f"jobs={url(database)},app={url(empty)}"}
        result = checkup_all(Settings.from_env(env))
    finally:
        drop_database(empty)
    text = "\n".join(result.lines)
    assert "Read in" in text and "delayed_job: 1 queue" in text
    assert "Delayed Job: table delayed_jobs, max_run_time 14400 s" in text
    assert "No job table of a system read here (solid_queue, good_job, delayed_job" in text
