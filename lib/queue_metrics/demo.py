"""`queue-metrics demo`: a private redis-server with a few jobs of each system, read a few times.

The jobs are written in the exact formats the real clients write (Sidekiq's JSON job, RQ's job
hash and id list, kombu's message envelope and binding set). This is the only module that
writes to Redis, and only to the redis-server it started itself.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from datetime import datetime, timezone
from typing import Callable, List

from queue_metrics.config import Settings
from queue_metrics.outputs.format import librato_lines

SIDEKIQ_QUEUES = {"default": 3, "mailers": 1}
RQ_QUEUES = {"default": 2, "reports": 4}
CELERY_QUEUES = {"celery": 5}
# How long ago, in seconds, the oldest demo job of every queue was enqueued.
OLDEST_AGE = 42.0


class DemoError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_redis(directory: str) -> "tuple[subprocess.Popen, int]":
    binary = shutil.which("redis-server")
    if binary is None:
        raise DemoError(
            "the demo needs the redis-server program, which is not on PATH "
            "(Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis)"
        )
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", directory],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process, port
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.05)
    process.kill()
    raise DemoError(f"redis-server did not start on port {port}")


def rq_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def enqueue_demo_jobs(client, now: float) -> None:
    pipe = client.pipeline(transaction=False)
    for queue, count in SIDEKIQ_QUEUES.items():
        pipe.sadd("queues", queue)
        for index in range(count):
            enqueued_at = now - OLDEST_AGE + index
            job = {
                "class": "HardWorker",
                "args": [index],
                "retry": True,
                "queue": queue,
                "jid": uuid.uuid4().hex[:24],
                "created_at": enqueued_at,
                "enqueued_at": enqueued_at,
            }
            pipe.lpush(f"queue:{queue}", json.dumps(job))
    for queue, count in RQ_QUEUES.items():
        pipe.sadd("rq:queues", f"rq:queue:{queue}")
        for index in range(count):
            job_id = str(uuid.uuid4())
            stamp = rq_time(now - OLDEST_AGE + index)
            pipe.hset(
                f"rq:job:{job_id}",
                mapping={
                    "status": "queued",
                    "origin": queue,
                    "created_at": stamp,
                    "enqueued_at": stamp,
                    "description": f"app.tasks.report({index})",
                },
            )
            pipe.rpush(f"rq:queue:{queue}", job_id)
    for queue, count in CELERY_QUEUES.items():
        pipe.sadd("_kombu.binding.celery", f"{queue}\x06\x16\x06\x16{queue}")
        for index in range(count):
            task_id = str(uuid.uuid4())
            message = {
                "body": "W1tdLCB7fSwgeyJjYWxsYmFja3MiOiBudWxsfV0=",
                "content-encoding": "utf-8",
                "content-type": "application/json",
                "headers": {
                    "lang": "py",
                    "task": "app.tasks.add",
                    "id": task_id,
                    "eta": None,
                    "retries": 0,
                    "root_id": task_id,
                    "parent_id": None,
                },
                "properties": {
                    "correlation_id": task_id,
                    "delivery_mode": 2,
                    "priority": 0,
                    "body_encoding": "base64",
                    "delivery_tag": str(uuid.uuid4()),
                    "delivery_info": {"exchange": "", "routing_key": queue},
                    "published_at": now - OLDEST_AGE + index,
                },
            }
            pipe.lpush(queue, json.dumps(message))
    pipe.execute()


def run_demo(ticks: int, interval: float, out: Callable[[List[str]], None], err: Callable[..., None]) -> None:
    import redis

    from queue_metrics.datastores.redis.connection import connect
    from queue_metrics.datastores.redis.reader import RedisReader

    directory = tempfile.mkdtemp(prefix="queue-metrics-demo-")
    process = None
    try:
        process, port = start_redis(directory)
        url = f"redis://127.0.0.1:{port}/0"
        err([f"started a private redis-server at {url} and enqueued jobs for Sidekiq, RQ and Celery"], "info")
        enqueue_demo_jobs(redis.Redis.from_url(url), time.time())
        settings = Settings(redis_url=url, interval=interval, timeout=min(5.0, interval / 2))
        collector = RedisReader(settings, connect(settings))
        for number in range(ticks):
            if number:
                time.sleep(interval)
            report = collector.tick()
            err(list(report.errors))
            out(librato_lines(report))
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(directory, ignore_errors=True)
