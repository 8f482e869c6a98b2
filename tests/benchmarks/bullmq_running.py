"""Usage: /work/main/.venv/bin/python tests/benchmarks/bullmq_running.py [--before TREE] [--active] [--rounds 3]

What BullMQ's issue-27 figures (`running`, `running_age`, `due`, `due_age`) cost: CPU per tick at
1,000 queues (10 jobs waiting each, the layout of bullmq_compare.py), with the extras on and off;
with --active, one job running in every queue (the worst case: each queue's oldest active job is
checked every tick). Each measurement is a child process of 5 warm-up ticks then 80 ticks
(process time), run in turn for this tree and, with --before, another tree's lib/ (a checkout
without the figures: `git archive <commit> | tar -x -C /tmp/before`), on the same redis-server,
so a busy machine slows both alike. Prints one line per run: min, 25th percentile and median ms.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TREE = HERE.parent.parent
QUEUES = 1000


def child(url: str, ticks: int, extras: str) -> None:
    from queue_metrics.config import Settings
    from queue_metrics.datastores.redis.connection import connect
    from queue_metrics.datastores.redis.reader import RedisReader

    names = ",".join(f"queue{index:05d}" for index in range(QUEUES))
    settings = Settings.from_env(
        {
            "QUEUE_METRICS_REDIS_URL": url,
            "QUEUE_METRICS_BACKENDS": "bullmq",
            "QUEUE_METRICS_EXTRAS": extras,
            "QUEUE_METRICS_BULLMQ_QUEUES": names,
        }
    )
    reader = RedisReader(settings, connect(settings))
    for _ in range(5):
        reader.tick()
    cpus = []
    for _ in range(ticks):
        start = time.process_time()
        report = reader.tick()
        cpus.append((time.process_time() - start) * 1000)
    cpus.sort()
    print(
        f"min {cpus[0]:.2f} p25 {cpus[len(cpus) // 4]:.2f} median {statistics.median(cpus):.2f} ms; "
        f"round trips {report.round_trips}, queues {len(report.samples)}, errors {len(report.errors)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", help="another tree, read with its own lib/")
    parser.add_argument("--active", action="store_true", help="a job running in every queue")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        url, ticks, extras = arguments.child
        child(url, int(ticks), extras)
        return
    sys.path[:0] = [str(HERE), str(TREE / "tests"), str(TREE / "lib")]
    import redis
    from bullmq_compare import populate  # type: ignore[import-not-found]

    from helpers.servers import RedisServer

    server = RedisServer().start()
    try:
        client = redis.Redis.from_url(server.url)
        names = populate(client, QUEUES)
        if arguments.active:
            now_ms = int(time.time() * 1000)
            pipe = client.pipeline(transaction=False)
            for name in names:
                job = {"name": "run", "timestamp": now_ms - 70_000, "processedOn": now_ms - 60_000}
                pipe.hset(f"bull:{name}:run1", mapping=job)
                pipe.lpush(f"bull:{name}:active", "run1")
            pipe.execute()
        trees = [str(TREE)] + ([arguments.before] if arguments.before else [])
        for _ in range(arguments.rounds):
            for tree in trees:
                for extras in ("true", "false"):
                    done = subprocess.run(
                        [sys.executable, __file__, "--child", server.url, "80", extras],
                        env={**os.environ, "PYTHONPATH": os.path.join(tree, "lib")},
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    print(f"{tree} extras={extras}: {done.stdout.strip()}", flush=True)
    finally:
        server.close()


if __name__ == "__main__":
    main()
