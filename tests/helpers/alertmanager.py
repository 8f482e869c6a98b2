"""A private, real Alertmanager (Debian's `prometheus-alertmanager`, 0.25) for the tests, whose one
route sends every alert (firing and resolved) at once to a webhook receiver in the test process."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator, List, NamedTuple

from helpers.process import log_tail, stop, wait_ready
from helpers.servers import free_port

ALERTMANAGER = shutil.which("prometheus-alertmanager")
# A notification as soon as Alertmanager has it (its defaults, 30s/5m/4h, are for people); one
# repeat an hour is none within a test.
GROUP_WAIT = "1s"
GROUP_INTERVAL = "1s"
REPEAT_INTERVAL = "1h"
# A loaded 2-core CI machine: Alertmanager reads its (empty) storage and config first.
READY_TIMEOUT_S = 60.0


class Notified(NamedTuple):
    """One alert of a webhook notification: `status` is "firing" or "resolved"."""

    status: str
    labels: dict
    annotations: dict
    received: float  # time.monotonic() at its arrival
    starts_at: float  # unix time Prometheus says the alert started firing (its `startsAt`)


class WebhookReceiver:
    """A tiny HTTP server (a thread of the test process) keeping every JSON payload POSTed to it."""

    def __init__(self) -> None:
        self.payloads: List[dict] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                payload = json.loads(body)
                payload["_received"] = time.monotonic()
                with receiver._lock:
                    receiver.payloads.append(payload)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def notified(self) -> List[Notified]:
        """Every alert of every notification so far, in order of arrival."""
        with self._lock:
            payloads = list(self.payloads)
        return [
            Notified(
                alert["status"],
                alert["labels"],
                alert.get("annotations", {}),
                payload["_received"],
                unix_time(alert["startsAt"]),
            )
            for payload in payloads
            for alert in payload["alerts"]
        ]

    def wait_for(self, predicate: Callable[[Notified], bool], what: str, timeout: float = 60.0) -> Notified:
        """The first alert notified that satisfies `predicate`, waiting for it up to `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            found = [alert for alert in self.notified() if predicate(alert)]
            if found:
                return found[0]
            if time.monotonic() > deadline:
                seen = [(a.status, a.labels.get("alertname"), a.labels) for a in self.notified()]
                raise AssertionError(f"no {what} at the webhook within {timeout} s; it got: {seen}")
            time.sleep(0.1)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def unix_time(rfc3339: str) -> float:
    """`2026-12-07T06:27:10.123456789Z` (Go's RFC 3339, nanoseconds, maybe an offset) as unix time."""
    # Python reads at most microseconds: the digits after six are dropped.
    text = re.sub(r"(\.\d{6})\d+", r"\1", rfc3339).replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()


def alertmanager_config(webhook_url: str) -> str:
    """alertmanager.yml as JSON (YAML's subset): one route, one webhook, resolved alerts too."""
    config = {
        "route": {
            "receiver": "webhook",
            "group_by": ["alertname", "system", "queue", "datastore"],
            "group_wait": GROUP_WAIT,
            "group_interval": GROUP_INTERVAL,
            "repeat_interval": REPEAT_INTERVAL,
        },
        "receivers": [
            {"name": "webhook", "webhook_configs": [{"url": webhook_url, "send_resolved": True}]},
        ],
    }
    return json.dumps(config, indent=2)


class Alertmanager(NamedTuple):
    url: str  # its base URL, for Prometheus's `alertmanager` and its API
    webhook: WebhookReceiver


@contextlib.contextmanager
def alertmanager_server(tmpdir) -> Iterator[Alertmanager]:
    """A running Alertmanager (no cluster gossip) notifying a fresh WebhookReceiver; both stopped,
    and its storage removed, after."""
    if ALERTMANAGER is None:
        raise RuntimeError("prometheus-alertmanager is not installed: run tests/run, which installs it")
    directory = tempfile.mkdtemp(prefix="qm-alertmanager-", dir=str(tmpdir))
    webhook = WebhookReceiver()
    config_path = os.path.join(directory, "alertmanager.yml")
    with open(config_path, "w") as handle:
        handle.write(alertmanager_config(webhook.url))
    port = free_port()
    log_path = os.path.join(directory, "alertmanager.log")
    try:
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [
                    ALERTMANAGER,
                    f"--config.file={config_path}",
                    f"--storage.path={os.path.join(directory, 'data')}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    # Empty: a single instance, no gossip port opened on the machine.
                    "--cluster.listen-address=",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready("alertmanager", url, process, log_path, READY_TIMEOUT_S)
            yield Alertmanager(url, webhook)
        finally:
            stop(process)
            if process.returncode not in (0, -15):
                print(log_tail(log_path))
    finally:
        webhook.close()
        shutil.rmtree(directory, ignore_errors=True)
