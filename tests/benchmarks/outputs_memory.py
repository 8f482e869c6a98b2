"""Usage: .venv/bin/python tests/benchmarks/outputs_memory.py [--queues N] [--interval S]

What each output costs the `run` process, as deployed (the buildpack's slug, started the way the
supervisor starts it): resident memory (VmRSS, and the peak VmHWM) after 50 ticks, and CPU time
per tick, with only the log lines, then with StatsD, OTLP (protobuf, JSON) and all at once. The
receivers are real and local: a UDP socket and an OTLP/HTTP server answering 200, whose counts
show that every tick was sent. Prints a Markdown section for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import List

sys.path.insert(0, str(Path(__file__).resolve().parent))

import redis  # noqa: E402
import run as bench  # noqa: E402

from helpers.servers import RedisServer  # noqa: E402

TICKS = 50
COMMAND = ".venv/bin/python tests/benchmarks/outputs_memory.py"


class Sinks:
    """A UDP socket and an HTTP server that count what arrives."""

    def __init__(self) -> None:
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.datagrams = 0
        self.requests = 0
        sinks = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                sinks.requests += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address) -> None:
                # A `run` process killed, or a request given up at its timeout, resets its
                # connection: expected here, not worth a traceback.
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)

        self.http = Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        threading.Thread(target=self._receive, daemon=True).start()

    def _receive(self) -> None:
        while True:
            self.udp.recv(65536)
            self.datagrams += 1

    def reset(self) -> None:
        self.datagrams = self.requests = 0


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(command: list, env: dict) -> dict:
    import subprocess

    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    errors: list = []
    threading.Thread(target=lambda: errors.extend(process.stderr), daemon=True).start()
    ticks = 0
    for line in process.stdout:
        ticks += b"collector.queues=" in line
        if ticks == 1:
            cpu_start = cpu_seconds(process.pid)
        if ticks >= TICKS:
            break
    figures = {
        "rss_mb": status_kb(process.pid, "VmRSS") / 1024,
        "hwm_mb": status_kb(process.pid, "VmHWM") / 1024,
        "cpu_ms": (cpu_seconds(process.pid) - cpu_start) * 1000 / (TICKS - 1),
    }
    process.kill()
    process.wait()
    figures["errors"] = [line.decode("utf-8", "replace").strip() for line in errors if b"error:" in line]
    return figures


def section(queues: int = 100, interval: float = 0.2) -> List[str]:
    """The Markdown section: `queues` queues of each backend in a private Redis."""
    text = f"{interval:g}"
    # An OTLP request may take most of the interval; the Redis timeout is half of it by default.
    otlp_timeout_ms = f"{interval * 800:g}"
    server = RedisServer().start()
    client = redis.Redis.from_url(server.url)
    for backend in bench.BACKENDS:
        bench.populate(client, backend, queues, 1)
    sinks = Sinks()
    command, build = bench.buildpack_launch(server.url)
    base = {
        "PATH": os.environ["PATH"],
        "REDIS_URL": server.url,
        "QUEUE_METRICS_INTERVAL": text,
        "QUEUE_METRICS_STATSD_ADDRESS": f"127.0.0.1:{sinks.udp.getsockname()[1]}",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{sinks.http.server_address[1]}",
        "OTEL_EXPORTER_OTLP_TIMEOUT": otlp_timeout_ms,
    }
    cases = (
        ("logs (the default)", {"QUEUE_METRICS_OUTPUTS": "logs"}),
        ("logs + statsd (DogStatsD tags)", {"QUEUE_METRICS_OUTPUTS": "logs,statsd"}),
        ("logs + otlp (http/protobuf, gzip)", {"QUEUE_METRICS_OUTPUTS": "logs,otlp"}),
        (
            "logs + otlp (http/json, gzip)",
            {"QUEUE_METRICS_OUTPUTS": "logs,otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
        ),
        ("logs + statsd + otlp", {"QUEUE_METRICS_OUTPUTS": "logs,statsd,otlp"}),
    )
    out = [
        f"## The `run` process with each output on ({queues * 3:,} queues, interval {text} s, after {TICKS} ticks)",
        "",
        f"Reproduce: `{COMMAND} --queues {queues} --interval {text}`. As deployed (buildpack slug, "
        "/usr/bin/python3 -I -S); local receivers (a UDP socket, an HTTP server answering 200) count what arrived. "
        "CPU is per tick, ticks 2 to 50.",
        "",
        "| outputs | resident MB | peak MB | CPU ms / tick | datagrams | OTLP requests | error lines |",
        "|---|---|---|---|---|---|---|",
    ]
    errors: List[str] = []
    try:
        for label, extra in cases:
            sinks.reset()
            figures = measure(command, {**base, **extra})
            time.sleep(0.2)
            out.append(
                f"| {label} | {figures['rss_mb']:.1f} | {figures['hwm_mb']:.1f} | {figures['cpu_ms']:.1f} | "
                f"{sinks.datagrams:,} | {sinks.requests} | {len(figures['errors'])} |"
            )
            print(out[-1], file=sys.stderr, flush=True)
            errors += [f"{label}: {line}" for line in figures["errors"]]
    finally:
        shutil.rmtree(build, ignore_errors=True)
        server.close()
    if errors:
        out += ["", "Error lines:", "", *(f"- `{line}`" for line in errors)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queues", type=int, default=100, help="queues of each backend (default 100)")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between ticks (default 0.2)")
    options = parser.parse_args()
    print("\n".join(section(options.queues, options.interval)))


if __name__ == "__main__":
    main()
