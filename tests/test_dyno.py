"""What the loop costs the dyno it lives in, and what it must never print."""

from __future__ import annotations

import json
import time

from helpers.collect import sidekiq
from helpers.process import queue_metrics, start

PASSWORD = "Dyno-Secret-Pa55%21"  # percent-encoded in the URL: "Dyno-Secret-Pa55!" on the wire


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_memory_is_flat_over_ten_thousand_ticks(redis_url, client):
    sidekiq(redis_url, {"enqueue": {"default": 2, "mailers": 1}})
    client.sadd("queues", "with space", "x" * 300)
    # As fast as it goes; a tick that overruns so tight a timeout fails and reconnects, which
    # must not leak either.
    process = start(
        "run", env={"REDIS_URL": redis_url, "QUEUE_METRICS_INTERVAL": "0.002", "QUEUE_METRICS_TIMEOUT": "0.0019"}
    )
    try:
        ticks = succeeded = 0
        rss_at = {}
        for line in process.stdout:
            if b"collector.queues=" in line:
                ticks += 1
                succeeded += b"collector.queues=4 " in line
                if ticks in (100, 10_000):
                    rss_at[ticks] = rss_kb(process.pid)
                if ticks == 10_000:
                    break
        assert succeeded > 9_000
        growth_kb = rss_at[10_000] - rss_at[100]
        assert growth_kb <= 2048, f"RSS grew by {growth_kb} kB between tick 100 and tick 10,000"
    finally:
        process.kill()
        process.wait()


def test_no_output_ever_shows_the_password(make_server, redis_url):
    server = make_server(extra=["--requirepass", "Dyno-Secret-Pa55!"])
    good = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"
    wrong = f"redis://:{PASSWORD}x@127.0.0.1:{server.port}/0"
    refused = f"redis://:{PASSWORD}@127.0.0.1:1/0"
    sidekiq(f"redis://:Dyno-Secret-Pa55!@127.0.0.1:{server.port}/0", {"enqueue": {"default": 1}})
    outputs = []
    for url in (
        good,
        wrong,
        refused,
        f"redis://:{PASSWORD}@127.0.0.1:notaport/0",
        f"rediss://:{PASSWORD}@127.0.0.1:{server.port}/0",
    ):
        for env in (
            {"REDIS_URL": url},
            {"QUEUE_METRICS_REDIS_URL": url, "QUEUE_METRICS_FORMAT": "json"},
            {"REDISCLOUD_URL": url, "QUEUE_METRICS_SOURCE": "web.1"},
        ):
            for arguments in (("once",), ("config",), ("--help",), ("once", "--help")):
                result = queue_metrics(*arguments, env=env)
                outputs.append(result.stdout + result.stderr)
        process = start("run", env={"REDIS_URL": url, "QUEUE_METRICS_INTERVAL": "0.2"})
        time.sleep(1.0)
        process.kill()
        out, err = process.communicate()
        outputs.append((out + err).decode())
    text = "\n".join(outputs)
    assert "sample#queue.sidekiq.default.size=1" in text and "rejected the password" in text
    assert "connection refused" in text and "usage error" in text
    for secret in (PASSWORD, "Dyno-Secret-Pa55!", "Dyno-Secret"):
        assert secret not in text
    json_errors = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert json_errors and all("Dyno-Secret" not in str(document) for document in json_errors)
