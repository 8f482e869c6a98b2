"""Usage: .venv/bin/python tests/benchmarks/tick_instructions.py [QUEUES] [--tree DIR ...]

Instructions per tick, counted by `valgrind --tool=callgrind`: the same count for the same code
and data whatever else the machine does, where CPU time on a shared virtual machine can vary by
half from one run to the next. For each system, QUEUES queues (default 1,000, one job each) in a
private redis-server; a process ticks 2 and then 6 times, and the difference over 4 is one tick
(connecting, imports and the first tick's discovery cancel out). `--tree` compares checkouts of
other commits (`git worktree add /tmp/old <commit>`); the default is this one. Prints Markdown.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis  # noqa: E402
import run as bench  # noqa: E402

from helpers.servers import RedisServer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
COMMAND = ".venv/bin/python tests/benchmarks/tick_instructions.py"
# The loop's own collector in the checkout at argv[1], for the Redis at argv[2] and the systems of
# argv[3], in checkouts from before the datastores layout too (tree_cost.py uses it as well).
MAKE_COLLECTOR = """
import sys
sys.path.insert(0, sys.argv[1] + "/lib")
from queue_metrics.config import Settings
settings = Settings.from_env({"QUEUE_METRICS_REDIS_URL": sys.argv[2], "QUEUE_METRICS_BACKENDS": sys.argv[3]})
try:
    from queue_metrics.datastores import KINDS  # noqa: F401 (the datastores layout: the loop's own tick)
    from queue_metrics.collector import Collector
    collector = Collector(settings)
except ImportError:  # a checkout from before the datastores layout
    from queue_metrics.collector import Collector
    from queue_metrics.connection import connect
    collector = Collector(settings, connect(settings))
"""
TICKER = (
    MAKE_COLLECTOR
    + """
for _ in range(int(sys.argv[4])):
    assert collector.tick().redis_ok
"""
)


def instructions(tree: str, url: str, backend: str, ticks: int) -> int:
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-c", TICKER]
    result = subprocess.run([*command, tree, url, backend, str(ticks)], capture_output=True, text=True, check=True)
    return int(next(line for line in result.stderr.splitlines() if "Collected" in line).split()[-1])


def section(queues: int = 1000, trees: Sequence[str] = ()) -> List[str]:
    if shutil.which("valgrind") is None:
        raise SystemExit("tick_instructions.py needs valgrind: apt-get install valgrind")
    trees = list(trees) or [str(ROOT)]
    server = RedisServer().start()
    client = redis.Redis.from_url(server.url)
    out = [
        f"## Instructions per tick ({queues:,} queues, callgrind)",
        "",
        f"Reproduce: `{COMMAND} {queues}{''.join(f' --tree {tree}' for tree in trees if tree != str(ROOT))}`. "
        "Millions of instructions per tick (extras on), the same from run to run: where CPU times on this "
        "shared virtual machine vary from run to run, these say what a change costs.",
        "",
        "| system | " + " | ".join("this checkout" if tree == str(ROOT) else tree for tree in trees) + " |",
        "|---|" + "---|" * len(trees),
    ]
    try:
        for backend in bench.BACKENDS:
            client.flushall()
            bench.populate(client, backend, queues, 1)
            counts = [
                (instructions(tree, server.url, backend, 6) - instructions(tree, server.url, backend, 2)) / 4 / 1e6
                for tree in trees
            ]
            out.append(f"| {backend} | " + " | ".join(f"{count:.1f}" for count in counts) + " |")
    finally:
        server.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("queues", nargs="?", type=int, default=1000)
    parser.add_argument("--tree", action="append", default=[])
    options = parser.parse_args()
    print("\n".join(section(options.queues, options.tree)))


if __name__ == "__main__":
    main()
