"""Usage: .venv/bin/python tests/benchmarks/discovery.py [KEYS]

The keyspace walk on a big keyspace: a private redis-server filled with KEYS unrelated keys
(default 1,000,000, with DEBUG POPULATE) and one Celery queue, read by the collector as `once`
reads it (a whole pass before reporting) and as `run` reads it (one step in the first tick, the
walk paced between ticks). Reports the walk's steps, Redis's own time per SCAN step and per second
of walking (INFO commandstats), the time to find a queue that appears mid-run, and the round
trips and time of each tick. Prints Markdown.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "lib"))

import redis  # noqa: E402

from helpers.servers import RedisServer  # noqa: E402
from queue_metrics.config import Settings  # noqa: E402
from queue_metrics.datastores.redis.connection import connect  # noqa: E402
from queue_metrics.datastores.redis.keyspace_walk import MIN_STEP_GAP  # noqa: E402
from queue_metrics.datastores.redis.reader import RedisReader  # noqa: E402

COMMAND = ".venv/bin/python tests/benchmarks/discovery.py"
INTERVAL = 5.0
PASS_SECONDS = 15.0


def scan_stats(client: redis.Redis) -> tuple:
    stats = client.info("commandstats").get("cmdstat_scan", {"calls": 0, "usec": 0})
    return stats["calls"], stats["usec"]


def message() -> str:
    return json.dumps({"headers": {}, "properties": {"published_at": time.time()}})


def main(keys: int) -> None:
    server = RedisServer(extra=["--enable-debug-command", "yes"]).start()
    try:
        client = redis.Redis.from_url(server.url)
        client.execute_command("DEBUG", "POPULATE", keys, "unrelated")
        client.sadd("_kombu.binding.celery", "celery\x06\x16\x06\x16celery")
        client.lpush("celery", message())
        settings = Settings.from_env(
            {
                "QUEUE_METRICS_REDIS_URL": server.url,
                "QUEUE_METRICS_INTERVAL": str(INTERVAL),
                "QUEUE_METRICS_DISCOVERY_INTERVAL": str(PASS_SECONDS),
            }
        )
        # `once` and `doctor`: a whole pass before reporting, a step every MIN_STEP_GAP.
        calls0, usec0 = scan_stats(client)
        started = time.monotonic()
        whole = RedisReader(settings, connect(settings), whole_first_walk=True).tick()
        whole_seconds = time.monotonic() - started
        calls, usec = scan_stats(client)
        whole_steps, whole_usec = calls - calls0, usec - usec0
        # `run`: ticks every INTERVAL, the walk between them.
        collector = RedisReader(settings, connect(settings))
        calls0, usec0 = scan_stats(client)
        started = time.monotonic()
        first = collector.tick()
        first_seconds = time.monotonic() - started
        ticks = []
        appeared_at = found_at = None
        due = time.monotonic() + INTERVAL
        while time.monotonic() - started < 4 * PASS_SECONDS:
            collector.walk(due)
            due += INTERVAL
            report = collector.tick()
            ticks.append(report)
            names = {sample.queue for sample in report.samples}
            if appeared_at is None and len(ticks) == 2:
                client.sadd("_kombu.binding.late", "late\x06\x16\x06\x16late")
                client.lpush("late", message())
                appeared_at = time.monotonic()
            elif appeared_at is not None and found_at is None and "late" in names:
                found_at = time.monotonic()
        run_seconds = time.monotonic() - started
        calls, usec = scan_stats(client)
        walk = collector.walks[0]
        steps, run_usec = calls - calls0, usec - usec0
        print(f"## Discovery on a big keyspace ({keys:,} unrelated keys)\n")
        print(
            f"Reproduce: `{COMMAND} {keys}`. A private redis-server filled by `DEBUG POPULATE`. First `once` "
            f"(a whole pass before reporting, a step every {MIN_STEP_GAP * 1000:.0f} ms), then `run`: the "
            f"collector ticks every {INTERVAL:g} s and walks the keyspace between ticks, one pass every "
            f"{PASS_SECONDS:g} s (QUEUE_METRICS_DISCOVERY_INTERVAL); {len(ticks) + 1} ticks, "
            f"{run_seconds:.0f} s. Redis time from INFO commandstats.\n"
        )
        print("| figure | value |\n|---|---|")
        print(f"| keyspace (DBSIZE) | {client.dbsize():,} |")
        print(
            f"| `once`: whole walk before reporting | {whole.scan_round_trips:,} steps in {whole_seconds:.1f} s, "
            f"{whole_usec / 1000:.0f} ms of Redis time ({whole_usec / 1e4 / whole_seconds:.1f}% of a core) |"
        )
        print(f"| `once`: Redis time per SCAN step | {whole_usec / max(1, whole_steps) / 1000:.2f} ms |")
        print(
            f"| `run`: first tick, walk steps inside it, wall | {first.scan_round_trips} step(s), "
            f"{first_seconds * 1000:.0f} ms |"
        )
        print(f"| `run`: SCAN steps (COUNT 1000), whole run | {steps:,} over {walk.passes} finished passes |")
        print(f"| `run`: Redis time per SCAN step | {run_usec / max(1, steps) / 1000:.2f} ms |")
        print(
            f"| `run`: Redis time walking, per second of the run | {run_usec / 1000 / run_seconds:.1f} ms "
            f"({run_usec / 1e4 / run_seconds:.1f}% of a core) |"
        )
        print(f"| later ticks: round trips | {sorted({t.round_trips for t in ticks})} |")
        print(f"| later ticks: walk steps inside the tick | {sorted({t.scan_round_trips for t in ticks})} |")
        durations = sorted(t.duration * 1000 for t in ticks)
        print(f"| later ticks: wall ms, median (max) | {durations[len(durations) // 2]:.2f} ({durations[-1]:.2f}) |")
        if found_at is not None and appeared_at is not None:
            print(f"| a queue that appeared mid-run, reported after | {found_at - appeared_at:.1f} s |")
        else:
            print("| a queue that appeared mid-run | not reported within the run |")
    finally:
        server.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
