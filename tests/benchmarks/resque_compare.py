"""Usage: .venv/bin/python tests/benchmarks/resque_compare.py [--queues 1000] [--depth 10] [--rounds 3]

Resque at 1,000 queues: our tick against HireFire's Resque reader, both through the 1 ms proxy
of tests/benchmarks/run.py. The keys are Resque's own layout as node-resque 9.7.1 writes it
(tests/test_resque.py checks that layout with the real library), written here with redis-py for
speed: the `resque:queues` set, `resque:queue:<q>` lists of JSON payloads (ActiveJob-shaped, with
`args[0].enqueued_at`, or plain), 10 workers in `resque:workers`, 5 of them working.

HireFire's way, from its facts (/work/shared/reference/more-systems.md, hirefire-resource-ruby
1.0.8 lib/hirefire/macro/resque.rb `job_queue_size`): its size is LLEN queue:<q> + the workers
working on the queue (SMEMBERS workers, then GET worker:<id> of each, pipelined) + the due
scheduled jobs (ZRANGEBYSCORE delayed_queue_schedule -inf now LIMIT 0 1000, then the due
timestamps' lists); with no queue named it finds them with KEYS queue:*; it has no latency.
Measured per queue (its per-queue use, the figures ours gives) and once for all queues (one
total, its cheapest use). Each way is timed for its CPU
time in its own process's clock (ours in a child process, as run.py does); `--rounds` runs of
everything, the median of each figure reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402

# JavaScript's Date#toString in UTC, as node-resque writes a worker's `run_at`.
JS_DATE = "%a %b %d %Y %H:%M:%S GMT+0000 (Coordinated Universal Time)"
from run import ALTERNATIVE_BUDGET, DELAY_MS, Proxy, RedisServer, fmt, ours, redis, time_ticks  # noqa: E402

WRAPPER = "ActiveJob::QueueAdapters::ResqueAdapter::JobWrapper"
WORKERS, WORKING = 10, 5


def compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))  # node-resque's JSON.stringify


def iso9(seconds: float) -> str:
    whole = int(seconds)
    return (
        datetime.fromtimestamp(whole, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        + f".{int((seconds - whole) * 1e9):09d}Z"
    )


def payload(queue: str, index: int, stamped: bool, at: float) -> str:
    if not stamped:
        return compact({"class": "Nap", "queue": queue, "args": [f"job-{index}", 0]})
    data = {
        "job_class": "ReportJob",
        "job_id": f"{queue}-{index}",
        "provider_job_id": None,
        "queue_name": queue,
        "priority": None,
        "arguments": [f"job-{index}", 0],
        "executions": 0,
        "exception_executions": {},
        "locale": "en",
        "timezone": "UTC",
        "enqueued_at": iso9(at),
        "scheduled_at": None,
    }
    return compact({"class": WRAPPER, "queue": queue, "args": [data]})


def populate(client, queues: int, depth: int, stamped: bool) -> list:
    client.flushall()
    names = [f"resque-queue-{index:05d}" for index in range(queues)]
    at = time.time() - 30
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.sadd("resque:queues", name)
        pipe.rpush(f"resque:queue:{name}", *[payload(name, index, stamped, at) for index in range(depth)])
    for index in range(WORKERS):
        worker = f"web.1:{1000 + index}:{names[index]}"
        pipe.sadd("resque:workers", worker)
        if index < WORKING:
            job = {
                "queue": names[index],
                # As node-resque writes it (Date#toString), a second before.
                "run_at": time.strftime(JS_DATE, time.gmtime(at - 1)),
                "payload": json.loads(payload(names[index], 0, stamped, at)),
            }
            pipe.set(f"resque:worker:{worker}", compact({**job, "worker": worker}))
    pipe.rpush("resque:failed", compact({"queue": names[0], "exception": "Error", "error": "boom"}))
    pipe.execute()
    return names


def hirefire_per_queue(url: str, names: list):
    """`job_queue_size(queue)` for each queue (the queues configured, so no KEYS): LLEN (pipelined),
    SMEMBERS workers, GET worker:<id> of each (pipelined) decoded for its queue, and the due
    timestamps of delayed_queue_schedule (ZRANGEBYSCORE ... LIMIT 0 1000; none due here)."""
    connection = redis.Redis.from_url(url)

    def size(queue: str) -> int:
        pipe = connection.pipeline(transaction=False)
        pipe.llen(f"resque:queue:{queue}")
        waiting = sum(pipe.execute())
        ids = connection.smembers("resque:workers")
        pipe = connection.pipeline(transaction=False)
        for worker in ids:
            pipe.get(b"resque:worker:" + worker)
        jobs = [json.loads(raw) for raw in pipe.execute() if raw] if ids else []
        working = sum(1 for job in jobs if job.get("queue") == queue)
        due = connection.zrangebyscore("resque:delayed_queue_schedule", "-inf", int(time.time()), start=0, num=1000)
        assert not due  # none is due in this benchmark: their lists are never read
        return waiting + working

    def tick():
        for queue in names:
            size(queue)

    return tick


def hirefire_all(url: str):
    """`job_queue_size` with no queue (all of them, one total): KEYS queue:*, their LLEN
    (pipelined), SMEMBERS workers and GET worker:<id> of each (pipelined, counted), the due
    timestamps."""
    connection = redis.Redis.from_url(url)

    def tick():
        queues = [key[len(b"resque:queue:") :] for key in connection.keys("resque:queue:*")]
        pipe = connection.pipeline(transaction=False)
        for queue in queues:
            pipe.llen(b"resque:queue:" + queue)
        waiting = sum(pipe.execute())
        ids = connection.smembers("resque:workers")
        pipe = connection.pipeline(transaction=False)
        for worker in ids:
            pipe.get(b"resque:worker:" + worker)
        working = sum(1 for raw in pipe.execute() if raw is not None)
        due = connection.zrangebyscore("resque:delayed_queue_schedule", "-inf", int(time.time()), start=0, num=1000)
        assert not due
        return waiting + working

    return tick


def median_of(runs: list) -> dict:
    keys = ("wall_median", "wall_p10", "wall_p90", "cpu", "round_trips", "bytes")
    figures = {key: statistics.median(run[key] for run in runs) for key in keys}
    figures["ticks"] = runs[0]["ticks"]
    figures["own_round_trips"] = max(run.get("own_round_trips", 0) for run in runs)
    return figures


def row(kind: str, label: str, figures: dict, latency: str) -> str:
    own = f"{figures['own_round_trips']}" if label == "ours" else "-"
    return (
        f"| {kind} | {label} | {figures['ticks']} | {own} | {fmt(figures['round_trips'])} | "
        f"{fmt(figures['wall_median'])} ({fmt(figures['wall_p10'])}-{fmt(figures['wall_p90'])}) | "
        f"{fmt(figures['cpu'])} | {fmt(figures['bytes'] / 1024)} | {latency} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queues", type=int, default=1000)
    parser.add_argument("--depth", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ticks", type=int, default=100)
    arguments = parser.parse_args()
    server = RedisServer().start()
    proxy = Proxy(server.port, DELAY_MS)
    client = redis.Redis.from_url(server.url)
    proxied = f"redis://127.0.0.1:{proxy.port}/0"
    rows = []
    try:
        for stamped in (True, False):
            kind = "ActiveJob (stamped)" if stamped else "plain (observed)"
            names = populate(client, arguments.queues, arguments.depth, stamped)
            runs: dict = {"ours": [], "hirefire, all queues (one total)": [], "hirefire, per queue": []}
            for _ in range(arguments.rounds):
                runs["ours"].append(ours(proxied, "resque", arguments.ticks, proxy))
                runs["hirefire, all queues (one total)"].append(
                    time_ticks(hirefire_all(proxied), arguments.ticks, proxy, ALTERNATIVE_BUDGET)
                )
                runs["hirefire, per queue"].append(
                    time_ticks(hirefire_per_queue(proxied, names), 3, proxy, ALTERNATIVE_BUDGET)
                )
            for label, measured in runs.items():
                rows.append(row(kind, label, median_of(measured), "yes" if label == "ours" else "size only"))
                print(rows[-1], file=sys.stderr, flush=True)
        # For scale on a shared machine: ours on Sidekiq and Celery (run.py's layouts, 1 job deep),
        # measured in this same run.
        for backend in ("sidekiq", "celery"):
            client.flushall()
            run.populate(client, backend, arguments.queues, 1)
            figures = median_of([ours(proxied, backend, arguments.ticks, proxy) for _ in range(arguments.rounds)])
            rows.append(row(f"{backend} (for scale)", "ours", figures, "yes"))
            print(rows[-1], file=sys.stderr, flush=True)
    finally:
        proxy.close()
        server.close()
    print(
        f"Resque, {arguments.queues:,} queues of {arguments.depth} jobs, {WORKERS} workers ({WORKING} working), "
        f"through the {DELAY_MS:g} ms proxy; median of {arguments.rounds} runs of each way\n"
    )
    print(
        "| payloads | way | ticks | tick's own round trips, max | proxy round trips / tick | wall ms / tick, median "
        "(p10-p90) | CPU ms / tick, median | KiB read / tick | latency |\n|---|---|---|---|---|---|---|---|---|"
    )
    print("\n".join(rows))


if __name__ == "__main__":
    main()
