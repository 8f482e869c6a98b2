"""The `queue-metrics` command as a real process: output, exit codes, the loop, signals, demo."""

from __future__ import annotations

import json
import os
import select
import signal
import time

from rq import Queue

from helpers.collect import sidekiq
from helpers.process import lines_of, queue_metrics, start


def test_once_prints_metrics_and_exits_0(redis_url):
    sidekiq(redis_url, {"enqueue": {"default": 3}})
    result = queue_metrics("once", env={"REDIS_URL": redis_url})
    assert result.returncode == 0, result.stderr
    lines = lines_of(result.stdout)
    assert lines[0].startswith("sample#queue.sidekiq.default.size=3 sample#queue.sidekiq.default.latency=")
    assert lines[1].startswith("sample#queue.collector.queues=1 sample#queue.collector.errors=0 ")
    assert result.stderr == ""


def test_once_json(redis_url, client):
    Queue("default", connection=client).enqueue("builtins.len", "abc")
    result = queue_metrics(
        "once", "--format", "json", env={"QUEUE_METRICS_REDIS_URL": redis_url, "QUEUE_METRICS_SOURCE": "web.1"}
    )
    assert result.returncode == 0, result.stderr
    (line,) = lines_of(result.stdout)
    document = json.loads(line)
    assert document["queues"][0]["backend"] == "rq"
    assert document["queues"][0]["size"] == 1
    assert isinstance(document["queues"][0]["latency"], float)
    assert document["errors"] == [] and document["source"] == "web.1"


def test_unreachable_redis_exits_1_with_one_line_and_no_secret(make_server):
    server = make_server()
    server.stop()
    url = f"redis://:Sup3rSecretPass@127.0.0.1:{server.port}/0"
    result = queue_metrics("once", env={"REDIS_URL": url})
    assert result.returncode == 1
    assert lines_of(result.stderr) == [
        f"queue-metrics: error: cannot connect to Redis at redis://127.0.0.1:{server.port}/0: "
        "connection refused (is it running?)"
    ]
    assert "Traceback" not in result.stderr
    assert "Sup3rSecretPass" not in result.stdout + result.stderr
    assert lines_of(result.stdout) == [
        "sample#queue.collector.queues=0 sample#queue.collector.errors=1 " + lines_of(result.stdout)[0].split(" ")[-1]
    ]


def test_bad_config_is_a_usage_error_exit_2():
    for env, words in (
        ({"QUEUE_METRICS_INTERVAL": "0"}, "QUEUE_METRICS_INTERVAL"),
        ({"QUEUE_METRICS_BACKENDS": "kafka"}, "unknown backend"),
        ({"REDIS_URL": "redis://:Sup3rSecretPass@host:port/0"}, "REDIS_URL is not a valid"),
    ):
        result = queue_metrics("once", env=env)
        assert result.returncode == 2
        (line,) = lines_of(result.stderr)
        assert line.startswith("queue-metrics: usage error: ") and words in line
        assert "Sup3rSecretPass" not in result.stderr


def test_help_and_config_never_show_the_password(redis_url):
    url = redis_url.replace("redis://", "redis://:Sup3rSecretPass@")
    for arguments in (("--help",), ("run", "--help"), ("config",)):
        result = queue_metrics(*arguments, env={"REDIS_URL": url})
        assert result.returncode == 0, result.stderr
        assert "Sup3rSecretPass" not in result.stdout + result.stderr
    config = queue_metrics("config", env={"REDIS_URL": url, "QUEUE_METRICS_INTERVAL": "7"}).stdout
    assert "interval=7.0" in config and "redis_url_var='REDIS_URL'" in config


def read_line(process, timeout: float) -> str:
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    assert ready, f"no line within {timeout} s"
    return process.stdout.readline().decode()


def test_run_output_arrives_tick_by_tick_through_a_pipe(redis_url):
    sidekiq(redis_url, {"enqueue": {"default": 1}})
    process = start("run", env={"REDIS_URL": redis_url, "QUEUE_METRICS_INTERVAL": "0.5"})
    try:
        arrivals = []
        for _ in range(3):
            line = read_line(process, 5)
            assert line.startswith("sample#queue.sidekiq.default.size=1 ")
            assert read_line(process, 5).startswith("sample#queue.collector.")
            arrivals.append(time.monotonic())
        # Lines arrive while the process runs, half a second apart: flushed per tick.
        gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
        assert all(0.3 < gap < 0.9 for gap in gaps), gaps
        assert process.poll() is None
    finally:
        process.kill()
        process.wait()


def test_sigterm_stops_run_within_a_second_without_a_partial_line(redis_url):
    process = start("run", env={"REDIS_URL": redis_url, "QUEUE_METRICS_INTERVAL": "30"})
    read_line(process, 5)
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=5)
    assert time.monotonic() - started < 1.0
    rest = process.stdout.read().decode()
    assert rest == "" or rest.endswith("\n")
    assert "Traceback" not in process.stderr.read().decode()


def test_sigint_too(redis_url):
    process = start("run", env={"REDIS_URL": redis_url, "QUEUE_METRICS_INTERVAL": "0.2"})
    read_line(process, 5)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=1) == 0


def test_demo_prints_three_ticks_and_cleans_up():
    before = set(os.listdir("/tmp"))
    result = queue_metrics("demo", "--interval", "0.2", timeout=60)
    assert result.returncode == 0, result.stderr
    collector_lines = [line for line in lines_of(result.stdout) if "collector.queues=5 " in line]
    assert len(collector_lines) == 3
    assert "sample#queue.sidekiq.default.size=3" in result.stdout
    assert "sample#queue.rq.reports.size=4" in result.stdout
    assert "sample#queue.celery.celery.size=5" in result.stdout
    assert not [name for name in set(os.listdir("/tmp")) - before if name.startswith("queue-metrics-demo-")]


def test_demo_without_redis_server_says_so():
    result = queue_metrics("demo", env={"PATH": "/nonexistent"})
    assert result.returncode == 1
    assert "needs the redis-server program" in result.stderr
    assert "Traceback" not in result.stderr


def test_python_dash_m_and_version():
    result = queue_metrics("--version")
    assert result.returncode == 0 and "queue-metrics, version 0.1.0" in result.stdout


def test_once_exits_1_when_its_reading_had_an_error_and_still_prints_the_rest(redis_url, client):
    sidekiq(redis_url, {"enqueue": {"default": 2}})
    client.sadd("queues", "broken")
    client.set("queue:broken", "not a list")
    result = queue_metrics("once", env={"REDIS_URL": redis_url})
    assert result.returncode == 1
    assert "sample#queue.sidekiq.default.size=2 " in result.stdout
    assert 'sidekiq queue "broken": its key holds the wrong type of value' in result.stderr
    healthy = queue_metrics("once", env={"REDIS_URL": redis_url, "QUEUE_METRICS_SIDEKIQ_QUEUES": "default"})
    assert healthy.returncode == 1  # the broken queue is still listed by Sidekiq's `queues` set
    client.srem("queues", "broken")
    assert queue_metrics("once", env={"REDIS_URL": redis_url}).returncode == 0


def test_once_table_shows_rq_registries_and_why_a_latency_is_unknown(redis_url, client):
    from rq import Queue, SimpleWorker

    queue = Queue("reports", connection=client)
    queue.enqueue("helpers.rq_jobs.fail")
    SimpleWorker([queue], connection=client).work(burst=True)
    waiting = queue.enqueue("helpers.rq_jobs.quick")
    client.hdel(f"rq:job:{waiting.id}", "enqueued_at")
    result = queue_metrics("once", "--format", "table", env={"REDIS_URL": redis_url})
    # The datastore's line first, then its table.
    datastore, *lines = lines_of(result.stdout)
    assert datastore == f"redis: redis {redis_url} (from REDIS_URL): 1 queue(s), 1 error(s)"
    header = lines[0].split()
    assert header[:4] == ["SYSTEM", "QUEUE", "SIZE", "LATENCY"] and "FAILED" in header
    row = lines[1].split()
    assert row[:4] == ["rq", "reports", "1", "unknown*"]
    assert row[header.index("FAILED")] == "1"  # "unknown*" is one word, as its header
    assert f'* rq reports: latency unknown: job "{waiting.id}" has no enqueued_at' in result.stdout
    assert result.returncode == 1  # the unknown latency is an error of the reading
