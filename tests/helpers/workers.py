"""Real worker processes (a Sidekiq server, rq workers, a Celery worker) for the tests, and
waiting for what they do."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Callable, Dict, Iterator, List

from queue_metrics.sample import Figure, TickReport

HELPERS = os.path.dirname(__file__)


@contextlib.contextmanager
def worker_process(command: List[str], env: Dict[str, str]) -> Iterator[subprocess.Popen]:
    """Runs `command` in its own process group; kills the group and every descendant after (an rq
    work horse moves to a process group of its own). Its output is printed at the end: pytest
    shows it when the test fails."""
    log = tempfile.TemporaryFile()
    process = subprocess.Popen(
        command, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        yield process
    finally:
        family = descendants(process.pid)
        os.killpg(process.pid, signal.SIGKILL)
        for pid in family:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait(timeout=10)
        log.seek(0)
        print(log.read().decode(errors="replace")[-3000:])
        log.close()


def descendants(pid: int) -> List[int]:
    """Every process below `pid`, from /proc (children, their children, ...)."""
    children: Dict[int, List[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                # The fields after the command name, which is in parentheses: state, then ppid.
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found.extend(below)
        todo.extend(below)
    return found


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def system_figures(report: TickReport, backend: str) -> Dict[str, Figure]:
    """The system-wide figures of one backend, by name."""
    (system,) = [system for system in report.systems if system.backend == backend]
    return {figure.name: figure for figure in system.figures}


def queue_figures(report: TickReport, backend: str, queue: str) -> Dict[str, float]:
    (sample,) = [s for s in report.samples if (s.backend, s.queue) == (backend, queue)]
    return {figure.name: figure.value for figure in sample.figures}


def add_workers(client, name: str = "1") -> None:
    """A Sidekiq process's heartbeat hash as Sidekiq 6.4.1 writes it, an rq worker's hash, and a
    message a Celery worker holds (as a real worker writes it: see tests/payloads). Plus a dead
    Sidekiq process and a dead rq worker: still in their sets, their hashes expired."""
    identity = f"web.{name}:1:0123456789ab"
    client.sadd("processes", identity, f"dead.{name}:1:0123456789ab")
    client.sadd("rq:workers", f"rq:worker:dead-{name}")
    info = {
        "hostname": f"web.{name}",
        "started_at": time.time(),
        "pid": 1,
        "tag": "",
        "concurrency": 10,
        "queues": ["default"],
        "labels": [],
        "identity": identity,
    }
    client.hset(identity, mapping={"info": json.dumps(info), "busy": 2, "beat": time.time(), "quiet": "false"})
    client.sadd("rq:workers", f"rq:worker:{name}")
    client.hset(
        f"rq:worker:{name}", mapping={"state": "busy", "birth": "2026-11-23T00:00:00.000000Z", "queues": "default"}
    )
    client.hset("unacked", f"tag-{name}", json.dumps([{"body": "", "properties": {}}, "", "celery"]))


def start_celery_worker(url: str, queues: List[str]) -> subprocess.Popen:
    """A real `celery worker` (solo pool, tests/helpers/celery_app.py) consuming `queues`."""
    env = {**os.environ, "CELERY_BROKER_URL": url, "PYTHONPATH": HELPERS}
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "celery_app",
        "worker",
        "--pool",
        "solo",
        "-Q",
        ",".join(queues),
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--loglevel",
        "WARNING",
    ]
    return subprocess.Popen(command, cwd=HELPERS, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
