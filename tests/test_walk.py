"""The keyspace walk on real redis-servers: paced from its first step (in `run`, `once` and
`doctor`), never costing a tick a second timeout when Redis hangs, and saying what a server
without SCAN loses and how to get it back."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from typing import List

import pytest
import redis
from celery import Celery
from kombu import pools

import queue_metrics.celery as celery_hook
from helpers.collect import by_queue, make_collector
from helpers.process import lines_of, queue_metrics, start
from helpers.watch import Watcher, collector_line
from queue_metrics.config import Settings
from queue_metrics.datastores.redis.connection import connect
from queue_metrics.datastores.redis.keyspace_walk import MIN_STEP_GAP, SHARED_FLOOR, KeyspaceWalk
from queue_metrics.datastores.redis.reader import RedisReader
from queue_metrics.datastores.redis.resp import pack_commands
from queue_metrics.errors import RedisTimeout

KEYS = 200_000


def stamped_message() -> str:
    """A Celery message with a publish stamp of now: its latency is read, not observed."""
    return json.dumps({"headers": {}, "properties": {"published_at": time.time()}})


class ScanMonitor:
    """The server's own timestamp of every SCAN it runs, seen through MONITOR (redis-py)."""

    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(url)
        self._monitor = self._client.monitor()
        self._monitor.__enter__()
        self.times: List[float] = []
        self._marks: List[str] = []
        self._seen = threading.Condition()
        self._thread = threading.Thread(target=self._listen, daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        while True:
            try:
                command = self._monitor.next_command()
            except (redis.ConnectionError, OSError, ValueError):
                return
            with self._seen:
                if command["command"].upper().startswith("SCAN "):
                    self.times.append(command["time"])
                elif command["command"].startswith("ECHO "):
                    self._marks.append(command["command"])
                self._seen.notify_all()

    def settle(self) -> List[float]:
        """Every SCAN run so far: MONITOR shows commands in the order the server ran them, so
        once a mark sent now is seen, every SCAN before it has been too."""
        mark = f"mark-{time.monotonic_ns()}"
        self._client.echo(mark)
        with self._seen:
            assert self._seen.wait_for(lambda: any(mark in seen for seen in self._marks), timeout=10)
            return list(self.times)

    def close(self) -> None:
        self._monitor.connection.disconnect()
        self._client.close()


@pytest.fixture
def big_keyspace(make_server):
    """A server with 200,000 unrelated keys and a Celery queue bound to an exchange of its own
    (so only the walk can find it)."""
    server = make_server(extra=["--enable-debug-command", "yes"])
    client = redis.Redis.from_url(server.url)
    client.execute_command("DEBUG", "POPULATE", KEYS, "unrelated")
    client.sadd("_kombu.binding.orders", "orders\x06\x16\x06\x16orders")
    client.lpush("orders", stamped_message(), stamped_message())
    monitor = ScanMonitor(server.url)
    yield server, client, monitor
    monitor.close()
    client.close()


def gaps(times: List[float]) -> List[float]:
    return [later - earlier for earlier, later in zip(times, times[1:])]


def test_the_first_walk_of_run_is_paced_and_the_exchange_is_reported_once_found(big_keyspace):
    server, client, monitor = big_keyspace
    pass_seconds = 4.0
    # Celery's walk alone (BullMQ's and Dramatiq's walk for their own keys).
    collector = make_collector(
        server.url, QUEUE_METRICS_DISCOVERY_INTERVAL=str(pass_seconds), QUEUE_METRICS_BACKENDS="sidekiq,rq,celery"
    )
    first = collector.tick()
    # The first tick reads the registries and takes one step at most: it is not a walk flat out.
    assert first.scan_round_trips <= 1 and len(monitor.settle()) <= 1
    assert first.errors == ()
    deadline = time.monotonic() + 4 * pass_seconds
    while collector.walks[0].passes == 0 and time.monotonic() < deadline:
        collector.walk(time.monotonic() + 0.5)
    assert collector.walks[0].passes >= 1
    steps = monitor.settle()
    # The whole first pass kept the steady pace: its steps spread over the pass, not bunched.
    expected_gap = max(MIN_STEP_GAP, pass_seconds / (client.dbsize() // 1000 + 1))
    assert len(steps) >= KEYS // 1000
    assert min(gaps(steps)) >= 0.9 * expected_gap, sorted(gaps(steps))[:5]
    assert steps[-1] - steps[0] >= 0.8 * pass_seconds
    # What it found is reported at the next tick.
    assert by_queue(collector.tick())["orders"].size == 2


def test_walks_share_one_walks_budget_on_a_big_keyspace(big_keyspace):
    """Celery's and BullMQ's walks together look at no more keys a second than one walk, once
    that is more than SHARED_FLOOR (here: a walk of 200,000 keys in 2 s is 100,000 keys a second)."""
    server, client, monitor = big_keyspace
    pass_seconds = 2.0
    collector = make_collector(
        server.url, QUEUE_METRICS_DISCOVERY_INTERVAL=str(pass_seconds), QUEUE_METRICS_BACKENDS="celery,bullmq"
    )
    assert [walk.system for walk in collector.walks] == ["celery", "bullmq"]
    collector.tick()
    monitor.settle()
    started = time.monotonic()
    while time.monotonic() - started < pass_seconds:
        collector.walk(time.monotonic() + 0.2)
    steps = monitor.settle()
    one_walk = client.dbsize() // 1000 + 1  # a pass's steps, which one walk took in pass_seconds
    assert client.dbsize() / pass_seconds > SHARED_FLOOR
    assert one_walk * 0.7 <= len(steps) <= one_walk * 1.3, (len(steps), one_walk)
    assert all(walk.pass_seconds == 2 * pass_seconds for walk in collector.walks)
    # On a small keyspace nothing is slowed down: each walk keeps the interval.
    assert KeyspaceWalk("*", 15.0, lambda keys, done: None, "celery", share=3).pass_seconds == 15.0
    small = KeyspaceWalk("*", 15.0, lambda keys, done: None, "celery", share=3)
    small.keyspace = 100_000
    assert small.pass_seconds == 15.0
    big = KeyspaceWalk("*", 15.0, lambda keys, done: None, "celery", share=3)
    big.keyspace = 1_000_000
    assert big.pass_seconds == 45.0


def test_once_walks_the_whole_keyspace_paced_and_says_how_long_it_takes(big_keyspace):
    server, client, monitor = big_keyspace
    result = queue_metrics(
        "once", env={"REDIS_URL": server.url, "QUEUE_METRICS_BACKENDS": "sidekiq,rq,celery"}, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "sample#queue.celery.orders.size=2" in result.stdout
    steps = monitor.settle()
    assert len(steps) >= KEYS // 1000
    # Never more than one step every MIN_STEP_GAP, the most the steady walk is allowed.
    assert min(gaps(steps)) >= 0.9 * MIN_STEP_GAP, sorted(gaps(steps))[:5]
    (notice,) = [line for line in lines_of(result.stderr) if "walking" in line and "for celery" in line]
    assert notice.startswith(f"queue-metrics: info: walking {client.dbsize():,} keys for celery bindings")
    assert "about 2 s" in notice or "about 3 s" in notice, notice
    assert "QUEUE_METRICS_BACKENDS" in notice


def test_no_walk_without_celery(big_keyspace):
    """Only Celery needs the walk: pinned to Sidekiq and RQ, neither `once` nor `run` sends a SCAN."""
    server, client, monitor = big_keyspace
    result = queue_metrics("once", env={"REDIS_URL": server.url, "QUEUE_METRICS_BACKENDS": "sidekiq,rq"})
    assert result.returncode == 0, result.stderr
    assert "walking" not in result.stderr
    collector = make_collector(server.url, QUEUE_METRICS_BACKENDS="sidekiq,rq")
    assert collector.walks == []
    report = collector.tick()
    collector.walk(time.monotonic() + 0.5)
    collector.tick()
    assert report.scan_round_trips == 0 and report.errors == ()
    assert monitor.settle() == []


# ---- a hung Redis: one timeout per tick ------------------------------------------------------


def hung_collector(url: str, whole_first_walk: bool, timeout: float = 1, **env: str) -> RedisReader:
    settings = Settings.from_env({"QUEUE_METRICS_REDIS_URL": url, "QUEUE_METRICS_TIMEOUT": f"{timeout:g}", **env})
    return RedisReader(settings, connect(settings), whole_first_walk=whole_first_walk)


@pytest.mark.parametrize("whole_first_walk", [False, True], ids=["run", "once"])
def test_a_hung_redis_costs_the_first_tick_one_timeout(make_server, whole_first_walk):
    server = make_server()
    collector = hung_collector(server.url, whole_first_walk, timeout=2)
    server.pause()
    try:
        started = time.monotonic()
        report = collector.tick()
        took = time.monotonic() - started
    finally:
        server.resume()
    # One timeout (2 s), not the walk's and then the tick's (4 s): halfway between, for a busy machine.
    assert took < 1.5 * 2.0, took
    assert not report.redis_ok
    (line,) = report.errors
    assert line.endswith("did not answer within 2 s (timeout)"), line


class SlowLink:
    """A TCP relay to a real redis-server that holds every chunk the server sends for `delay`
    seconds: a slow network, which the server itself does not know about."""

    def __init__(self, port: int, delay: float) -> None:
        self.delay = delay
        self._upstream = port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: List[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self._upstream))
            self._sockets += [client, server]
            threading.Thread(target=self._relay, args=(client, server, 0.0), daemon=True).start()
            threading.Thread(target=self._relay, args=(server, client, self.delay), daemon=True).start()

    @staticmethod
    def _relay(source: socket.socket, target: socket.socket, delay: float) -> None:
        try:
            while True:
                chunk = source.recv(65536)
                if not chunk:
                    break
                time.sleep(delay)
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, target):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()


def test_the_connections_set_up_keeps_to_the_deadline(make_server):
    """AUTH and SELECT each wait for their own reply: over a slow link (0.7 s a reply), a walk
    step with 1 s left must give up at the deadline, not a whole reply later."""
    server = make_server(extra=["--requirepass", "set-up-secret"])
    link = SlowLink(server.port, delay=0.7)
    try:
        settings = Settings.from_env(
            {"QUEUE_METRICS_REDIS_URL": f"redis://:set-up-secret@127.0.0.1:{link.port}/1", "QUEUE_METRICS_TIMEOUT": "5"}
        )
        connection = connect(settings)
        started = time.monotonic()
        with pytest.raises(RedisTimeout):
            connection.round_trip([pack_commands([("DBSIZE",)])], 1, deadline=started + 1.0)
        took = time.monotonic() - started
    finally:
        link.close()
    assert 1.0 <= took < 1.0 + 0.25, took  # AUTH at 0.7 s, then SELECT cut short at 1 s (not at 1.4 s)


def test_the_walk_between_ticks_never_holds_the_next_tick_up(big_keyspace):
    """Redis hangs in the middle of a walk: the step in flight gives up at the next tick's due
    time, not a whole timeout later, so the tick still gets its own one timeout on schedule."""
    server, client, monitor = big_keyspace
    collector = hung_collector(server.url, whole_first_walk=False, QUEUE_METRICS_DISCOVERY_INTERVAL="1")
    assert collector.tick().redis_ok
    time.sleep(max(0.0, collector.walks[0].due - time.monotonic()))  # a step is due
    server.pause()
    try:
        started = time.monotonic()
        collector.walk(started + 0.3)
        took = time.monotonic() - started
    finally:
        server.resume()
    assert took < 0.3 + 0.5, took


def test_run_keeps_its_schedule_while_redis_hangs(make_server):
    server = make_server()
    server.pause()
    process = start("run", env={"REDIS_URL": server.url, "QUEUE_METRICS_INTERVAL": "3", "QUEUE_METRICS_TIMEOUT": "1"})
    watcher = Watcher(process)
    try:
        started, _, _ = watcher.wait_for(lambda stream, line: " info: reading " in line, timeout=20)
        ticks = [watcher.wait_for(collector_line, timeout=10)[0] for _ in range(4)]
        watcher.drain(0.5)  # the last tick's error line, from the other pipe
    finally:
        process.kill()
        process.wait()
        server.resume()
    # Each tick on the 3 s grid from the start, and done one timeout (1 s) after its slot: never
    # two timeouts, and no slot skipped.
    for slot, arrived in enumerate(ticks):
        assert 0.9 <= arrived - (started + 3 * slot) < 1.9, [round(tick - started, 2) for tick in ticks]
    errors = [line for _, stream, line in watcher.seen if stream == "stderr" and " error: " in line]
    assert len(errors) >= 4 and all("did not answer within 1 s (timeout)" in line for line in errors), errors


# ---- a server without SCAN -------------------------------------------------------------------


@pytest.fixture
def no_scan(make_server):
    """A server started with `rename-command SCAN ""`, and a real Celery producer that routes a
    task to a queue of its own exchange, next to one on the default `celery` exchange."""
    server = make_server(extra=["--rename-command", "SCAN", ""])
    app = Celery("shop", broker=server.url)
    app.conf.task_create_missing_queues = True
    celery_hook.install(app)
    try:
        app.send_task("shop.tasks.ship", queue="celery")
        app.send_task("shop.tasks.bill", queue="invoices")
        app.send_task("shop.tasks.bill", queue="invoices")
    finally:
        celery_hook.uninstall()
        app.close()
        pools.reset()
    assert redis.Redis.from_url(server.url).exists("_kombu.binding.invoices")
    return server


def assert_says_no_scan(line: str) -> None:
    assert "this Redis has no SCAN command" in line, line
    assert "ERR unknown command 'SCAN'" in line
    assert "exchanges other than the default 'celery' may be missing" in line
    assert "QUEUE_METRICS_CELERY_QUEUES" in line
    assert "ACL" not in line and "+@read" not in line and "NOPERM" not in line


def test_a_server_without_scan_is_said_so_with_the_fix(no_scan):
    once = queue_metrics(
        "once", env={"REDIS_URL": no_scan.url, "QUEUE_METRICS_BACKENDS": "sidekiq,rq,celery"}, timeout=30
    )
    assert "sample#queue.celery.celery.size=1" in once.stdout, once.stderr
    assert "invoices" not in once.stdout
    (line,) = lines_of(once.stderr)  # none from Dramatiq's walk: no sign of Dramatiq here
    assert line.startswith("queue-metrics: error: cannot look for queues in the keyspace (SCAN): ")
    assert_says_no_scan(line)
    # In `run`: at most one line a tick, each tick, while it lasts (the walk retries a pass later).
    collector = make_collector(
        no_scan.url, QUEUE_METRICS_DISCOVERY_INTERVAL="0.2", QUEUE_METRICS_BACKENDS="sidekiq,rq,celery"
    )
    for _ in range(3):
        report = collector.tick()
        assert len(report.errors) <= 1 and report.redis_ok
        collector.walk(time.monotonic() + 0.5)
    (line,) = collector.tick().errors
    assert_says_no_scan(line)
    # The fix the line names: with it, nothing is lost, and nothing more is said.
    fixed = queue_metrics(
        "once",
        env={
            "REDIS_URL": no_scan.url,
            "QUEUE_METRICS_CELERY_QUEUES": "invoices",
            "QUEUE_METRICS_BACKENDS": "sidekiq,rq,celery",
        },
    )
    assert "sample#queue.celery.invoices.size=2" in fixed.stdout, fixed.stderr
    assert fixed.returncode == 0 and fixed.stderr == ""
    collector = make_collector(
        no_scan.url,
        QUEUE_METRICS_DISCOVERY_INTERVAL="0.2",
        QUEUE_METRICS_CELERY_QUEUES="invoices",
        QUEUE_METRICS_BACKENDS="sidekiq,rq,celery",
    )
    for _ in range(3):
        report = collector.tick()
        assert report.errors == () and by_queue(report)["invoices"].size == 2
        collector.walk(time.monotonic() + 0.5)
    assert collector.walks == []  # no SCAN is sent again
    doctor = queue_metrics(
        "doctor",
        env={
            "REDIS_URL": no_scan.url,
            "QUEUE_METRICS_CELERY_QUEUES": "invoices",
            "QUEUE_METRICS_BACKENDS": "sidekiq,rq,celery",
        },
    )
    assert doctor.returncode == 0, doctor.stdout
    assert "this Redis has no SCAN command: only the queues its registries list" in doctor.stdout


def test_doctor_says_the_server_has_no_scan_and_blames_no_acl(no_scan):
    doctor = queue_metrics(
        "doctor", env={"REDIS_URL": no_scan.url, "QUEUE_METRICS_BACKENDS": "sidekiq,rq,celery"}, timeout=30
    )
    assert doctor.returncode == 1
    problems = [line for line in lines_of(doctor.stdout) if line.startswith("Problem: ")]
    (line,) = problems
    assert_says_no_scan(line)
    assert "may not run" not in doctor.stdout and "+@read" not in doctor.stdout
