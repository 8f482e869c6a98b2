"""Usage: .venv/bin/python tests/benchmarks/redis_impact.py [QUEUES] [SECONDS]

What the collector does to the latency of an app's own Redis calls: redis-benchmark (one
client, LPUSH, RPOP and GET on its own keys, back to back) against a private redis-server that
also holds QUEUES queues of each system (default 1,000 each, 3,000 in all), first alone, then
while the collector ticks every second over them, for SECONDS (default 20) each. Also Redis's
own CPU time per tick (INFO commandstats, summed over the collector's commands). Prints Markdown.
"""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "benchmarks"))
sys.path.insert(0, str(ROOT / "lib"))

import redis  # noqa: E402
import run as bench  # noqa: E402

from helpers.servers import RedisServer  # noqa: E402
from queue_metrics.collector import Collector  # noqa: E402
from queue_metrics.config import Settings  # noqa: E402
from queue_metrics.connection import connect  # noqa: E402

COMMAND = ".venv/bin/python tests/benchmarks/redis_impact.py"
LOAD_COMMANDS = ("lpush", "rpop", "get")


def load(port: int, seconds: float) -> dict:
    """p50/p99 per command of redis-benchmark run for about `seconds`."""
    requests = 4000  # per command and round; rounds repeat until the time is up
    rows: dict = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = subprocess.run(
            [
                "redis-benchmark",
                "-p",
                str(port),
                "-c",
                "1",
                "-n",
                str(requests),
                "-t",
                ",".join(LOAD_COMMANDS),
                "--csv",
                "--precision",
                "3",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        for row in csv.DictReader(io.StringIO(result.stdout)):
            rows.setdefault(row["test"], []).append((float(row["p50_latency_ms"]), float(row["p99_latency_ms"])))
    return {test: (max(p50 for p50, _ in values), max(p99 for _, p99 in values)) for test, values in rows.items()}


def collector_usec(client: redis.Redis) -> float:
    stats = client.info("commandstats")
    return sum(
        entry["usec"]
        for name, entry in stats.items()
        if name.split("_", 1)[1].split("|")[0] not in ("lpush", "rpop", "get", "info", "config")
    )


def main(queues: int, seconds: float) -> None:
    server = RedisServer().start()
    try:
        client = redis.Redis.from_url(server.url)
        for backend in bench.BACKENDS:
            bench.populate(client, backend, queues, 1)
        alone = load(server.port, seconds)
        settings = Settings.from_env({"QUEUE_METRICS_REDIS_URL": server.url, "QUEUE_METRICS_INTERVAL": "1"})
        collector = Collector(settings, connect(settings))
        collector.tick()
        stop = threading.Event()
        ticks = []

        def tick_every_second() -> None:
            due = time.monotonic()
            while not stop.is_set():
                ticks.append(collector.tick())
                due += 1.0
                stop.wait(max(0.0, due - time.monotonic()))

        client.config_resetstat()
        ticker = threading.Thread(target=tick_every_second, daemon=True)
        ticker.start()
        busy = load(server.port, seconds)
        stop.set()
        ticker.join()
        per_tick_ms = collector_usec(client) / max(1, len(ticks)) / 1000
        print(f"## The app's own Redis calls while the collector ticks ({queues * 3:,} queues)\n")
        print(
            f"Reproduce: `{COMMAND} {queues} {seconds:g}`. redis-benchmark, one client, {', '.join(LOAD_COMMANDS)} "
            f"on its own keys, for {seconds:g} s alone and {seconds:g} s with a tick every second "
            f"({len(ticks)} ticks); the worst p50 and p99 of its rounds.\n"
        )
        print("| command | p50 ms alone / with ticks | p99 ms alone / with ticks |\n|---|---|---|")
        for test in sorted(alone):
            (a50, a99), (b50, b99) = alone[test], busy.get(test, (float("nan"), float("nan")))
            print(f"| {test} | {a50:.3f} / {b50:.3f} | {a99:.3f} / {b99:.3f} |")
        print(f"\nRedis's own CPU time for the collector's commands: {per_tick_ms:.2f} ms a tick (INFO commandstats).")
    finally:
        server.close()


if __name__ == "__main__":
    arguments = sys.argv[1:]
    main(int(arguments[0]) if arguments else 1000, float(arguments[1]) if len(arguments) > 1 else 20.0)
