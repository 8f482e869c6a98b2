"""Usage: .venv/bin/python tests/benchmarks/extras.py [--ticks N] [--paired N]

What the extras (QUEUE_METRICS_EXTRAS: retry/dead sets, workers, throughput, held Celery
messages) cost at 1,000 queues: round trips and time per tick, with the extras on and off, through
the same 1 ms proxy as run.py: first each alone (round trips and bytes as the proxy counts them),
then both in turn, tick for tick ("paired"), so that a busy machine slows both alike.

Each scenario's Redis also holds what the extras read: 4 Sidekiq processes with their heartbeat
and work hashes (3 jobs running each), 50 jobs in each Sidekiq set (5 of the scheduled and retry
sets due), 4 rq workers and 20 jobs in each of a queue's registries (the started ones running,
with their job hashes), 50 messages held by Celery workers.

To compare with a version without extras, run this file from that version's tree (it uses that
tree's run.py and lib/; QUEUE_METRICS_EXTRAS is then ignored):
    git archive <commit> | tar -x -C /tmp/before && cp tests/benchmarks/extras.py /tmp/before/tests/benchmarks/
    cd /tmp/before && /path/to/.venv/bin/python tests/benchmarks/extras.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import (  # noqa: E402
    BACKENDS,
    DELAY_MS,
    Proxy,
    RedisServer,
    Settings,
    connect,
    fmt,
    machine,
    populate,
    redis,
    time_ticks,
)

from queue_metrics.datastores.redis.reader import RedisReader  # noqa: E402

QUEUES = 1000


def add_extras_data(client, backends) -> None:
    """What the extras read, at a busy app's scale."""
    now = time.time()
    pipe = client.pipeline(transaction=False)
    if "sidekiq" in backends:
        # The scheduled and retry sets as in a healthy app: 50 jobs each, 45 due later, 5 due a
        # second ago (the processes' poller moves them within seconds).
        for name in ("schedule", "retry", "dead"):
            pipe.zadd(
                name,
                {
                    json.dumps({"jid": uuid.uuid4().hex, "class": "HardWorker", "queue": f"q{index % 10}"}): (
                        now if name == "dead" else now - 1 if index < 5 else now + 3600
                    )
                    for index in range(50)
                },
            )
        for index in range(4):
            identity = f"web.{index}:1:{uuid.uuid4().hex[:12]}"
            info = {
                "hostname": f"worker.{index}",
                "started_at": now,
                "pid": index,
                "tag": "app",
                "concurrency": 10,
                "queues": ["default"],
                "labels": [],
                "identity": identity,
            }
            pipe.sadd("processes", identity)
            # Its 3 busy threads' jobs (Sidekiq <= 6's work hash; 7+ names it `<identity>:work`).
            job = json.dumps({"class": "HardWorker", "queue": "default", "args": [1], "jid": uuid.uuid4().hex})
            for thread in range(3):
                work = {"queue": "default", "payload": job, "run_at": int(now) - thread}
                pipe.hset(f"{identity}:workers", f"tid{thread}", json.dumps(work))
            pipe.hset(
                identity,
                mapping={
                    "info": json.dumps(info),
                    "busy": 3,
                    "beat": now,
                    "quiet": "false",
                    "rss": 100000,
                    "rtt_us": 200,
                },
            )
        pipe.set("stat:processed", 123456)
        pipe.set("stat:failed", 789)
    if "rq" in backends:
        for index in range(4):
            pipe.sadd("rq:workers", f"rq:worker:w{index}")
            pipe.hset(
                f"rq:worker:w{index}",
                mapping={"state": "busy" if index % 2 else "idle", "pid": index, "queues": "default,low"},
            )
        first = client.smembers("rq:queues")
        queue = sorted(first)[0].decode()[len("rq:queue:") :] if first else "default"
        for registry in ("wip", "failed", "finished", "deferred", "scheduled", "canceled"):
            # Running executions (`<job>:<execution>`) are due for a heartbeat later; scheduled
            # jobs are due later.
            later = registry in ("wip", "scheduled")
            members = {
                f"{uuid.uuid4().hex}:{uuid.uuid4().hex}" if registry == "wip" else uuid.uuid4().hex: now + 600
                if later
                else now
                for _ in range(20)
            }
            pipe.zadd(f"rq:{registry}:{queue}", members)
            for member in members if registry == "wip" else ():
                started = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(now - 5))
                pipe.hset(f"rq:job:{member.split(':')[0]}", mapping={"started_at": started, "origin": queue})
    if "celery" in backends:
        message = {
            "body": "W1tdLCB7fSwgeyJjYWxsYmFja3MiOiBudWxsfV0=" * 10,
            "headers": {"task": "tasks.work"},
            "properties": {"delivery_tag": "x", "delivery_info": {"exchange": "", "routing_key": "q"}},
        }
        for index in range(50):
            pipe.hset("unacked", str(uuid.uuid4()), json.dumps([message, "", f"celery-queue-{index % 10:05d}"]))
    pipe.execute()


def collector_tick(url: str, backends: str, extras: bool):
    settings = Settings.from_env(
        {
            "QUEUE_METRICS_REDIS_URL": url,
            "QUEUE_METRICS_BACKENDS": backends,
            "QUEUE_METRICS_EXTRAS": "on" if extras else "off",
        }
    )
    collector = RedisReader(settings, connect(settings))
    own = []

    def tick():
        report = collector.tick()
        assert report.redis_ok and not report.errors, report.errors
        own.append(report.round_trips)

    return tick, own


def paired(url: str, backends: str, ticks: int) -> dict:
    """Extras off and on, tick for tick in turn on one machine: whatever else the machine is
    doing slows both alike. Per-tick wall and CPU ms medians of each."""
    ticks_by = {extras: collector_tick(url, backends, extras)[0] for extras in (False, True)}
    for tick in ticks_by.values():
        tick()  # warm up
    walls: dict = {False: [], True: []}
    cpus: dict = {False: [], True: []}
    for index in range(2 * ticks):
        extras = bool(index % 2)
        wall, cpu = time.perf_counter(), time.process_time()
        ticks_by[extras]()
        walls[extras].append((time.perf_counter() - wall) * 1000)
        cpus[extras].append((time.process_time() - cpu) * 1000)
    return {extras: (statistics.median(walls[extras]), statistics.median(cpus[extras])) for extras in walls}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ticks", type=int, default=30)
    parser.add_argument("--paired", type=int, default=200, help="ticks of each in the paired comparison")
    arguments = parser.parse_args()
    server = RedisServer().start()
    proxy = Proxy(server.port, DELAY_MS)
    client = redis.Redis.from_url(server.url)
    proxied = f"redis://127.0.0.1:{proxy.port}/0"
    print(*machine(), sep="\n")
    print(f"- Code: {Path(__file__).resolve().parents[2]}\n")
    print(
        "| backend | queues | extras | round trips (proxy / own, max) | wall ms median (p10-p90) | CPU ms | KiB read "
        "| paired: wall ms median | paired: CPU ms median |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    try:
        for backend in (*BACKENDS, "mixed"):
            client.flushall()
            chosen = BACKENDS if backend == "mixed" else (backend,)
            for index, name in enumerate(chosen):
                share = QUEUES // len(chosen) + (index < QUEUES % len(chosen))
                populate(client, name, share, 1)
            add_extras_data(client, chosen)
            pairs = paired(proxied, ",".join(chosen), arguments.paired)
            for extras in (False, True):
                tick, own = collector_tick(proxied, ",".join(chosen), extras)
                figures = time_ticks(tick, arguments.ticks, proxy)
                wall, cpu = pairs[extras]
                print(
                    f"| {backend} | {QUEUES:,} | {'on' if extras else 'off'} | {fmt(figures['round_trips'])} / "
                    f"{max(own[1:])} | {fmt(figures['wall_median'])} ({fmt(figures['wall_p10'])}-"
                    f"{fmt(figures['wall_p90'])}) | {fmt(figures['cpu'])} | {fmt(figures['bytes'] / 1024)} "
                    f"| {fmt(wall)} | {fmt(cpu)} |",
                    flush=True,
                )
    finally:
        proxy.close()
        server.close()


if __name__ == "__main__":
    main()
