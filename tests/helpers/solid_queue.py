"""Solid Queue's writes, mirrored in SQL for the tests: the gem needs Rails 7.1+, which cannot be
installed here, so its tables come from its own schema file (tests/payloads/solid_queue/
queue_schema.rb, loaded by ActiveRecord: helpers/solid_queue_schema.rb) and its rows are written
here as its code writes them. Every fact names its source: rails/solid_queue v1.5.0 (commit
61a9f08a2bbdf02e60fac2371fbca0553f628dac), paths under app/models/solid_queue/ unless said.

Times are Rails' `Time.current` in UTC, written into `timestamp without time zone` columns
(ActiveRecord's default_timezone :utc), with microseconds; they are made here, on the app's
clock, and returned so a test knows when each job became ready.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from datetime import datetime, timedelta, timezone
from typing import Dict, List, Optional, Sequence

from helpers.postgres import psql, url
from helpers.workers import HELPERS

PAYLOADS = os.path.join(os.path.dirname(HELPERS), "payloads", "solid_queue")
# The files that make the tables, per version (see helpers/solid_queue_schema.rb): 1.x ships a
# schema file, 0.x shipped migrations; the columns read are the same since 0.2.
SCHEMA_FILES = {
    "1.5.0": [os.path.join(PAYLOADS, "queue_schema.rb")],
    "0.2.1": [
        os.path.join(PAYLOADS, "v0.2.1", name)
        for name in (
            "20231211200639_create_solid_queue_tables.rb",
            "20240110143450_add_missing_index_to_blocked_executions.rb",
        )
    ],
}
SCHEMA_LOADER = os.path.join(HELPERS, "solid_queue_schema.rb")
# SolidQueue.default_concurrency_control_period (lib/solid_queue.rb): a limited job's
# `concurrency_duration` unless `limits_concurrency duration:` says otherwise.
DEFAULT_CONCURRENCY_DURATION = timedelta(minutes=3)


def schema(database: str, version: str = "1.5.0") -> None:
    """The tables, from Solid Queue's own schema or migration files, by ActiveRecord."""
    subprocess.run(
        ["ruby", SCHEMA_LOADER, *SCHEMA_FILES[version]],
        env={**os.environ, "DATABASE_URL": url(database)},
        check=True,
        capture_output=True,
        timeout=120,
    )


def now() -> datetime:
    return datetime.now(timezone.utc)


def literal(value: object) -> str:
    """A SQL literal: NULL, a number, a UTC timestamp, or quoted text."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, datetime):
        return "'" + value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f") + "'"
    return "'" + str(value).replace("'", "''") + "'"


def insert(table: str, row: Dict[str, object], returning: str = "") -> str:
    columns = ", ".join(row)
    values = ", ".join(literal(value) for value in row.values())
    return f"INSERT INTO {table} ({columns}) VALUES ({values}){' RETURNING ' + returning if returning else ''};"


def active_job_arguments(job_class: str, job_id: str, queue: str, priority: Optional[int], at: datetime) -> str:
    """`arguments`: ActiveJob::Base#serialize as JSON (job.rb: `serialize :arguments, coder: JSON`;
    attributes_from_active_job: `arguments: active_job.serialize`). Never read by the collector."""
    stamp = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return json.dumps(
        {
            "job_class": job_class,
            "job_id": job_id,
            "provider_job_id": None,
            "queue_name": queue,
            "priority": priority,
            "arguments": [],
            "executions": 0,
            "exception_executions": {},
            "locale": "en",
            "timezone": "UTC",
            "enqueued_at": stamp,
            "scheduled_at": stamp,
        }
    )


def enqueue(
    database: str,
    queue: str,
    count: int = 1,
    run_at: Optional[datetime] = None,
    priority: int = 0,
    concurrency_key: Optional[str] = None,
    concurrency_limit: int = 1,
    concurrency_duration: timedelta = DEFAULT_CONCURRENCY_DURATION,
    at: Optional[datetime] = None,
) -> List[datetime]:
    """`count` jobs as SolidQueue::Job.enqueue writes each (one INSERT of the job, whose
    after_create writes its execution), one transaction each; returns each job's time."""
    stamps = []
    for _ in range(count):
        when = at or now()
        stamps.append(when)
        psql(
            "BEGIN;\n"
            + enqueue_sql(queue, when, run_at, priority, concurrency_key, concurrency_limit, concurrency_duration)
            + "\nCOMMIT;",
            database=database,
        )
    return stamps


def enqueue_sql(
    queue: str,
    when: datetime,
    run_at: Optional[datetime],
    priority: int,
    concurrency_key: Optional[str],
    concurrency_limit: int,
    concurrency_duration: timedelta,
) -> str:
    job_id = str(uuid.uuid4())
    # job.rb, Job.enqueue(active_job, scheduled_at: Time.current): `scheduled_at` is the time asked
    # for (ActiveJob's `set(wait:)`) or the enqueue time; attributes_from_active_job: queue_name
    # (`default` when none), active_job_id, priority (0 when none), scheduled_at, class_name,
    # arguments, concurrency_key; timestamps by ActiveRecord.
    scheduled_at = run_at or when
    job = insert(
        "solid_queue_jobs",
        {
            "queue_name": queue,
            "class_name": "NapJob",
            "arguments": active_job_arguments("NapJob", job_id, queue, priority, when),
            "priority": priority,
            "active_job_id": job_id,
            "scheduled_at": scheduled_at,
            "concurrency_key": concurrency_key,
            "created_at": when,
            "updated_at": when,
        },
    )
    the_job = f"(SELECT id FROM solid_queue_jobs WHERE active_job_id = {literal(job_id)})"
    # Executions copy queue_name and priority from the job (execution/job_attributes.rb,
    # assumable_attributes_from_job); job/executable.rb after_create :prepare_for_execution:
    # `due?` (job/schedulable.rb: scheduled_at <= Time.current) -> dispatch, else schedule.
    if scheduled_at > when:
        # job/schedulable.rb #schedule: ScheduledExecution.create_or_find_by!(job_id:), which
        # also assumes `scheduled_at` (scheduled_execution.rb).
        return (
            job
            + "\n"
            + _execution("solid_queue_scheduled_executions", the_job, queue, priority, when, scheduled_at=scheduled_at)
        )
    if concurrency_key is None:
        # job/executable.rb #dispatch -> #ready: ReadyExecution.create_or_find_by!(job_id:).
        return job + "\n" + _execution("solid_queue_ready_executions", the_job, queue, priority, when)
    # job/concurrency_controls.rb #acquire_concurrency_lock -> Semaphore.wait (semaphore.rb):
    # a semaphore row for the key: take one if value > 0 (value - 1, expires_at = now +
    # duration); none: create it with value limit - 1; then `ready`. Otherwise #block:
    # BlockedExecution, also assuming concurrency_key, expires_at = now + concurrency_duration
    # (blocked_execution.rb #set_expires_at).
    expires = when + concurrency_duration
    key = literal(concurrency_key)
    ready = _execution("solid_queue_ready_executions", the_job, queue, priority, when)
    blocked = _execution(
        "solid_queue_blocked_executions",
        the_job,
        queue,
        priority,
        when,
        concurrency_key=concurrency_key,
        expires_at=expires,
    )
    return (
        job + f"\nDO $$ BEGIN\n"
        f"IF NOT EXISTS (SELECT 1 FROM solid_queue_semaphores WHERE key = {key}) THEN\n"
        f"  INSERT INTO solid_queue_semaphores (key, value, expires_at, created_at, updated_at) VALUES "
        f"({key}, {concurrency_limit - 1}, {literal(expires)}, {literal(when)}, {literal(when)});\n  {ready}\n"
        f"ELSIF EXISTS (SELECT 1 FROM solid_queue_semaphores WHERE key = {key} AND value > 0) THEN\n"
        f"  UPDATE solid_queue_semaphores SET value = value - 1, expires_at = {literal(expires)} "
        f"WHERE key = {key};\n  {ready}\n"
        f"ELSE\n  {blocked}\nEND IF;\nEND $$;"
    )


def _execution(table: str, job: str, queue: str, priority: int, when: datetime, **more: object) -> str:
    row: Dict[str, object] = {"queue_name": queue, "priority": priority, **more, "created_at": when}
    columns = ", ".join(["job_id", *row])
    values = ", ".join([job, *(literal(value) for value in row.values())])
    return f"INSERT INTO {table} ({columns}) VALUES ({values});"


def register_worker(database: str, queues: str = "*", heartbeat: Optional[datetime] = None, metadata: str = "") -> str:
    """A worker's row (lib/solid_queue/processes/registrable.rb #register; process.rb .register:
    kind, name, pid, hostname, metadata, last_heartbeat_at = Time.current); its id. `name` came
    in 0.6 (84cb6e4, "Add new column `name` to processes"): 0.2.1's table has none. `queues` as
    lib/solid_queue/worker.rb #metadata writes them (joined by commas); `heartbeat`: its last one
    (an old one is a dead worker's row); `metadata`: written as is instead."""
    when = now()
    has_name = psql(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'solid_queue_processes' "
        "AND column_name = 'name'",
        database=database,
    )
    row = {
        "kind": "Worker",
        "last_heartbeat_at": heartbeat or when,
        "pid": os.getpid(),
        "hostname": "test",
        "metadata": metadata
        or json.dumps({"polling_interval": 0.1, "queues": queues, "thread_pool_size": 3}, separators=(",", ":")),
        "created_at": when,
    }
    if has_name == "1":
        row["name"] = f"worker-{uuid.uuid4().hex[:20]}"
    return psql(insert("solid_queue_processes", row, returning="id"), database=database).splitlines()[0]


def claim(database: str, queue: str, limit: int, process_id: str) -> List[str]:
    """A worker's poll (ready_execution.rb .claim -> select_and_lock -> lock_candidates;
    claimed_execution.rb .claiming): in one transaction, the first `limit` ready executions of the
    queue `ordered` (execution.rb: priority, job_id) FOR UPDATE SKIP LOCKED; claimed executions
    inserted (job_id, process_id, created_at by insert_all!); the ready rows deleted. The job ids."""
    when = literal(now())
    out = psql(
        "BEGIN;\n"
        "CREATE TEMP TABLE picked ON COMMIT DROP AS SELECT id, job_id FROM solid_queue_ready_executions "
        f"WHERE queue_name = {literal(queue)} ORDER BY priority ASC, job_id ASC LIMIT {limit} FOR UPDATE SKIP LOCKED;\n"
        "INSERT INTO solid_queue_claimed_executions (job_id, process_id, created_at) "
        f"SELECT job_id, {process_id}, {when} FROM picked;\n"
        "DELETE FROM solid_queue_ready_executions WHERE id IN (SELECT id FROM picked);\n"
        "SELECT job_id FROM picked ORDER BY job_id;\nCOMMIT;",
        database=database,
    )
    return out.splitlines()


def finish(database: str, job_ids: Sequence[str]) -> None:
    """claimed_execution.rb #finished -> finalize: job.finished! (job/executable.rb: with
    preserve_finished_jobs, true by default in lib/solid_queue.rb, `touch(:finished_at)`, which
    sets updated_at too), then the claimed execution destroyed."""
    if not job_ids:
        return
    ids = ", ".join(job_ids)
    when = literal(now())
    psql(
        f"BEGIN; UPDATE solid_queue_jobs SET finished_at = {when}, updated_at = {when} WHERE id IN ({ids});\n"
        f"DELETE FROM solid_queue_claimed_executions WHERE job_id IN ({ids}); COMMIT;",
        database=database,
    )


def fail(database: str, job_ids: Sequence[str]) -> None:
    """claimed_execution.rb #failed_with -> finalize: job.failed_with (job/retryable.rb:
    FailedExecution.create!(job_id:, exception:), whose `error` is JSON of exception_class,
    message, backtrace: failed_execution.rb), then the claimed execution destroyed."""
    if not job_ids:
        return
    ids = ", ".join(job_ids)
    error = json.dumps({"exception_class": "RuntimeError", "message": "boom", "backtrace": ["nap_job.rb:3"]})
    psql(
        "BEGIN; INSERT INTO solid_queue_failed_executions (job_id, error, created_at) "
        f"SELECT job_id, {literal(error)}, {literal(now())} FROM solid_queue_claimed_executions "
        f"WHERE job_id IN ({ids});\n"
        f"DELETE FROM solid_queue_claimed_executions WHERE job_id IN ({ids}); COMMIT;",
        database=database,
    )


def dispatch_due(database: str, batch_size: int = 500) -> None:
    """The dispatcher's poll (lib/solid_queue/dispatcher.rb #dispatch_next_batch;
    scheduled_execution.rb .dispatch_next_batch: `due` = scheduled_at <= Time.current, ordered by
    scheduled_at, priority, job_id, FOR UPDATE SKIP LOCKED; execution/dispatching.rb
    .dispatch_jobs -> Job.dispatch_all -> ReadyExecution.create_all_from_jobs (insert_all: job_id,
    queue_name, priority, created_at now), then the scheduled rows deleted). Jobs without a
    concurrency key only."""
    when = literal(now())
    psql(
        "BEGIN;\n"
        "CREATE TEMP TABLE due ON COMMIT DROP AS SELECT id, job_id, queue_name, priority "
        f"FROM solid_queue_scheduled_executions WHERE scheduled_at <= {when} "
        f"ORDER BY scheduled_at, priority, job_id LIMIT {batch_size} FOR UPDATE SKIP LOCKED;\n"
        "INSERT INTO solid_queue_ready_executions (job_id, queue_name, priority, created_at) "
        f"SELECT job_id, queue_name, priority, {when} FROM due;\n"
        "DELETE FROM solid_queue_scheduled_executions WHERE id IN (SELECT id FROM due);\nCOMMIT;",
        database=database,
    )


def pause(database: str, queue: str) -> None:
    """queue.rb #pause: Pause.create_or_find_by!(queue_name:) (created_at by ActiveRecord)."""
    psql(insert("solid_queue_pauses", {"queue_name": queue, "created_at": now()}), database=database)


def queue_size_and_latency(database: str) -> Dict[str, tuple]:
    """Solid Queue's own figures, per queue of `Queue.all` (queue.rb: Job.distinct_values_of
    (:queue_name)): #size = ReadyExecution.queued_as(name).count; #latency = (now -
    minimum(:created_at)).to_i, 0 when none ready. The SQL those scopes make, as JSON."""
    out = psql(
        "SELECT coalesce(json_object_agg(q.queue_name, json_build_array("
        "(SELECT count(*) FROM solid_queue_ready_executions r WHERE r.queue_name = q.queue_name), "
        "(SELECT coalesce(floor(extract(epoch FROM now() AT TIME ZONE 'UTC' - min(r.created_at))), 0) "
        "FROM solid_queue_ready_executions r WHERE r.queue_name = q.queue_name))), '{}') "
        "FROM (SELECT DISTINCT queue_name FROM solid_queue_jobs) q",
        database=database,
    )
    return {queue: tuple(values) for queue, values in json.loads(out).items()}
