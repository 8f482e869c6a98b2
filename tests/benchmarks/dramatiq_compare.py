"""Usage: .venv/bin/python tests/benchmarks/dramatiq_compare.py [--queues 1000] [--depth 10] [--ticks 30]

Dramatiq at 1,000 queues: our tick beside judoscale-python's Dramatiq reader, through the 1 ms
proxy of tests/benchmarks/run.py. Prints a Markdown table.

The keys are Dramatiq's Redis broker layout, written by redis-py directly for speed as the real
producer writes them (dispatch.lua's `enqueue`: HSET `dramatiq:<q>.msgs` id -> message, RPUSH
`dramatiq:<q>` id; messages encoded by dramatiq's own `Message.encode`): `--depth` messages per
queue, and one delayed message per queue (`<q>.DQ`), plus `dramatiq:__heartbeats__`.

Ours runs in a fresh process (as run.py does): one warm-up tick after a whole keyspace walk (as
`once` does; `run` finds the queues over its first pass), then the timed ticks. Two cases:
- steady: the heads are the same as at the last tick (a backlog no worker took from): their ids
  are known, no message is read;
- heads moved: every queue's head changed since the last tick (its message read, one more round
  trip), the worst case.
judoscale-python (judoscale/dramatiq/collector.py, 1.13.4 / PyPI 1.14.0), from its facts: per
declared queue, `LINDEX dramatiq:<q> -1` then `HGET dramatiq:<q>.msgs <id>`, one command per round
trip, and `json.loads` of the message; no size (its cap of 20 queues, MAX_QUEUES, lifted here).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis  # noqa: E402
from dramatiq import Message  # noqa: E402
from run import DELAY_MS, Proxy, fmt, summarize, time_ticks  # noqa: E402

from helpers.servers import RedisServer  # noqa: E402
from queue_metrics.config import Settings  # noqa: E402
from queue_metrics.datastores.redis.connection import connect  # noqa: E402
from queue_metrics.datastores.redis.reader import RedisReader  # noqa: E402

COMMAND = ".venv/bin/python tests/benchmarks/dramatiq_compare.py"


def populate(client, queues: int, depth: int) -> list:
    names = [f"dramatiq-queue-{index:05d}" for index in range(queues)]
    sent_at = int((time.time() - 30) * 1000)
    pipe = client.pipeline(transaction=False)
    pipe.zadd("dramatiq:__heartbeats__", {str(uuid.uuid4()): sent_at})
    for index, name in enumerate(names):
        for position in range(depth):
            message_id = str(uuid.uuid4())
            message = Message(
                queue_name=name,
                actor_name="work",
                args=(index, "x" * 20),
                kwargs={},
                options={"redis_message_id": message_id},
                message_timestamp=sent_at + position,
            )
            pipe.hset(f"dramatiq:{name}.msgs", message_id, message.encode())
            pipe.rpush(f"dramatiq:{name}", message_id)
        delayed_id = str(uuid.uuid4())
        delayed = Message(
            queue_name=f"{name}.DQ",
            actor_name="work",
            args=(),
            kwargs={},
            options={"redis_message_id": delayed_id, "eta": sent_at + 3_600_000},
        )
        pipe.hset(f"dramatiq:{name}.DQ.msgs", delayed_id, delayed.encode())
        pipe.rpush(f"dramatiq:{name}.DQ", delayed_id)
        if index % 200 == 0:
            pipe.execute()
    pipe.execute()
    return names


def ours(url: str, ticks: int, queues: int, moved: bool, proxy) -> dict:
    child = subprocess.Popen(
        [sys.executable, __file__, "--ours", url, str(ticks), str(queues), "moved" if moved else "steady"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "warm"
    proxy.reset()
    child.stdin.write("go\n")
    child.stdin.flush()
    result = json.loads(child.stdout.readline())
    child.wait()
    figures = summarize(result["walls"], result["cpus"], proxy.stats(), len(result["walls"]))
    figures["own_round_trips"] = max(result["round_trips"])
    return figures


def ours_child(url: str, ticks: int, queues: int, mode: str) -> None:
    settings = Settings.from_env({"QUEUE_METRICS_REDIS_URL": url, "QUEUE_METRICS_BACKENDS": "dramatiq"})
    collector = RedisReader(settings, connect(settings), whole_first_walk=True)
    (system,) = collector.systems
    report = collector.tick()
    assert report.redis_ok and not report.errors, report.errors
    assert len(report.samples) == queues, len(report.samples)
    print("warm", flush=True)
    sys.stdin.readline()
    walls, cpus, round_trips = [], [], []
    for _ in range(ticks):
        if mode == "moved":
            system._heads = {}  # as if every head had changed: each queue's message is read
        wall, cpu = time.perf_counter(), time.process_time()
        report = collector.tick()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        assert report.redis_ok and not report.errors and len(report.samples) == queues, report.errors
        assert all(sample.latency is not None and sample.latency >= 29 for sample in report.samples)
        round_trips.append(report.round_trips)
    print(json.dumps({"walls": walls, "cpus": cpus, "round_trips": round_trips}), flush=True)


def judoscale_way(url: str, names: list):
    """judoscale-python's reader, from its facts: two sequential commands per queue."""
    client = redis.Redis.from_url(url)

    def tick():
        ages = {}
        for queue in names:
            message_id = client.lindex(f"dramatiq:{queue}", -1)
            if message_id:
                payload = client.hget(f"dramatiq:{queue}.msgs", message_id)
                if payload:
                    stamp = json.loads(payload).get("message_timestamp")
                    if stamp:
                        ages[queue] = time.time() - stamp / 1000
        return ages

    return tick


def table_row(label: str, runs: list) -> str:
    """Medians over the runs of each run's medians."""

    def median(key):
        values = [run[key] for run in runs if run.get(key) is not None]
        return statistics.median(values) if values else None

    own = median("own_round_trips")
    trips = fmt(median("round_trips")) + (f" ({own:.0f})" if own is not None else "")
    return (
        f"| {label} | {runs[0]['ticks']} | {trips} | {fmt(median('wall_median'))} | "
        f"{fmt(median('cpu'))} | {fmt(median('bytes') / 1024)} |"
    )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--ours":
        ours_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--queues", type=int, default=1000)
    parser.add_argument("--depth", type=int, default=10)
    parser.add_argument("--ticks", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()
    server = RedisServer().start()
    proxy = Proxy(server.port, DELAY_MS)
    try:
        client = redis.Redis.from_url(server.url)
        names = populate(client, options.queues, options.depth)
        keys = client.dbsize()
        proxied = f"redis://127.0.0.1:{proxy.port}/0"
        steady, moved, anchor = [], [], []
        for _ in range(options.runs):
            steady.append(ours(proxied, options.ticks, options.queues, False, proxy))
            moved.append(ours(proxied, options.ticks, options.queues, True, proxy))
            anchor.append(time_ticks(judoscale_way(proxied, names), 3, proxy, budget=20.0))
        print(
            f"Dramatiq, {options.queues:,} queues of {options.depth} messages (+1 delayed each), {keys:,} keys; "
            f"{DELAY_MS:g} ms proxy each way; median of {options.runs} runs (`{COMMAND}`)\n"
        )
        print(
            "| what | ticks | round trips / tick (ours: the tick's own count) | wall ms / tick, median | "
            "CPU ms / tick, median | KiB read / tick |\n|---|---|---|---|---|---|"
        )
        print(table_row("queue-metrics, heads unchanged (steady backlog)", steady))
        print(table_row("queue-metrics, every head moved (its message read)", moved))
        print(table_row("judoscale-python's way (LINDEX -1, HGET, per queue)", anchor))
    finally:
        proxy.close()
        server.close()


if __name__ == "__main__":
    main()
