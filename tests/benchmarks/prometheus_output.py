"""Usage: .venv/bin/python tests/benchmarks/prometheus_output.py [--queues N] [--interval S]

What the `prometheus` output costs, at N queues (default 1,000): the render time per tick (the
families and the text format, and OpenMetrics, from a synthetic Sidekiq-like TickReport); what
gzip would cost and save; the scrape time, client side, through the real server of a real `run`
process (the buildpack's slug, as deployed) reading a private Redis of N queues (median and 90th
percentile of 50 scrapes, on a kept-alive connection and on a new one each time); and that
process's resident memory after 50 ticks with the output off and on (scraped as Prometheus
does: OpenMetrics, every half second). Prints a Markdown section for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis  # noqa: E402
import run as bench  # noqa: E402

from helpers.servers import RedisServer, free_port  # noqa: E402
from queue_metrics.outputs.prometheus import exposition, families_of  # noqa: E402
from queue_metrics.sample import (  # noqa: E402
    COUNTER,
    UNIT_RATIO,
    UNIT_SECONDS,
    DatastoreSection,
    Figure,
    QueueSample,
    SystemSample,
    TickReport,
)

COMMAND = ".venv/bin/python tests/benchmarks/prometheus_output.py"
ROUNDS = 50
TICKS = 50
OPENMETRICS_ACCEPT = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"


def synthetic_report(queues: int) -> TickReport:
    """Sidekiq-like: size, latency and four figures per queue, the system figures, one datastore."""
    samples = tuple(
        QueueSample(
            "sidekiq",
            f"sidekiq-queue-{index:05d}",
            index % 50,
            index / 7.0,
            (
                Figure("running", index % 3),
                Figure("running_age", index / 3.0, UNIT_SECONDS),
                Figure("due", 0),
                Figure("consumers", 2),
            ),
        )
        for index in range(queues)
    )
    systems = (
        SystemSample(
            "sidekiq",
            (
                Figure("retry", 3),
                Figure("dead", 1),
                Figure("processed", 40, kind=COUNTER),
                Figure("failed", 2, kind=COUNTER),
                Figure("utilization", 0.5, UNIT_RATIO),
            ),
        ),
    )
    section = DatastoreSection("redis", "redis", "redis://localhost:6379/0", "REDIS_URL", True, queues, 1, 0)
    return TickReport(samples, (), ("sidekiq",), 0.02, True, systems=systems, datastores=(section,))


def median_ms(function: Callable[[], object], rounds: int = ROUNDS) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        function()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def render_rows(queues: int) -> List[str]:
    report = synthetic_report(queues)
    totals: dict = {}

    def families():
        return families_of(report, "queue", time.time(), None, totals)[0]

    built = families()
    text = exposition(built).encode()
    om = exposition(built, openmetrics=True).encode()
    text_ms = median_ms(lambda: exposition(built).encode())
    om_ms = median_ms(lambda: exposition(built, True).encode())
    rows = [
        f"| families (labels, counter totals) | {median_ms(families):.2f} ms | |",
        f"| text format from the families | {text_ms:.2f} ms | {len(text):,} B |",
        f"| OpenMetrics from the families | {om_ms:.2f} ms | {len(om):,} B |",
    ]
    rows.append(f"| the whole `send` (families, text and OpenMetrics gzipped) | {send_ms(report):.2f} ms | |")
    for level in (1, 6):
        size = len(gzip.compress(text, compresslevel=level))
        took = median_ms(functools.partial(gzip.compress, text, compresslevel=level))
        rows.append(f"| gzip level {level} of the text body | {took:.2f} ms | {size:,} B |")
    return rows


def send_ms(report: TickReport) -> float:
    """`PrometheusOutput.send` as a tick calls it, OpenMetrics asked: the server's thread runs."""
    from queue_metrics.outputs.prometheus import PrometheusOutput, PrometheusSettings

    output = PrometheusOutput(PrometheusSettings("127.0.0.1", free_port()), "queue", print)
    output.server.openmetrics_asked = True
    try:
        return median_ms(lambda: output.send(report, time.time(), None))
    finally:
        output.close()


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def wait_for_body(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/metrics", headers={"Accept": OPENMETRICS_ACCEPT})
            answer = connection.getresponse()
            answer.read()
            connection.close()
            if answer.status == 200 and answer.getheader("Content-Type", "").startswith("application/openmetrics"):
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("no OpenMetrics body from the run process in time")


def scrape_times(port: int, accept: str, keep_alive: bool, gzipped: bool = False) -> List[float]:
    times = []
    connection: Optional[http.client.HTTPConnection] = None
    headers = {"Accept": accept, **({"Accept-Encoding": "gzip"} if gzipped else {})}
    for _ in range(ROUNDS):
        started = time.perf_counter()
        if connection is None:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        connection.request("GET", "/metrics", headers=headers)
        answer = connection.getresponse()
        body = answer.read()
        times.append((time.perf_counter() - started) * 1000)
        assert answer.status == 200 and body
        if not keep_alive:
            connection.close()
            connection = None
        time.sleep(0.02)
    if connection is not None:
        connection.close()
    return times


def run_process(command: list, env: dict, scrape_port: Optional[int]) -> dict:
    """Start `run`, wait for TICKS ticks (scraped every half second when `scrape_port`), measure."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    errors: list = []
    threading.Thread(target=lambda: errors.extend(process.stderr), daemon=True).start()
    # Its log lines read as they come (a full pipe would stop the loop), ticks counted.
    ticked = threading.Semaphore(0)

    def count_ticks() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if b"collector.queues=" in line:
                ticked.release()

    threading.Thread(target=count_ticks, daemon=True).start()
    figures: dict = {}
    stop = threading.Event()
    scraper = None
    try:
        if scrape_port is not None:
            wait_for_body(scrape_port)
            figures["scrapes"] = {
                "OpenMetrics, gzip, kept alive (as Prometheus)": scrape_times(
                    scrape_port, OPENMETRICS_ACCEPT, True, gzipped=True
                ),
                "text, gzip, new connection": scrape_times(scrape_port, "text/plain", False, gzipped=True),
                "text, plain, kept alive (as curl)": scrape_times(scrape_port, "text/plain", True),
                "text, plain, new connection": scrape_times(scrape_port, "text/plain", False),
            }

            def keep_scraping() -> None:
                while not stop.wait(0.5):
                    try:
                        scrape_times_once(scrape_port)
                    except OSError:
                        pass

            scraper = threading.Thread(target=keep_scraping, daemon=True)
            scraper.start()
        for _ in range(TICKS):
            if not ticked.acquire(timeout=120):
                raise SystemExit(f"the run process stopped ticking: {errors[-3:]}")
        figures["rss_mb"] = status_kb(process.pid, "VmRSS") / 1024
        figures["hwm_mb"] = status_kb(process.pid, "VmHWM") / 1024
    finally:
        stop.set()
        process.kill()
        process.wait()
        if scraper is not None:
            scraper.join()
    figures["errors"] = [line.decode("utf-8", "replace").strip() for line in errors if b"error:" in line]
    return figures


def scrape_times_once(port: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", "/metrics", headers={"Accept": OPENMETRICS_ACCEPT, "Accept-Encoding": "gzip"})
    connection.getresponse().read()
    connection.close()


def section(queues: int, interval: float) -> List[str]:
    out = [
        f"## The `prometheus` output at {queues:,} queues",
        "",
        f"Reproduce: `{COMMAND} --queues {queues} --interval {interval:g}`.",
        "",
        "Render, per tick, in the loop (synthetic Sidekiq-like report: size, latency, 4 figures a queue; "
        f"median of {ROUNDS}):",
        "",
        "| step | time | body |",
        "|---|---|---|",
        *render_rows(queues),
    ]
    print("\n".join(out), file=sys.stderr, flush=True)
    server = RedisServer().start()
    client = redis.Redis.from_url(server.url)
    per_backend = -(-queues // len(bench.BACKENDS))
    for backend in bench.BACKENDS:
        bench.populate(client, backend, per_backend, 1)
    command, build = bench.buildpack_launch(server.url)
    port = free_port()
    base = {"PATH": os.environ["PATH"], "REDIS_URL": server.url, "QUEUE_METRICS_INTERVAL": f"{interval:g}"}
    try:
        off = run_process(command, {**base, "QUEUE_METRICS_OUTPUTS": "logs"}, None)
        on = run_process(
            command,
            {
                **base,
                "QUEUE_METRICS_OUTPUTS": "logs,prometheus",
                "QUEUE_METRICS_PROMETHEUS_ADDRESS": f"127.0.0.1:{port}",
            },
            port,
        )
    finally:
        shutil.rmtree(build, ignore_errors=True)
        server.close()
    total = per_backend * len(bench.BACKENDS)
    out += [
        "",
        f"Scrapes of a real `run` process (buildpack slug) reading {total:,} queues (Sidekiq, RQ, Celery), "
        f"client side, wall time of {ROUNDS} scrapes:",
        "",
        "| scrape | median | 90th percentile |",
        "|---|---|---|",
    ]
    for label, times in on["scrapes"].items():
        ordered = sorted(times)
        out.append(f"| {label} | {statistics.median(ordered):.2f} ms | {ordered[int(len(ordered) * 0.9)]:.2f} ms |")
    out += [
        "",
        f"Resident memory of that `run` process after {TICKS} ticks (interval {interval:g} s; "
        "with the output on, scraped for OpenMetrics every 0.5 s):",
        "",
        "| outputs | resident MB | peak MB | error lines |",
        "|---|---|---|---|",
        f"| logs | {off['rss_mb']:.1f} | {off['hwm_mb']:.1f} | {len(off['errors'])} |",
        f"| logs + prometheus | {on['rss_mb']:.1f} | {on['hwm_mb']:.1f} | {len(on['errors'])} |",
        f"| difference | {on['rss_mb'] - off['rss_mb']:+.1f} | {on['hwm_mb'] - off['hwm_mb']:+.1f} | |",
    ]
    for label, figures in (("off", off), ("on", on)):
        out += [f"- error line ({label}): `{line}`" for line in figures["errors"]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queues", type=int, default=1000, help="queues in all (default 1,000)")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between ticks (default 0.5)")
    options = parser.parse_args()
    print("\n".join(section(options.queues, options.interval)))


if __name__ == "__main__":
    main()
