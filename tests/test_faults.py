"""Faults the loop meets on a dyno, injected into real redis-server processes: down, killed,
hung, misconfigured, TLS; and signals in the middle of a tick."""

from __future__ import annotations

import signal
import socket
import subprocess
import time

import pytest

from helpers.collect import sidekiq
from helpers.process import lines_of, queue_metrics, start
from helpers.servers import RedisServer, free_port, self_signed_certificate
from helpers.watch import Watcher, collector_line, metric_line

PASSWORD = "Sup3r-Secret-Pa55"
DURABLE = ["--appendonly", "yes", "--appendfsync", "always"]  # jobs survive SIGKILL


def run_loop(url: str, interval: float, **env) -> Watcher:
    process = start("run", env={"REDIS_URL": url, "QUEUE_METRICS_INTERVAL": str(interval), **env})
    return Watcher(process)


@pytest.fixture
def watchers():
    started = []

    def watch(*args, **kwargs) -> Watcher:
        watcher = run_loop(*args, **kwargs)
        started.append(watcher)
        return watcher

    yield watch
    for watcher in started:
        watcher.process.kill()
        watcher.process.wait()


def errors_in(items) -> int:
    return sum(1 for _, stream, line in items if stream == "stderr" and "error:" in line)


def test_redis_down_at_start_then_started(watchers, tmp_path):
    port = free_port()
    url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    watcher = watchers(url, 0.5)
    _, _, error = watcher.wait_for(lambda stream, line: stream == "stderr" and "error:" in line, timeout=10)
    where = f"redis://127.0.0.1:{port}/0"
    assert error == f"queue-metrics: error: cannot connect to Redis at {where}: connection refused (is it running?)\n"
    _, _, line = watcher.wait_for(collector_line, timeout=5)
    assert "collector.queues=0 " in line and "collector.errors=1 " in line

    server = RedisServer(port=port, extra=["--requirepass", PASSWORD])
    try:
        server.start()
        sidekiq(url, {"enqueue": {"default": 2}})
        up = time.monotonic()
        at, _, line = watcher.wait_for(metric_line, timeout=5)
        assert "sample#queue.sidekiq.default.size=2 " in line
        assert at - up < 0.5 + 0.3  # the first tick after it is up reports
        assert PASSWORD not in watcher.all_text()
    finally:
        server.close()


def test_redis_killed_mid_run_and_restarted(watchers):
    port = free_port()
    server = RedisServer(port=port, extra=DURABLE).start()
    try:
        sidekiq(server.url, {"enqueue": {"default": 3}})
        watcher = watchers(server.url, 0.5)
        watcher.wait_for(metric_line, timeout=10)
        watcher.wait_for(collector_line, timeout=5)

        server.stop()  # SIGKILL
        outage = watcher.drain(2.0)
        ticks = [item for item in outage if collector_line(item[1], item[2])]
        assert 3 <= len(ticks) <= 5, outage
        # Every failed tick: an error self-metric and never a made-up size (its one error line
        # is counted at the end: stderr and stdout are read by different threads).
        assert all("collector.queues=0 " in line and "collector.errors=1 " in line for _, _, line in ticks)
        assert not [item for item in outage if metric_line(item[1], item[2])]
        for _, stream, line in outage:
            if stream == "stderr":
                assert line.startswith("queue-metrics: error: ") and "Traceback" not in line

        server.start()
        up = time.monotonic()
        at, _, line = watcher.wait_for(metric_line, timeout=5)
        assert "sample#queue.sidekiq.default.size=3 " in line
        assert at - up < 0.5 + 0.3  # recovered within one interval

        watcher.wait_for(collector_line, timeout=5)
        watcher.drain(0.3)
        counted = sum(
            int(line.split("collector.errors=")[1].split()[0])
            for _, stream, line in watcher.seen
            if collector_line(stream, line)
        )
        assert errors_in(watcher.seen) == counted >= len(ticks)

        # The schedule held through it all: ticks 0.5 s apart, never bunched.
        times = [at for at, stream, line in watcher.seen if collector_line(stream, line)]
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert all(0.3 < gap < 0.75 for gap in gaps), gaps
    finally:
        server.close()


def test_hung_redis_is_bounded_by_timeouts_and_recovers(watchers, redis_url):
    sidekiq(redis_url, {"enqueue": {"default": 1}})
    server = RedisServer(port=int(redis_url.rsplit(":", 1)[1].split("/")[0]))
    watcher = watchers(redis_url, 1.0)
    watcher.wait_for(metric_line, timeout=10)
    watcher.wait_for(collector_line, timeout=5)
    pid = int(
        subprocess.run(["redis-cli", "-p", str(server.port), "info", "server"], capture_output=True, text=True)
        .stdout.split("process_id:")[1]
        .split()[0]
    )
    import os

    os.kill(pid, signal.SIGSTOP)
    try:
        hung = watcher.drain(4.2)
    finally:
        os.kill(pid, signal.SIGCONT)
    ticks = [item for item in hung if collector_line(item[1], item[2])]
    assert 3 <= len(ticks) <= 5, hung  # one tick a second: none blocked forever, none piled up
    # Error lines only: the start-up info line may be read after the first metric line (two pipes).
    timeouts = [line for _, stream, line in hung if stream == "stderr" and " info: " not in line]
    assert timeouts and all(line.endswith("did not answer within 0.5 s (timeout)\n") for line in timeouts), timeouts
    _, _, line = watcher.wait_for(metric_line, timeout=3)
    assert "sample#queue.sidekiq.default.size=1 " in line


def test_sigterm_in_the_middle_of_a_tick(redis_url):
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    pid = int(
        subprocess.run(["redis-cli", "-p", str(port), "info", "server"], capture_output=True, text=True)
        .stdout.split("process_id:")[1]
        .split()[0]
    )
    import os

    os.kill(pid, signal.SIGSTOP)
    try:
        process = start(
            "run", env={"REDIS_URL": redis_url, "QUEUE_METRICS_INTERVAL": "20", "QUEUE_METRICS_TIMEOUT": "10"}
        )
        assert b"info: reading" in process.stderr.readline()
        time.sleep(0.5)  # the first tick is now waiting for the hung server
        assert process.poll() is None
        sent = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=5)
        assert time.monotonic() - sent < 1.0
        out, err = process.communicate()
        assert out == b""  # the tick never finished: nothing, not half a line
        assert b"Traceback" not in err
    finally:
        os.kill(pid, signal.SIGCONT)


def one_line_error(url: str, **env) -> str:
    result = queue_metrics("once", env={"QUEUE_METRICS_REDIS_URL": url, **env}, timeout=30)
    assert result.returncode == 1, result
    (line,) = lines_of(result.stderr)
    assert PASSWORD not in result.stdout + result.stderr
    return line


def test_wrong_password_and_missing_password(make_server):
    server = make_server(extra=["--requirepass", PASSWORD])
    wrong = one_line_error(f"redis://:not-{PASSWORD}@127.0.0.1:{server.port}/0")
    assert wrong == (
        f"queue-metrics: error: Redis at redis://127.0.0.1:{server.port}/0 rejected the password "
        "(check the URL's credentials)"
    )
    missing = one_line_error(f"redis://127.0.0.1:{server.port}/0")
    assert (
        missing
        == f"queue-metrics: error: Redis at redis://127.0.0.1:{server.port}/0 needs a password and the URL has none"
    )


def test_wrong_database_number(make_server):
    server = make_server(extra=["--requirepass", PASSWORD])
    line = one_line_error(f"redis://:{PASSWORD}@127.0.0.1:{server.port}/99")
    assert line == (
        f"queue-metrics: error: Redis at redis://127.0.0.1:{server.port}/99: "
        "that database number does not exist on this server"
    )


def test_unreachable_host_times_out(tmp_path):
    # A listener whose backlog is full answers no SYN: to a client, a host that does not answer.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(8):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.2)
    try:
        started = time.monotonic()
        line = one_line_error(f"redis://:{PASSWORD}@127.0.0.1:{port}/0", QUEUE_METRICS_TIMEOUT="1")
        assert time.monotonic() - started < 10
        assert line == f"queue-metrics: error: Redis at redis://127.0.0.1:{port}/0 did not answer within 1 s (timeout)"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def test_dns_name_that_does_not_resolve():
    line = one_line_error(f"redis://:{PASSWORD}@no-such-host.invalid:6379/0")
    assert line == (
        "queue-metrics: error: cannot resolve the host of Redis at "
        "redis://no-such-host.invalid:6379/0 (DNS lookup failed)"
    )


def test_url_that_does_not_parse():
    for url in (f"redis://:{PASSWORD}@host:port/0", f"http://:{PASSWORD}@host/", f"redis://:{PASSWORD}@/0"):
        result = queue_metrics("once", env={"REDIS_URL": url})
        assert result.returncode == 2
        (line,) = lines_of(result.stderr)
        assert line.startswith("queue-metrics: usage error: REDIS_URL ")
        assert PASSWORD not in result.stdout + result.stderr


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    cert, key = self_signed_certificate(tmp_path_factory.mktemp("tls"))
    tls_port = free_port()
    server = RedisServer(
        tls_port=tls_port,
        extra=[
            "--tls-cert-file",
            str(cert),
            "--tls-key-file",
            str(key),
            "--tls-ca-cert-file",
            str(cert),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            PASSWORD,
        ],
    ).start()
    sidekiq(f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0", {"enqueue": {"default": 4}})
    yield f"rediss://:{PASSWORD}@127.0.0.1:{tls_port}/0", cert
    server.close()


def test_tls_self_signed_works_by_default_as_on_heroku(tls_server):
    url, _ = tls_server
    result = queue_metrics("once", env={"REDIS_URL": url})
    assert result.returncode == 0, result.stderr
    assert "sample#queue.sidekiq.default.size=4 " in result.stdout
    assert PASSWORD not in result.stdout + result.stderr


def test_tls_verification_required_fails_clearly(tls_server):
    url, _ = tls_server
    line = one_line_error(url, QUEUE_METRICS_TLS_VERIFY="true")
    assert line.startswith(f"queue-metrics: error: TLS with Redis at rediss://127.0.0.1:{url.rsplit(':', 1)[1]}")
    assert "certificate verify failed" in line and "QUEUE_METRICS_TLS_CA_FILE" in line


def test_tls_verification_with_the_ca_works(tls_server):
    url, cert = tls_server
    result = queue_metrics("once", env={"REDIS_URL": url, "QUEUE_METRICS_TLS_CA_FILE": str(cert)})
    assert result.returncode == 0, result.stderr
    assert "sample#queue.sidekiq.default.size=4 " in result.stdout
