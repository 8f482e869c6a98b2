"""Usage: .venv/bin/python tests/benchmarks/observed_memory.py [QUEUES] [TICKS]

What observed Celery latency costs: QUEUES backlogged Celery queues (default 1,000) of unstamped
messages about the size Celery writes (~1 KB), one more message pushed to each per tick and none
consumed, so every list's history grows for TICKS ticks (default 200, past the 128 kept). Reports
the collector's memory held for it (tracemalloc), the tick time and round trips, and Redis's time
per LPOS. Prints Markdown.
"""

from __future__ import annotations

import json
import sys
import time
import tracemalloc
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "lib"))

import redis  # noqa: E402

from helpers.servers import RedisServer  # noqa: E402
from queue_metrics.config import Settings  # noqa: E402
from queue_metrics.datastores.redis.connection import connect  # noqa: E402
from queue_metrics.datastores.redis.reader import RedisReader  # noqa: E402

COMMAND = ".venv/bin/python tests/benchmarks/observed_memory.py"


def message() -> str:
    task = str(uuid.uuid4())
    return json.dumps(
        {
            "body": "W1sxXSwge30sIHsiY2FsbGJhY2tzIjogbnVsbH1d" * 12,
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {
                "lang": "py",
                "task": "shop.tasks.report",
                "id": task,
                "eta": None,
                "retries": 0,
                "root_id": task,
                "parent_id": None,
                "argsrepr": "[1]",
                "origin": "gen1@web.1",
            },
            "properties": {
                "correlation_id": task,
                "delivery_mode": 2,
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
                "delivery_info": {"exchange": "", "routing_key": "q"},
            },
        }
    )


def push_round(client: redis.Redis, queues: int) -> None:
    pipe = client.pipeline(transaction=False)
    for index in range(queues):
        pipe.lpush(f"q{index}", message())
    pipe.execute()


def main(queues: int, ticks: int) -> None:
    server = RedisServer().start()
    try:
        client = redis.Redis.from_url(server.url)
        client.sadd("_kombu.binding.celery", *[f"q{i}\x06\x16\x06\x16q{i}" for i in range(queues)])
        push_round(client, queues)
        settings = Settings.from_env({"QUEUE_METRICS_REDIS_URL": server.url, "QUEUE_METRICS_BACKENDS": "celery"})
        collector = RedisReader(settings, connect(settings))
        collector.tick()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        for _ in range(ticks):
            push_round(client, queues)
            collector.tick()
        after = tracemalloc.take_snapshot()
        held = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        tracemalloc.stop()
        # Timed apart from tracemalloc, which slows every allocation.
        durations, trips = [], set()
        for _ in range(20):
            push_round(client, queues)
            started = time.perf_counter()
            report = collector.tick()
            durations.append(time.perf_counter() - started)
            trips.add(report.round_trips)
        stats = client.info("commandstats").get("cmdstat_lpos", {"calls": 1, "usec": 0})
        latencies = [sample.latency for sample in report.samples]
        durations.sort()
        print(f"## Observed Celery latency: cost at {queues:,} backlogged queues\n")
        print(
            f"Reproduce: `{COMMAND} {queues} {ticks}`. Unstamped ~1 KB messages, one more per queue per tick, "
            f"none consumed; {ticks} ticks after a first one, then 20 timed ticks.\n"
        )
        print("| figure | value |\n|---|---|")
        print(
            f"| memory the collector holds for it after {ticks} ticks (tracemalloc) | "
            f"{held / 1024 / 1024:.2f} MiB ({held / queues / 1024:.1f} KiB a queue) |"
        )
        print(f"| tick round trips | {sorted(trips)} |")
        print(
            f"| tick wall ms, median (max), direct | {durations[len(durations) // 2] * 1000:.1f} "
            f"({durations[-1] * 1000:.1f}) |"
        )
        print(f"| Redis time per LPOS (commandstats) | {stats['usec'] / stats['calls']:.1f} us |")
        print(f"| queues with a latency after the run | {sum(value is not None for value in latencies):,} |")
    finally:
        server.close()


if __name__ == "__main__":
    arguments = [int(value) for value in sys.argv[1:]]
    main(*(arguments + [1000, 200][len(arguments) :]))
