"""Usage: .venv/bin/python tests/benchmarks/footprint.py [--quick]

The `run` process as deployed (the buildpack's slug, started the way the supervisor starts it),
with everything on: TLS to Redis (as Heroku's Key-Value Store requires), the extra figures, the
keyspace walk, and every output (log lines, StatsD and OTLP/HTTP to local receivers).

- Start-up: process start to the first metric line, beside the bare interpreter's own start.
- Resident memory (VmRSS) after 1,000 ticks at 10, 1,000 and 10,000 queues (10: what the process
  costs before its queues do), and at 1,000 queues after 1,000, 5,000 and 10,000 ticks (flat or
  growing).
- glibc's malloc settings (set by the slug's `queue-metrics` command): the same runs without them,
  at 1,000 and 10,000 queues.
- What each dependency costs: the interpreter alone, then each import the `run` path makes.

Prints a Markdown section; `section()` is what run.py puts in BENCHMARKS.md. --quick: 100 and
1,000 ticks instead of 1,000 and 10,000.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis  # noqa: E402
import run as bench  # noqa: E402
from outputs_memory import Sinks, status_kb  # noqa: E402

from helpers.servers import RedisServer, free_port, self_signed_certificate  # noqa: E402

COMMAND = ".venv/bin/python tests/benchmarks/footprint.py"
PYTHON = "/usr/bin/python3"
# The targets: resident MB at 1,000 and 10,000 queues, first line ms.
TARGET_MB = {1000: 22.0, 10_000: 26.0}
TARGET_FIRST_LINE_MS = 120.0


def tls_server() -> Tuple[RedisServer, str]:
    """A private redis-server answering TLS only on its TLS port (self-signed, as on Heroku)."""
    directory = Path(__import__("tempfile").mkdtemp(prefix="qm-footprint-"))
    cert, key = self_signed_certificate(directory)
    tls_port = free_port()
    server = RedisServer(
        extra=["--tls-cert-file", cert, "--tls-key-file", key, "--tls-auth-clients", "no"], tls_port=tls_port
    ).start()
    return server, f"rediss://127.0.0.1:{tls_port}/0"


def populate_mixed(client, queues: int) -> None:
    """`queues` queues in all, shared out among the three systems."""
    client.flushall()
    for index, backend in enumerate(bench.BACKENDS):
        bench.populate(client, backend, queues // 3 + (index < queues % 3), 1)


def run_until(command: List[str], env: Dict[str, str], checkpoints: Tuple[int, ...]) -> dict:
    """Starts `run`; the first metric line's time, and VmRSS at each tick count of `checkpoints`."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    errors: List[bytes] = []
    threading.Thread(target=lambda: errors.extend(process.stderr), daemon=True).start()  # type: ignore[arg-type]
    first: Optional[float] = None
    ticks = 0
    rss: Dict[int, float] = {}
    assert process.stdout is not None
    for line in process.stdout:
        if first is None and b".size=" in line:
            first = (time.perf_counter() - started) * 1000
        if b"collector.queues=" in line:
            ticks += 1
            if ticks in checkpoints:
                rss[ticks] = status_kb(process.pid, "VmRSS") / 1024
                if ticks == checkpoints[-1]:
                    break
    hwm = status_kb(process.pid, "VmHWM") / 1024
    process.kill()
    process.wait()
    error_lines = [line for line in errors if b"error:" in line]
    first_error = error_lines[0].decode("utf-8", "replace").strip()[:160] if error_lines else ""
    return {
        "first_line_ms": first,
        "rss": rss,
        "hwm": hwm,
        "errors": len(error_lines),
        "ticks": ticks,
        "first_error": first_error,
    }


MALLOC_SETTINGS = "export MALLOC_ARENA_MAX="


def without_malloc_settings(command: List[str]) -> List[str]:
    """A copy of the slug's `queue-metrics` command beside it, without its malloc settings line."""
    launcher = Path(command[0])
    lines = launcher.read_text().splitlines(keepends=True)
    kept = [line for line in lines if not line.startswith(MALLOC_SETTINGS)]
    assert len(kept) == len(lines) - 1, f"no `{MALLOC_SETTINGS}` line in {launcher}"
    copy = launcher.with_name("queue-metrics-default-malloc")
    copy.write_text("".join(kept))
    copy.chmod(0o755)
    return [str(copy), *command[1:]]


def bare_start_ms(runs: int = 20) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([PYTHON, "-I", "-S", "-c", "pass"], check=True)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def import_costs(lib: str) -> List[Tuple[str, float]]:
    """VmRSS of /usr/bin/python3 -I -S after each step of imports, as the slug's `run` makes them."""
    steps = (
        ("the interpreter alone (`-I -S`)", ""),
        ("+ `socket`", "socket"),
        ("+ `typing`, `json`, `urllib.parse`, `re` (stdlib the run path uses)", "typing, json, urllib.parse, re"),
        (
            "+ our `run` path (runner, collector, the three systems)",
            "queue_metrics.runner, queue_metrics.datastores.redis.reader",
        ),
        ("+ `ssl` (a rediss:// URL; loads OpenSSL)", "ssl"),
        ("+ the StatsD output", "queue_metrics.outputs.statsd"),
        (
            "+ the OTLP output (a thread, gzip, our HTTP/1.1 POST)",
            "queue_metrics.outputs.otlp, queue_metrics.http, gzip",
        ),
        ("+ `dataclasses` (not imported: settings are NamedTuples)", "dataclasses"),
        ("+ `http.client` (not imported: the OTLP output posts on its own)", "http.client"),
        ("+ `click` (every command but `run`)", "click"),
        ("+ `redis` (redis-py: only `demo` imports it)", "redis"),
    )
    rows = []
    imported: List[str] = []
    for label, modules in steps:
        if modules:
            imported.append(modules)
        code = f"import sys; sys.path.insert(0, {lib!r})" + "".join(f"; import {m}" for m in imported)
        code += "; print(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1])"
        out = subprocess.run([PYTHON, "-I", "-S", "-c", code], capture_output=True, text=True, check=True).stdout
        rows.append((label, int(out) / 1024))
    return rows


def section(quick: bool = False) -> Tuple[List[str], dict]:
    """The Markdown section, and the figures the targets table checks."""
    few = 100 if quick else 1_000
    server, tls_url = tls_server()
    client = redis.Redis.from_url(server.url)
    sinks = Sinks()
    command, build = bench.buildpack_launch(server.url)
    env = {
        "PATH": os.environ["PATH"],
        "REDIS_URL": tls_url,
        "QUEUE_METRICS_OUTPUTS": "logs,statsd,otlp",
        "QUEUE_METRICS_STATSD_ADDRESS": f"127.0.0.1:{sinks.udp.getsockname()[1]}",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sinks.http.server_address[1]}",
    }
    figures: dict = {}
    lib = str(build / "app" / ".queue-metrics" / "lib")
    try:
        figures["bare_ms"] = bare_start_ms()
        costs = import_costs(lib)
        runs = []
        default_malloc = []
        for queues, interval, checkpoints in (
            (10, 0.02, (few,)),  # what everything on costs before there are queues to speak of
            (1_000, 0.02, (few, few * 5, few * 10)),
            (10_000, 0.2, (few // 3, few)),
        ):
            populate_mixed(client, queues)
            fast = {**env, "QUEUE_METRICS_INTERVAL": f"{interval:g}", "QUEUE_METRICS_TIMEOUT": f"{interval * 0.9:g}"}
            result = run_until(command, fast, checkpoints)
            runs.append((queues, interval, result))
            figures[queues] = result
            print(f"  {queues} queues: {result}", file=sys.stderr, flush=True)
            if queues > 10:
                # The same, launched without bin/queue-metrics's glibc malloc settings.
                without = run_until(without_malloc_settings(command), fast, checkpoints[:1])
                default_malloc.append((queues, checkpoints[0], result["rss"][checkpoints[0]], without["rss"]))
                print(f"  {queues} queues, default malloc: {without}", file=sys.stderr, flush=True)
        # Start-up as a dyno sees it: default settings but the outputs, 1,000 queues, 20 starts.
        populate_mixed(client, 1_000)
        starts = [run_until(command, {**env, "QUEUE_METRICS_INTERVAL": "30"}, (1,))["first_line_ms"] for _ in range(20)]
        figures["first_line_ms"] = statistics.median(starts)
        plain = run_until(command, {**env, "REDIS_URL": server.url, "QUEUE_METRICS_OUTPUTS": "logs"}, (1,))
    finally:
        shutil.rmtree(build, ignore_errors=True)
        server.close()
        sinks.http.shutdown()
    out = [
        "## The `run` process as deployed, everything on",
        "",
        f"Reproduce: `{COMMAND}{' --quick' if quick else ''}`. The buildpack's slug (heroku-22: /usr/bin/python3 "
        "-I -S), TLS to Redis (a self-signed certificate, as on Heroku), extras and the keyspace walk on, "
        "every output on (log lines; StatsD and OTLP/HTTP protobuf to local receivers, which got "
        f"{sinks.datagrams:,} datagrams and {sinks.requests:,} requests). Queues shared out among the three systems, "
        "ticks back to back (the interval shown is shorter than a tick at 10,000 queues).",
        "",
        "| queues | interval s | ticks | resident MB at each | peak MB | error lines (the first) |",
        "|---|---|---|---|---|---|",
    ]
    for queues, interval, result in runs:
        at = ", ".join(f"{rss:.1f} after {ticks:,}" for ticks, rss in sorted(result["rss"].items()))
        out.append(
            f"| {queues:,} | {interval:g} | {result['ticks']:,} | {at} | {result['hwm']:.1f} | {result['errors']}"
            + (f" (`{result['first_error']}`)" if result["first_error"] else "")
            + " |"
        )
    out += [
        "",
        "glibc's malloc settings (`MALLOC_ARENA_MAX=1`, `MALLOC_MMAP_THRESHOLD_` and "
        "`MALLOC_TRIM_THRESHOLD_` fixed at 131072, set by the slug's `queue-metrics` command), against the same "
        "process launched without them (glibc's defaults: an arena per thread, thresholds that rise as big blocks "
        "are freed):",
        "",
        "| queues | ticks | resident MB with them | without them | saved MB |",
        "|---|---|---|---|---|",
    ]
    for queues, ticks, with_them, without in default_malloc:
        out.append(
            f"| {queues:,} | {ticks:,} | {with_them:.1f} | {without[ticks]:.1f} | {without[ticks] - with_them:.1f} |"
        )
    out += [
        "",
        f"Start-up, median of 20 starts at 1,000 queues (interval 30 s): process start to the first metric line "
        f"**{figures['first_line_ms']:.0f} ms**; the bare interpreter (`{PYTHON} -I -S -c pass`) starts in "
        f"{figures['bare_ms']:.0f} ms. With redis:// and the log lines only: {plain['first_line_ms']:.0f} ms "
        f"and {plain['rss'][1]:.1f} MB after the first tick.",
        "",
        "What each dependency costs (VmRSS of a process that imports it, each row adding to the one above):",
        "",
        "| what | resident MB | added MB |",
        "|---|---|---|",
    ]
    previous = None
    for label, mb in costs:
        added = "" if previous is None else f"{mb - previous:+.1f}"
        out.append(f"| {label} | {mb:.1f} | {added} |")
        previous = mb
    return out, figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    options = parser.parse_args()
    lines, _ = section(options.quick)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
