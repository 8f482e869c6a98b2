"""Usage: .venv/bin/python tests/benchmarks/tick_memory.py [QUEUES] [TICKS]

Where a tick's memory goes (tracemalloc, Python allocations only, traced from before the collector
is made, so what the first tick builds and keeps counts): what the collector holds between ticks,
the peak within a tick, and the biggest allocation sites of both (between ticks, and mid-tick when
half the queues' replies have been handed out). QUEUES (default 10,000) are shared out among the
three systems; extras on, log lines rendered, each report dropped once rendered (as the loop does).
Prints Markdown.
"""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path
from typing import List

sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis  # noqa: E402
import run  # noqa: E402, F401 (it puts lib/ and tests/ on sys.path)
from footprint import populate_mixed  # noqa: E402

from helpers.servers import RedisServer  # noqa: E402
from queue_metrics.config import Settings  # noqa: E402
from queue_metrics.datastores.redis.connection import RedisConnection, connect  # noqa: E402
from queue_metrics.datastores.redis.reader import RedisReader  # noqa: E402
from queue_metrics.outputs.format import librato_lines  # noqa: E402

COMMAND = ".venv/bin/python tests/benchmarks/tick_memory.py"
ROOT = str(Path(__file__).resolve().parents[2])


def where(stat) -> str:
    """`caller -> allocation site` (two frames, oldest first)."""
    return " -> ".join(f"{frame.filename.replace(ROOT + '/', '')}:{frame.lineno}" for frame in stat.traceback)


def table(snapshot: tracemalloc.Snapshot, rows: int = 10) -> List[str]:
    mib = 1024 * 1024
    stats = snapshot.statistics("traceback")
    lines = ["| where (caller -> allocation) | MiB | blocks |", "|---|---|---|"]
    lines += [f"| {where(stat)} | {stat.size / mib:.2f} | {stat.count:,} |" for stat in stats[:rows]]
    size, count = sum(stat.size for stat in stats), sum(stat.count for stat in stats)
    lines.append(f"| everything | {size / mib:.2f} | {count:,} |")
    return lines


def section(queues: int = 10_000, ticks: int = 5) -> List[str]:
    """The Markdown section (run.py puts it in BENCHMARKS.md)."""
    server = RedisServer().start()
    try:
        populate_mixed(redis.Redis.from_url(server.url), queues)
        settings = Settings.from_env({"QUEUE_METRICS_REDIS_URL": server.url})
        tracemalloc.start(2)
        collector = RedisReader(settings, connect(settings))
        librato_lines(collector.tick(), "queue", None)
        held, peaks = [], []
        for _ in range(ticks):
            held.append(tracemalloc.get_traced_memory()[0])
            tracemalloc.reset_peak()
            librato_lines(collector.tick(), "queue", None)  # the report dropped, as the loop does
            peaks.append(tracemalloc.get_traced_memory()[1])
        # Made into lines at once: a snapshot kept would be counted in the mid-tick one.
        between = table(tracemalloc.take_snapshot())
        # One more tick, looked at when half the queues' replies have been handed out.
        snapshots: List[tracemalloc.Snapshot] = []
        original = RedisConnection.stream

        def stream(self, next_batch, deliver, *args):
            delivered = 0

            def watched(values):
                nonlocal delivered
                deliver(values)
                delivered += 1
                if delivered == queues // 2:
                    snapshots.append(tracemalloc.take_snapshot())

            return original(self, next_batch, watched, *args)

        RedisConnection.stream = stream  # type: ignore[method-assign]
        collector.tick()
        RedisConnection.stream = original  # type: ignore[method-assign]
    finally:
        tracemalloc.stop()  # what runs after (run.py's other sections) is not slowed by tracing
        server.close()
    mib = 1024 * 1024
    out = [f"## Where a tick's memory goes ({queues:,} queues, tracemalloc)", ""]
    out.append(
        f"Reproduce: `{COMMAND} {queues} {ticks}`. Python allocations only (not the interpreter, nor "
        f"OpenSSL): held between ticks {held[-1] / mib:.1f} MiB; peak within a tick {max(peaks) / mib:.1f} MiB "
        f"(ticks 2 to {ticks + 1})."
    )
    out += ["", "Held between ticks, by allocation site:", "", *between]
    out += ["", "Mid-tick, when half the queues' replies have been handed out:", "", *table(snapshots[0])]
    return out


if __name__ == "__main__":
    arguments = sys.argv[1:]
    print(
        "\n".join(section(int(arguments[0]) if arguments else 10_000, int(arguments[1]) if len(arguments) > 1 else 5))
    )
