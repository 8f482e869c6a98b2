"""Usage: .venv/bin/python tests/benchmarks/memory.py

Where the `run` process's resident memory goes, as deployed (the buildpack's layout, started
the way the supervisor starts it): the interpreter alone, what each import adds, and after 50
ticks over 0, 300 and 3,000 queues.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis  # noqa: E402
import run as bench  # noqa: E402

from helpers.servers import RedisServer  # noqa: E402


def rss_of(command, env) -> float:
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    ticks = 0
    for line in process.stdout:
        ticks += b"collector.queues=" in line
        if ticks >= 50:
            break
    rss = bench.rss_kb(process.pid) / 1024
    process.kill()
    process.wait()
    return rss


def main() -> None:
    server = RedisServer().start()
    client = redis.Redis.from_url(server.url)
    command, build = bench.buildpack_launch(server.url)
    lib = str(build / "app" / ".queue-metrics" / "lib")
    env = {"PATH": os.environ["PATH"], "REDIS_URL": server.url, "QUEUE_METRICS_INTERVAL": "0.05"}
    try:
        print("| what | resident memory, MB |\n|---|---|")
        run_path = "queue_metrics.runner, queue_metrics.collector, queue_metrics.connection"
        for label, code in (
            ("/usr/bin/python3 -I -S, nothing imported", "import time; time.sleep(2)"),
            ("... plus `ssl` and `socket`", "import ssl, socket, time; time.sleep(2)"),
            ("... plus the `run` path as deployed (our modules only)", f"import time, {run_path}; time.sleep(2)"),
            ("... plus `click` (every other command)", f"import time, click, {run_path}; time.sleep(2)"),
            (
                "... plus `redis` (redis-py: only `demo` imports it)",
                f"import time, click, redis, {run_path}; time.sleep(2)",
            ),
        ):
            process = subprocess.Popen(
                ["/usr/bin/python3", "-I", "-S", "-c", f"import sys; sys.path.insert(0, {lib!r}); {code}"]
            )
            import time

            time.sleep(1.5)
            print(f"| {label} | {bench.rss_kb(process.pid) / 1024:.1f} |")
            process.kill()
            process.wait()
        for queues in (0, 100, 1000):
            client.flushall()
            for backend in bench.BACKENDS:
                bench.populate(client, backend, queues, 1) if queues else None
            print(f"| `run` after 50 ticks, {queues * 3:,} queues | {rss_of(command, env):.1f} |")
    finally:
        shutil.rmtree(build, ignore_errors=True)
        server.close()


if __name__ == "__main__":
    main()
