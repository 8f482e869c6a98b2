"""Real receivers for the network outputs: a UDP listener, the `statsd` daemon (npm, the original
Etsy StatsD), and an OTLP/HTTP receiver that decodes with the official protobuf schema."""

from __future__ import annotations

import gzip
import json
import os
import queue
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, NamedTuple, Optional, Tuple

from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from helpers.servers import free_port

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATSD_JS = os.path.join(TESTS, "node_modules", "statsd", "stats.js")
JSON_BACKEND = os.path.join(os.path.dirname(os.path.abspath(__file__)), "statsd_json_backend.js")


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class UdpListener:
    """Every datagram that arrives, in order."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.datagrams: "queue.Queue[bytes]" = queue.Queue()
        threading.Thread(target=self._receive, daemon=True).start()

    def _receive(self) -> None:
        while True:
            try:
                data = self.socket.recv(65536)
            except OSError:
                return
            self.datagrams.put(data)

    def collect(self, seconds: float) -> List[bytes]:
        deadline = time.monotonic() + seconds
        got = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return got
            try:
                got.append(self.datagrams.get(timeout=remaining))
            except queue.Empty:
                return got

    def close(self) -> None:
        self.socket.close()


class StatsdDaemon:
    """The real `statsd` daemon on a free UDP port, flushing every 200 ms to a backend of ours
    that writes each flush's counters and gauges as one JSON line."""

    def __init__(self) -> None:
        if not os.path.exists(STATSD_JS) or shutil.which("node") is None:
            raise RuntimeError("the statsd npm package is missing: run tests/run, which installs it")
        self.directory = tempfile.mkdtemp(prefix="qm-statsd-")
        self.port = free_udp_port()
        self.flush_file = os.path.join(self.directory, "flushes.jsonl")
        config = {
            "port": self.port,
            "address": "127.0.0.1",
            "mgmt_port": free_port(),
            "mgmt_address": "127.0.0.1",
            "flushInterval": 200,
            "backends": [JSON_BACKEND],
            "jsonFile": self.flush_file,
            "deleteIdleStats": False,
        }
        config_path = os.path.join(self.directory, "config.js")
        with open(config_path, "w") as handle:
            handle.write(f"({json.dumps(config)})\n")
        self.process = subprocess.Popen(
            ["node", STATSD_JS, config_path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 20
        while not os.path.exists(self.flush_file):
            if time.monotonic() > deadline or self.process.poll() is not None:
                output = self.process.stdout.read1() if self.process.poll() is not None else b""
                raise RuntimeError(f"statsd did not start: {output!r}")
            time.sleep(0.05)

    def flushes(self) -> List[dict]:
        with open(self.flush_file) as handle:
            return [json.loads(line) for line in handle if line.strip()]

    def wait_for_gauges(self, *names: str, timeout: float = 10.0) -> dict:
        """The first flush holding every gauge named (the daemon's sanitized keys)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for flush in self.flushes():
                if all(name in flush["gauges"] for name in names):
                    return flush
            time.sleep(0.1)
        raise AssertionError(f"statsd never flushed {names}; last: {self.flushes()[-1:]}")

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


class Request(NamedTuple):
    path: str
    headers: Dict[str, str]
    body: bytes
    # The body as sent (before gzip), and what the official schema makes of it.
    decoded: ExportMetricsServiceRequest
    # The client's address and port: one per connection.
    peer: Tuple[str, int] = ("", 0)


# How long a "slow" receiver takes to answer each request.
SLOW_ANSWER_S = 0.3


class OtlpReceiver:
    """An OTLP/HTTP metrics receiver. `mode`: "ok" (200), "fail" (500), "hang" (never answers),
    "no-gzip" (415 to a gzip body, 200 to a plain one), "slow" (200 after SLOW_ANSWER_S)."""

    def __init__(self, mode: str = "ok", tls: Optional[Tuple[str, str]] = None) -> None:
        self.mode = mode
        self.requests: "queue.Queue[Request]" = queue.Queue()
        self.hits = 0
        self._release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                receiver.hits += 1
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {name.lower(): value for name, value in self.headers.items()}
                if receiver.mode == "hang":
                    receiver._release.wait(30)
                    return
                if receiver.mode == "slow":
                    receiver._release.wait(SLOW_ANSWER_S)
                gzipped = headers.get("content-encoding") == "gzip"
                if receiver.mode == "fail" or (receiver.mode == "no-gzip" and gzipped):
                    self._answer(500 if receiver.mode == "fail" else 415, b"nope")
                    return
                body = gzip.decompress(raw) if gzipped else raw
                request = ExportMetricsServiceRequest()
                if headers.get("content-type") == "application/json":
                    json_format.Parse(body, request)
                else:
                    request.ParseFromString(body)
                receiver.requests.put(Request(self.path, headers, raw, request, self.client_address[:2]))
                # An empty ExportMetricsServiceResponse.
                self._answer(200, b"", "application/x-protobuf")

            def _answer(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except ConnectionError:
                    pass  # the sender cut this request off (its timeout, or the next tick): it is gone

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        if tls:
            # tls: (certificate file, key file). Real TLS, as an https:// endpoint has.
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            self.url = f"https://localhost:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def next(self, timeout: float = 10.0) -> Request:
        try:
            return self.requests.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no OTLP request within {timeout} s") from None

    def close(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()


def points(request: ExportMetricsServiceRequest) -> Dict[str, list]:
    """{metric name: [(attributes dict, value, metric), ...]} over the whole request."""
    found: Dict[str, list] = {}
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                data = metric.gauge if metric.HasField("gauge") else metric.sum
                for point in data.data_points:
                    attributes = {kv.key: kv.value.string_value for kv in point.attributes}
                    value = point.as_int if point.HasField("as_int") else point.as_double
                    found.setdefault(metric.name, []).append((attributes, value, metric))
    return found


def resource_of(request: ExportMetricsServiceRequest) -> Dict[str, str]:
    (resource_metrics,) = request.resource_metrics
    return {kv.key: kv.value.string_value for kv in resource_metrics.resource.attributes}


def by_queue(found: Dict[str, list], name: str) -> Dict[tuple, float]:
    return {(a["messaging.system"], a["messaging.destination.name"]): v for a, v, _ in found.get(name, [])}


def single(found: Dict[str, list], name: str) -> Optional[float]:
    (entry,) = found[name]
    return entry[1]
