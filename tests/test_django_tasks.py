"""django-tasks' database backend on Postgres, against the real library (PyPI django-tasks 0.12
and django-tasks-db 0.13 on Django 5.2): its own migrations make the table, its own `enqueue`
writes the rows, its own `db_worker` runs them, and its own `DBTaskResult.objects.ready()` is
the reference for `size`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Dict, Iterator, List

import pytest

from helpers.postgres import drop_database, make_database, psql, url
from helpers.sql_plans import median_ms, scans
from helpers.workers import HELPERS, worker_process
from queue_metrics.collector import Collector
from queue_metrics.config import Settings
from queue_metrics.outputs.format import json_document, librato_lines, metric_queue_part
from queue_metrics.sample import TickReport
from queue_metrics.systems.django_tasks import NEEDED, DjangoTasks, DjangoTasksSettings

DRIVER = os.path.join(HELPERS, "django_tasks_driver.py")
ADMIN = os.path.join(os.path.dirname(sys.executable), "django-admin")
TABLE = "django_tasks_database_dbtaskresult"
# A queue name the settings list (django-tasks checks it at enqueue).
ODD = "Mails with spaces 'quoted' ünï"
PASSWORD = "pw-Secr3t-x9"


def env_of(database: str) -> Dict[str, str]:
    return {
        "DJANGO_TASKS_DATABASE_URL": url(database),
        "DJANGO_SETTINGS_MODULE": "helpers.django_tasks_settings",
        "PYTHONPATH": os.path.dirname(HELPERS),
    }


@pytest.fixture
def database() -> Iterator[str]:
    name = make_database("qmdt")
    subprocess.run([ADMIN, "migrate"], env={**os.environ, **env_of(name)}, check=True, capture_output=True, timeout=180)
    yield name
    drop_database(name)


def driver(database: str, *arguments: str) -> str:
    done = subprocess.run(
        [sys.executable, DRIVER, *arguments],
        env={**os.environ, **env_of(database)},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return done.stdout


def enqueue(
    database: str, queue: str, count: int, run_in: float = 0.0, nap: float = 0.0, backend: str = "default"
) -> List[float]:
    return json.loads(driver(database, "enqueue", backend, queue, str(count), str(run_in), str(nap)))


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
        if sample.backend == "django_tasks"
    }


def test_running_age_grows_from_the_started_at_a_real_db_worker_writes(database):
    enqueue(database, "mailers", 1, nap=30)
    enqueue(database, "reports", 1, run_in=3600)
    command = [ADMIN, "db_worker", "--queue-name", "mailers", "--interval", "0.1", "--no-startup-delay"]
    with worker_process(command, env_of(database)):
        deadline = time.monotonic() + 60
        while psql(f"SELECT status FROM {TABLE} WHERE queue_name = 'mailers'", database=database) != "RUNNING":
            assert time.monotonic() < deadline, "the worker to start the task"
            time.sleep(0.1)
        # When the worker started it, as django-tasks recorded it.
        started = float(
            psql(f"SELECT extract(epoch FROM started_at) FROM {TABLE} WHERE queue_name = 'mailers'", database=database)
        )
        collector = reading(database, QUEUE_METRICS_DJANGO_TASKS_TABLE_SCAN="true")
        ages = []
        for _ in range(3):
            report = collector.tick()
            now = time.time()
            found = {s.queue: {f.name: f.value for f in s.figures} for s in report.samples}
            assert found["mailers"]["running"] == 1 and "running_age" not in found["reports"]
            assert found["mailers"]["running_age"] == pytest.approx(now - started, abs=1.0)
            ages.append(found["mailers"]["running_age"])
            time.sleep(0.4)
        assert ages[0] < ages[1] < ages[2]
        # Without the table scan no RUNNING row is read: neither running nor its age.
        assert "running_age" not in {f.name for s in reading(database).tick().samples for f in s.figures}


def test_sizes_are_the_librarys_own_ready_count_and_latency_its_ready_time(database):
    mailers = enqueue(database, "mailers", 3)
    plain = enqueue(database, "default", 2)
    enqueue(database, "mailers", 2, run_in=3600)  # run_after later: scheduled, not waiting
    due = enqueue(database, "reports", 1, run_in=1.0)  # run_after 1 s ahead: due by the tick
    reports = enqueue(database, "default", 4, backend="reports")  # another backend: its own queue
    odd = enqueue(database, ODD, 1)
    driver(database, "broken", "default", "broken")
    with worker_process([ADMIN, "db_worker", "--queue-name", "broken", "--interval", "0.1"], env_of(database)):
        deadline = time.monotonic() + 60
        while psql(f"SELECT status FROM {TABLE} WHERE queue_name = 'broken'", database=database) != "FAILED":
            assert time.monotonic() < deadline, "the task to fail"
            time.sleep(0.1)
    due_at = f"SELECT extract(epoch FROM run_after) FROM {TABLE} WHERE queue_name = 'reports'"
    run_after = float(psql(due_at + " AND backend_name = 'default'", database=database))
    while time.time() < run_after + 0.1:
        time.sleep(0.05)
    before = time.time()
    report = reading(database, QUEUE_METRICS_DJANGO_TASKS_TABLE_SCAN="true").tick()
    after = time.time()
    assert report.errors == ()
    counts = json.loads(driver(database, "counts"))
    queues = by_queue(report)
    assert queues == {
        "mailers": (3, {"scheduled": 2, "running": 0, "failed": 0}),
        "default": (2, {"scheduled": 0, "running": 0, "failed": 0}),
        "reports": (1, {"scheduled": 0, "running": 0, "failed": 0}),
        "reports/default": (4, {"scheduled": 0, "running": 0, "failed": 0}),
        ODD: (1, {"scheduled": 0, "running": 0, "failed": 0}),
        "broken": (0, {"scheduled": 0, "running": 0, "failed": 1}),
    }
    ours = {(q if "/" in q else f"default/{q}"): size for q, (size, _) in queues.items() if size}
    assert ours == counts
    latencies = {sample.queue: sample.latency for sample in report.samples}
    for queue, stamps in (("mailers", mailers), ("default", plain), ("reports/default", reports), (ODD, odd)):
        assert before - stamps[0] - 0.5 <= latencies[queue] <= after - stamps[0] + 0.05
    # A task with a run_after waits from its run_after, not from its enqueue.
    assert before - run_after - 0.05 <= latencies["reports"] <= after - run_after + 0.05 < after - due[0]
    assert latencies["broken"] == 0.0
    assert f"sample#queue.django_tasks.{metric_queue_part(ODD)}.size=1" in " ".join(librato_lines(report))
    assert ODD in [entry["queue"] for entry in json_document(report)["queues"]]  # type: ignore[index, union-attr]
    # Without the table scan, no running or failed; with extras off, size and latency only.
    without_scan = by_queue(reading(database).tick())
    assert "broken" not in without_scan and without_scan["mailers"] == (3, {"scheduled": 2})
    assert by_queue(reading(database, QUEUE_METRICS_EXTRAS="false").tick())["mailers"] == (3, {})


def test_a_real_db_worker_drains_a_backlog_and_the_drained_queue_stays_at_zero(database):
    stamps = enqueue(database, "mailers", 12, nap=0.4)
    collector = reading(database, QUEUE_METRICS_DJANGO_TASKS_TABLE_SCAN="true")
    assert by_queue(collector.tick())["mailers"][0] == 12
    seen_running = False
    command = [ADMIN, "db_worker", "--queue-name", "mailers", "--interval", "0.1", "--no-startup-delay"]
    with worker_process(command, env_of(database)):
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            started = time.time()
            report = collector.tick()
            size, figures = by_queue(report)["mailers"]
            (sample,) = [s for s in report.samples if s.queue == "mailers"]
            seen_running = seen_running or figures["running"] == 1
            assert figures["running"] <= 1 and size + figures["running"] <= 12
            if size:
                waiting = stamps[12 - size - figures["running"] :]
                assert started - waiting[-1] - 0.5 <= sample.latency <= time.time() - stamps[0] + 0.05
            if size == 0 and figures["running"] == 0:
                break
            time.sleep(0.2)
    assert seen_running
    assert by_queue(report)["mailers"] == (0, {"scheduled": 0, "running": 0, "failed": 0})
    assert psql(f"SELECT count(*) FROM {TABLE} WHERE status = 'SUCCESSFUL'", database=database) == "12"
    assert by_queue(collector.tick())["mailers"] == (0, {"scheduled": 0, "running": 0, "failed": 0})


def test_read_only_as_a_role_with_select_only_and_nothing_changes(database):
    enqueue(database, "mailers", 5)
    psql(
        f"DROP ROLE IF EXISTS qm_reader; CREATE ROLE qm_reader LOGIN PASSWORD '{PASSWORD}'; "
        f"GRANT CONNECT ON DATABASE {database} TO qm_reader; GRANT SELECT ON {TABLE} TO qm_reader;",
        database=database,
    )

    def changes() -> str:
        return psql(
            f"SELECT n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables WHERE relname = '{TABLE}'",
            database=database,
        )

    try:
        before = changes()
        collector = Collector(Settings.from_env({"QUEUE_METRICS_DATABASE_URLS": url(database, "qm_reader", PASSWORD)}))
        for _ in range(200):
            report = collector.tick()
            assert report.errors == () and by_queue(report)["mailers"][0] == 5
        for datastore in collector.datastores:
            datastore.close()
        time.sleep(0.6)  # the statistics collector's flush
        assert changes() == before
    finally:
        psql(f"REVOKE ALL ON DATABASE {database} FROM qm_reader", database=database)
        psql(f"REVOKE ALL ON {TABLE} FROM qm_reader; DROP ROLE qm_reader", database=database)


def test_a_table_of_another_shape_is_one_line(database):
    enqueue(database, "mailers", 1)
    collector = reading(database)
    assert collector.tick().errors == ()
    psql(f"ALTER TABLE {TABLE} DROP COLUMN run_after", database=database)
    (line,) = collector.tick().errors
    assert line == f"django_tasks: table {TABLE} has no column run_after: a migration not yet run?"


def test_the_queries_are_served_by_the_ready_index_at_a_million_finished_tasks(database):
    # Rows as DatabaseBackend.enqueue and db_worker write them (models.py), in bulk.
    columns = (
        "id, status, enqueued_at, started_at, finished_at, args_kwargs, priority, task_path, worker_ids, "
        "queue_name, backend_name, run_after, return_value, exception_class_path, traceback"
    )
    psql(
        f"INSERT INTO {TABLE} ({columns}) SELECT gen_random_uuid(), 'SUCCESSFUL', now() - interval '1 day', "
        "now() - interval '1 day', now() - interval '1 day', '{\"args\": [], \"kwargs\": {}}', 0, "
        "'helpers.django_tasks_jobs.nap', '[]', 'q' || (g % 5), 'default', '9999-01-01 00:00+00', 'null', '', '' "
        "FROM generate_series(1, 1000000) g; "
        f"INSERT INTO {TABLE} ({columns}) SELECT gen_random_uuid(), 'READY', now() - interval '1 minute', "
        "NULL, NULL, '{\"args\": [], \"kwargs\": {}}', 0, 'helpers.django_tasks_jobs.nap', '[]', 'q' || (g % 5), "
        "'default', CASE WHEN g % 7 = 0 THEN now() + interval '1 hour' ELSE '9999-01-01 00:00+00' END, "
        "NULL, '', '' FROM generate_series(1, 10000) g; "
        "ANALYZE",
        database=database,
    )
    found = {TABLE: NEEDED}
    timings = {}
    for label, extras in (("size and latency (extras off)", False), ("default: + scheduled", True)):
        sql = DjangoTasks(DjangoTasksSettings(), extras).query(found)
        assert sql is not None
        plan = scans(sql, database)
        assert plan and not [scan for scan in plan if scan[0] == "Seq Scan"], plan
        assert {index for _, _, index in plan} == {"tasks_db_new_ordering_idx"}
        timings[label] = median_ms(sql, database)
    # `running` and `failed`: no index serves them; what the table scan costs at this size.
    sql = DjangoTasks(DjangoTasksSettings(table_scan=True), True).query(found)
    assert sql is not None
    assert [scan for scan in scans(sql, database) if scan[0] == "Seq Scan" and scan[1] == TABLE]
    timings["QUEUE_METRICS_DJANGO_TASKS_TABLE_SCAN=true: + running, failed"] = median_ms(sql, database)
    for label, milliseconds in timings.items():
        print(f"django_tasks, 1,000,000 finished + 10,000 ready: {label}: {milliseconds:.1f} ms")
