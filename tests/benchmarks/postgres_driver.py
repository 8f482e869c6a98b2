"""Usage: .venv/bin/python tests/benchmarks/postgres_driver.py [--runs 5]

What a Postgres driver costs the web dyno: the resident memory (VmRSS) of a fresh interpreter
(`python -I`, with the modules the collector already imports: socket, ssl, json, struct, re)
before and after importing each driver and running 200 small SELECTs over one connection to the
machine's PostgreSQL (127.0.0.1:5432, database `postgres`, trust), and the CPU time of those
200 queries. Ours is `queue_metrics.datastores.postgres.wire`; the others are psycopg 3 (the
test venv's, with its C speedups) and pg8000 (pure Python, installed into a scratch venv here
if missing). Prints a Markdown table of medians over --runs processes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRATCH = Path("/tmp/queue-metrics-pg8000-venv")
QUERY = "SELECT count(*), min(now()) FROM pg_class"

CHILD = r"""
import json, resource, socket, ssl, struct, re, sys, time
def rss():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
which, query = sys.argv[1], sys.argv[2]
base = rss()
if which == "ours":
    sys.path.insert(0, sys.argv[3])
    from queue_metrics.datastores.postgres.wire import PostgresConnection
    imported = rss()
    connection = PostgresConnection("127.0.0.1", 5432, "postgres", "", "postgres", 5.0, 5000, 1000)
    run = lambda: connection.queries([query])
elif which == "psycopg":
    import psycopg
    imported = rss()
    connection = psycopg.connect("host=127.0.0.1 dbname=postgres user=postgres", autocommit=True)
    run = lambda: connection.execute(query).fetchall()
else:
    import pg8000.native
    imported = rss()
    connection = pg8000.native.Connection("postgres", host="127.0.0.1", database="postgres")
    run = lambda: connection.run(query)
cpu = time.process_time()
for _ in range(200):
    run()
cpu = time.process_time() - cpu
print(json.dumps({"base": base, "imported": imported, "after": rss(), "cpu_ms": cpu * 1000}))
"""


def pg8000_python() -> str:
    python = SCRATCH / "bin" / "python"
    if not python.exists():
        venv.create(SCRATCH, with_pip=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "pg8000==1.31.6"], check=True)
    return str(python)


def measure(python: str, which: str, runs: int) -> dict:
    results = []
    for _ in range(runs):
        done = subprocess.run(
            [python, "-I", "-c", CHILD, which, QUERY, str(ROOT / "lib")],
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(done.stdout))
    return {key: statistics.median(result[key] for result in results) for key in results[0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    rows = [
        ("ours (`datastores/postgres/wire.py`)", measure(sys.executable, "ours", runs)),
        ("psycopg 3.3 (binary)", measure(sys.executable, "psycopg", runs)),
        ("pg8000 1.31", measure(pg8000_python(), "pg8000", runs)),
    ]
    print(f"Median of {runs} processes; load average {os.getloadavg()[0]:.2f}.\n")
    print("| driver | RSS before | + import | + 200 queries | CPU of 200 queries |")
    print("|---|---|---|---|---|")
    for name, figures in rows:
        print(
            f"| {name} | {figures['base']:.1f} MiB | +{figures['imported'] - figures['base']:.1f} MiB | "
            f"+{figures['after'] - figures['base']:.1f} MiB | {figures['cpu_ms']:.0f} ms |"
        )


if __name__ == "__main__":
    main()
