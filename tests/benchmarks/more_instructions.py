"""Usage: .venv/bin/python tests/benchmarks/more_instructions.py

Instructions per tick (callgrind, as tick_instructions.py counts them: a process ticks 2 and then
6 times, the difference over 4 is one tick) for BullMQ and Resque at 1,000 queues, with the data
bullmq_compare.py and resque_compare.py build, the walk done whole before the first tick; and,
beside them, RQ's and Sidekiq's (run.py's data). Instruction counts do not depend on what else
the machine does, where CPU times here vary by half from run to run. Prints one line each.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bullmq_compare  # noqa: E402
import redis  # noqa: E402
import resque_compare  # noqa: E402
import run as bench  # noqa: E402
import tick_instructions as ti  # noqa: E402

from helpers.servers import RedisServer  # noqa: E402

ROOT = str(Path(__file__).resolve().parents[2])
# Queues found by walking the keyspace (BullMQ) are all found before the ticks counted.
WALKED = "collector = Collector(settings, whole_first_walk=True)\n"
TICKER = ti.TICKER.replace("collector = Collector(settings)\n", WALKED)
SYSTEMS = (
    ("sidekiq", "sidekiq", lambda client: bench.populate(client, "sidekiq", 1000, 1)),
    ("rq", "rq", lambda client: bench.populate(client, "rq", 1000, 1)),
    ("bullmq", "bullmq", lambda client: bullmq_compare.populate(client, 1000)),
    ("resque, stamped payloads", "resque", lambda client: resque_compare.populate(client, 1000, 10, True)),
    ("resque, plain payloads (observed)", "resque", lambda client: resque_compare.populate(client, 1000, 10, False)),
)


def main() -> None:
    ti.TICKER = TICKER
    for label, system, fill in SYSTEMS:
        server = RedisServer()
        server.start()
        try:
            fill(redis.Redis.from_url(server.url))
            two = ti.instructions(ROOT, server.url, system, 2)
            six = ti.instructions(ROOT, server.url, system, 6)
        finally:
            server.stop()
        print(f"{label}: {(six - two) / 4 / 1e6:.1f} M instructions per tick", flush=True)


if __name__ == "__main__":
    main()
