"""Usage: .venv/bin/python tests/benchmarks/redis_impact.py [QUEUES] [SECONDS]

What the collector does to the latency of an app's own Redis calls: redis-benchmark (one
client, LPUSH, RPOP and GET on its own keys, back to back, in rounds of 4,000 requests each)
against a private redis-server that also holds QUEUES queues (default 10,000, shared out among
the three systems), first alone, then while the `run` process as deployed (the buildpack's slug,
everything on but the network outputs) ticks every second, for SECONDS (default 20) each. Also
Redis's own CPU time per tick (INFO commandstats, summed over the collector's commands).

This machine has two cores, and on Heroku the collector never shares one with Redis: Redis gets
core 0 to itself; the load generator and the collector share core 1, the collector at nice 19 so
that it never delays the load generator's own measurement. Prints Markdown.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import List, Tuple

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "benchmarks"))
sys.path.insert(0, str(ROOT / "lib"))

import redis  # noqa: E402
import run as bench  # noqa: E402

from helpers.servers import RedisServer  # noqa: E402

COMMAND = ".venv/bin/python tests/benchmarks/redis_impact.py"
LOAD_COMMANDS = ("lpush", "rpop", "get")


def load(port: int, seconds: float) -> dict:
    """Per command: the median and the worst of the rounds' p50 and p99, over about `seconds`."""
    requests = 4000  # per command and round; rounds repeat until the time is up
    rows: dict = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = subprocess.run(
            [
                "taskset",
                "-c",
                "1",
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
    return {
        test: {
            "p50": statistics.median(p50 for p50, _ in values),
            "p99": statistics.median(p99 for _, p99 in values),
            "worst_p99": max(p99 for _, p99 in values),
            "rounds": len(values),
        }
        for test, values in rows.items()
    }


def collector_usec(client: redis.Redis) -> float:
    stats = client.info("commandstats")
    return sum(
        entry["usec"]
        for name, entry in stats.items()
        if name.split("_", 1)[1].split("|")[0] not in ("lpush", "rpop", "get", "info", "config")
    )


def section(queues: int = 10_000, seconds: float = 20.0) -> Tuple[List[str], dict]:
    """The Markdown section, and the figures the targets table checks."""
    server = RedisServer().start()
    os.sched_setaffinity(server.process.pid, {0})
    command, build = bench.buildpack_launch(server.url)
    ticks = []
    try:
        client = redis.Redis.from_url(server.url)
        for index, backend in enumerate(bench.BACKENDS):
            bench.populate(client, backend, queues // 3 + (index < queues % 3), 1)
        alone = load(server.port, seconds)
        env = {"PATH": os.environ["PATH"], "REDIS_URL": server.url, "QUEUE_METRICS_INTERVAL": "1"}
        collector = subprocess.Popen(
            ["taskset", "-c", "1", "nice", "-n", "19", *command],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert collector.stdout is not None
        for line in collector.stdout:  # the first tick (with its keyspace walk) is not counted
            if b"collector.queues=" in line:
                break
        client.config_resetstat()
        threading.Thread(
            target=lambda: ticks.extend(line for line in collector.stdout if b"collector.queues=" in line),
            daemon=True,
        ).start()
        busy = load(server.port, seconds)
        per_tick_ms = collector_usec(client) / max(1, len(ticks)) / 1000
        collector.kill()
        collector.wait()
    finally:
        shutil.rmtree(build, ignore_errors=True)
        server.close()
    lines = [
        f"## The app's own Redis calls while the collector ticks ({queues:,} queues)",
        "",
        f"Reproduce: `{COMMAND} {queues} {seconds:g}`. redis-benchmark, one client, {', '.join(LOAD_COMMANDS)} "
        f"on its own keys in rounds of 4,000 requests, for {seconds:g} s alone and {seconds:g} s while the `run` "
        f"process as deployed ticks every second ({len(ticks)} ticks). Redis has core 0 to itself; the load "
        "generator and the collector (nice 19) share core 1. p50 and p99: the median over the rounds; "
        "worst: the worst round's p99.",
        "",
        "| command | rounds alone / with ticks | p50 ms alone / with ticks | p99 ms alone / with ticks | "
        "worst p99 ms alone / with ticks |",
        "|---|---|---|---|---|",
    ]
    p99 = {}
    for test in sorted(alone):
        a, b = alone[test], busy[test]
        p99[test] = (a["p99"], b["p99"])
        lines.append(
            f"| {test} | {a['rounds']} / {b['rounds']} | {a['p50']:.3f} / {b['p50']:.3f} | "
            f"{a['p99']:.3f} / {b['p99']:.3f} | {a['worst_p99']:.3f} / {b['worst_p99']:.3f} |"
        )
    lines += [
        "",
        f"Redis's own CPU time for the collector's commands: {per_tick_ms:.2f} ms a tick (INFO commandstats).",
    ]
    return lines, {"queues": queues, "p99": p99, "per_tick_ms": per_tick_ms}


def main(queues: int, seconds: float) -> None:
    print("\n".join(section(queues, seconds)[0]))


if __name__ == "__main__":
    arguments = sys.argv[1:]
    main(int(arguments[0]) if arguments else 10_000, float(arguments[1]) if len(arguments) > 1 else 20.0)
