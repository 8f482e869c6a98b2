"""Usage: .venv/bin/python tests/benchmarks/tree_cost.py --tree OLD [--tree NEW] [--rounds 5] [QUEUES ...]

What a change costs the Redis path, measured side by side: the loop's own tick (as `run` makes
it) in checkouts of two commits (`git worktree add /tmp/old <commit>`; the default NEW is this
checkout), through the 1 ms proxy, on the same Redis with the same queues (shared out among the
three systems, one job each; default 1,000 and 10,000). The trees take turns, `--rounds` times
each, every turn in a fresh process, so the machine's drift falls on both alike. Per tree: round
trips per tick, the median tick's CPU and wall time (the median over its turns' medians).
Prints Markdown.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis  # noqa: E402
import run as bench  # noqa: E402
import tick_instructions  # noqa: E402

from helpers.servers import RedisServer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
COMMAND = ".venv/bin/python tests/benchmarks/tree_cost.py"
SYSTEMS = "sidekiq,rq,celery"
# One turn's ticks after a warm-up tick.
TICKS = {1000: 60, 10_000: 15}

TICKER = (
    tick_instructions.MAKE_COLLECTOR
    + """
import json, time
assert collector.tick().redis_ok
print("warm", flush=True)
sys.stdin.readline()
walls, cpus, trips = [], [], []
for _ in range(int(sys.argv[4])):
    wall, cpu = time.perf_counter(), time.process_time()
    report = collector.tick()
    walls.append(time.perf_counter() - wall)
    cpus.append(time.process_time() - cpu)
    assert report.redis_ok and not report.errors, report.errors
    trips.append(report.round_trips)
print(json.dumps({"walls": walls, "cpus": cpus, "round_trips": trips}), flush=True)
"""
)


def turn(tree: str, url: str, ticks: int, proxy: bench.Proxy) -> Dict[str, float]:
    child = subprocess.Popen(
        [sys.executable, "-c", TICKER, tree, url, SYSTEMS, str(ticks)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdin is not None
    assert child.stdout.readline().strip() == "warm"
    proxy.reset()
    child.stdin.write("go\n")
    child.stdin.flush()
    result = json.loads(child.stdout.readline())
    child.wait()
    return {
        "cpu": statistics.median(result["cpus"]) * 1000,
        "wall": statistics.median(result["walls"]) * 1000,
        "round_trips": max(result["round_trips"]),
        "proxy_round_trips": proxy.stats()["round_trips"] / ticks,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", action="append", default=[])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("queues", nargs="*", type=int, default=[1000, 10_000])
    options = parser.parse_args()
    trees: List[str] = options.tree if len(options.tree) > 1 else [*options.tree, str(ROOT)]
    server = RedisServer().start()
    proxy = bench.Proxy(server.port, bench.DELAY_MS)
    client = redis.Redis.from_url(server.url)
    url = f"redis://127.0.0.1:{proxy.port}/0"
    out = [
        f"Reproduce: `{COMMAND} {' '.join(f'--tree {tree}' for tree in options.tree)} --rounds {options.rounds}`. "
        f"The loop's own tick over the queues shared out among {SYSTEMS}, one job each, through the "
        f"{bench.DELAY_MS:g} ms proxy; the trees take turns, {options.rounds} turns each, a fresh process each turn.",
        "",
        "| queues | tree | round trips (ours / counted by the proxy) | CPU ms, median tick | wall ms, median tick |",
        "|---|---|---|---|---|",
    ]
    try:
        for queues in options.queues:
            client.flushall()
            for index, name in enumerate(SYSTEMS.split(",")):
                bench.populate(client, name, queues // 3 + (index < queues % 3), 1)
            results: Dict[str, List[Dict[str, float]]] = {tree: [] for tree in trees}
            for _ in range(options.rounds):
                for tree in trees:
                    results[tree].append(turn(tree, url, TICKS.get(queues, 30), proxy))
            for tree in trees:
                turns = results[tree]
                out.append(
                    f"| {queues:,} | {tree} | {max(t['round_trips'] for t in turns):g} / "
                    f"{statistics.median(t['proxy_round_trips'] for t in turns):.1f} | "
                    f"{statistics.median(t['cpu'] for t in turns):.1f} | "
                    f"{statistics.median(t['wall'] for t in turns):.1f} |"
                )
                print(out[-1], file=sys.stderr, flush=True)
    finally:
        proxy.close()
        server.close()
    print("\n".join(out))


if __name__ == "__main__":
    main()
