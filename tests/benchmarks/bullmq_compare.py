"""Usage: .venv/bin/python tests/benchmarks/bullmq_compare.py [--queues 1000] [--ticks 30]

Our BullMQ tick at 1,000 queues beside the anchor's way: BullMQ's `getJobCounts()` called per
queue (judoscale-bullmq, the built-in Prometheus export), i.e. one round trip per queue of its
getCounts script's reads (LINDEX wait -1 for a marker, LLEN wait and active, ZCARD of completed,
delayed, failed, prioritized, waiting-children). Written here as those reads, pipelined per queue,
with redis-py. The queues are written by redis-py in the layout the real BullMQ 6 producer writes
(tests/test_bullmq.py checks that layout against the library): a job counter, a `meta` hash, a
`wait` list of job ids and their hashes, some prioritized, delayed and completed jobs. Measured on
a private redis-server, directly and through tests/benchmarks/proxy.py (1 ms each way). Prints
Markdown.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import redis
from run import DELAY_MS, Proxy, summarize, time_ticks  # type: ignore[import-not-found]
from run import populate as populate_others  # type: ignore[import-not-found]

from helpers.servers import RedisServer
from queue_metrics.config import Settings
from queue_metrics.datastores.redis.connection import connect
from queue_metrics.datastores.redis.reader import RedisReader

DEPTH = 10  # jobs waiting per queue


def populate(client: redis.Redis, queues: int) -> list:
    now_ms = int(time.time() * 1000)
    names = [f"queue{index:05d}" for index in range(queues)]
    pipe = client.pipeline(transaction=False)
    for number, name in enumerate(names):
        base = f"bull:{name}:"
        job = 0
        for _ in range(DEPTH):
            job += 1
            pipe.hset(
                base + str(job),
                mapping={
                    "name": "job",
                    "data": '{"x":1}',
                    "opts": '{"attempts":0}',
                    "timestamp": now_ms - 60_000 + job,
                    "delay": 0,
                    "priority": 0,
                },
            )
            pipe.lpush(base + "wait", job)
        if number % 10 == 0:  # some prioritized jobs
            for counter in (1, 2):
                job += 1
                pipe.hset(base + str(job), mapping={"name": "p", "timestamp": now_ms, "delay": 0, "priority": 5})
                pipe.zadd(base + "prioritized", {str(job): 5 * 2**32 + counter})
            pipe.set(base + "pc", 2)
        if number % 10 == 1:  # some delayed jobs, not yet due
            job += 1
            pipe.hset(base + str(job), mapping={"name": "d", "timestamp": now_ms, "delay": 600_000})
            pipe.zadd(base + "delayed", {str(job): (now_ms + 600_000) * 4096 + (job & 0xFFF)})
        for done in range(5):  # finished jobs
            pipe.zadd(base + "completed", {f"c{done}": now_ms - 1000})
        pipe.set(base + "id", job)
        pipe.hset(base + "meta", mapping={"opts.maxLenEvents": 10000, "version": "bullmq:6.7.6"})
        if number % 100 == 99:
            pipe.execute()
    pipe.execute()
    return names


def get_job_counts(url: str, names: list):
    """The anchor: `getJobCounts()` per queue, one round trip each (its script's reads)."""
    connection = redis.Redis.from_url(url)
    types = ("completed", "delayed", "failed", "prioritized", "waiting-children")

    def tick():
        for name in names:
            pipe = connection.pipeline(transaction=False)
            pipe.lindex(f"bull:{name}:wait", -1)
            pipe.llen(f"bull:{name}:wait")
            pipe.llen(f"bull:{name}:active")
            for kind in types:
                pipe.zcard(f"bull:{name}:{kind}")
            pipe.execute()

    return tick


def ours(url: str, ticks: int, proxy=None, backend: str = "bullmq") -> dict:
    child = subprocess.Popen(
        [sys.executable, __file__, "--ours", url, str(ticks), backend],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "warm"
    if proxy:
        proxy.reset()
    child.stdin.write("go\n")
    child.stdin.flush()
    result = json.loads(child.stdout.readline())
    child.wait()
    figures = summarize(result["walls"], result["cpus"], proxy.stats() if proxy else None, len(result["walls"]))
    figures["own_round_trips"] = max(result["round_trips"])
    figures["queues"] = result["queues"]
    return figures


def ours_child(url: str, ticks: int, backend: str) -> None:
    """A fresh process: the whole first walk, one warm tick, then the timed ones."""
    settings = Settings.from_env({"QUEUE_METRICS_REDIS_URL": url, "QUEUE_METRICS_BACKENDS": backend})
    collector = RedisReader(settings, connect(settings), whole_first_walk=True)
    report = collector.tick()
    assert report.redis_ok and not report.errors, report.errors
    print("warm", flush=True)
    sys.stdin.readline()
    walls, cpus, round_trips = [], [], []
    for _ in range(ticks):
        wall, cpu = time.perf_counter(), time.process_time()
        report = collector.tick()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        assert report.redis_ok and not report.errors, report.errors
        round_trips.append(report.round_trips)
    print(json.dumps({"walls": walls, "cpus": cpus, "round_trips": round_trips, "queues": len(report.samples)}))


def main() -> None:
    if sys.argv[1:2] == ["--ours"]:
        ours_child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--queues", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=30)
    arguments = parser.parse_args()
    server = RedisServer().start()
    proxy = Proxy(server.port, DELAY_MS)
    try:
        client = redis.Redis.from_url(server.url)
        names = populate(client, arguments.queues)
        proxied = f"redis://127.0.0.1:{proxy.port}/0"
        direct = ours(server.url, arguments.ticks)
        through = ours(proxied, arguments.ticks, proxy)
        assert direct["queues"] == arguments.queues, direct
        # RQ's tick on the same server, same run: the machine is shared, so this row says how fast
        # it is now (BENCHMARKS.md's RQ row is the reference for the 20 ms target).
        populate_others(client, "rq", arguments.queues, DEPTH)
        rq_direct = ours(server.url, arguments.ticks, backend="rq")
        rq_through = ours(proxied, arguments.ticks, proxy, backend="rq")
        anchor_direct = time_ticks(get_job_counts(server.url, names), arguments.ticks)
        anchor_through = time_ticks(get_job_counts(proxied, names), max(3, arguments.ticks // 10), proxy)
        print(f"BullMQ, {arguments.queues:,} queues ({DEPTH} jobs waiting each), {client.dbsize():,} keys")
        print(f"our round trips per tick (the reader's own count): {direct['own_round_trips']}\n")
        print("| way | CPU ms/tick (median) | wall ms direct | wall ms proxied | round trips | KB down |")
        print("|---|---|---|---|---|---|")
        for label, near, far in (
            ("queue-metrics tick", direct, through),
            ("`getJobCounts()` per queue (anchor)", anchor_direct, anchor_through),
            ("queue-metrics RQ tick, same run (machine reference)", rq_direct, rq_through),
        ):
            print(
                f"| {label} | {near['cpu']:.1f} | {near['wall_median']:.1f} | {far['wall_median']:.1f} | "
                f"{far['round_trips']:.0f} | {far['bytes'] / 1024:.0f} |"
            )
    finally:
        proxy.close()
        server.close()


if __name__ == "__main__":
    main()
