"""A private, real Prometheus (Debian's `prometheus`, 2.42) for the tests: its own port and
storage directory, scraping the given targets every second and evaluating the given rule files
every second, sending its alerts to an Alertmanager when one is given."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Iterator, List, Optional, Sequence

from helpers.servers import free_port

PROMETHEUS = shutil.which("prometheus")
# Short enough that a test sees a change within a few seconds; Prometheus accepts 1s.
SCRAPE_INTERVAL = "1s"
EVALUATION_INTERVAL = "1s"
# A loaded 2-core CI machine: Prometheus replays its (empty) WAL and loads the UI first.
READY_TIMEOUT_S = 60.0


def prometheus_config(scrape_targets: Sequence[str], rule_files: Sequence[str], alertmanager: Optional[str]) -> str:
    """prometheus.yml as JSON (YAML's subset): one job `queue-metrics` scraping every target."""
    config: dict = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": EVALUATION_INTERVAL},
        "rule_files": [os.path.abspath(path) for path in rule_files],
        "scrape_configs": [
            {
                "job_name": "queue-metrics",
                "scrape_timeout": SCRAPE_INTERVAL,
                "static_configs": [{"targets": list(scrape_targets)}],
            }
        ],
    }
    if alertmanager:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [host_port(alertmanager)]}]}]}
    return json.dumps(config, indent=2)


def host_port(address: str) -> str:
    """`127.0.0.1:9093` from `127.0.0.1:9093` or `http://127.0.0.1:9093/`."""
    if "//" in address:
        return urllib.parse.urlsplit(address).netloc
    return address


def wait_ready(url: str, process: subprocess.Popen, log_path: str, timeout: float) -> None:
    """Until GET {url}/-/ready answers 200; a process that died says why (its log)."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited {process.returncode}: {tail(log_path)}")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{process.args[0]} not ready after {timeout} s: {tail(log_path)}")
        time.sleep(0.1)


def tail(path: str, size: int = 3000) -> str:
    with open(path, "rb") as handle:
        return handle.read().decode(errors="replace")[-size:]


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@contextlib.contextmanager
def prometheus_server(
    tmpdir, scrape_targets: Sequence[str], rule_files: Sequence[str] = (), alertmanager: Optional[str] = None
) -> Iterator[str]:
    """Yields the base URL (`http://127.0.0.1:<port>`) of a running Prometheus; stops it and
    removes its storage after. `alertmanager`: its `host:port` or base URL."""
    if PROMETHEUS is None:
        raise RuntimeError("prometheus is not installed: run tests/run, which installs it")
    directory = tempfile.mkdtemp(prefix="qm-prometheus-", dir=str(tmpdir))
    config_path = os.path.join(directory, "prometheus.yml")
    with open(config_path, "w") as handle:
        handle.write(prometheus_config(scrape_targets, rule_files, alertmanager))
    port = free_port()
    log_path = os.path.join(directory, "prometheus.log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={os.path.join(directory, 'data')}",
                f"--web.listen-address=127.0.0.1:{port}",
                # Firing alerts are sent again this often (default 1m): a test needs no more.
                "--rules.alert.resend-delay=1s",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, log_path, READY_TIMEOUT_S)
        yield url
    finally:
        stop(process)
        if process.returncode not in (0, -15):
            print(tail(log_path))
        shutil.rmtree(directory, ignore_errors=True)


def api(url: str, path: str, **params: str) -> dict:
    """GET {url}/api/v1/{path}: the `data` of a successful answer."""
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{url}/api/v1/{path}{query}", timeout=10) as answer:
        body = json.load(answer)
    assert body["status"] == "success", body
    return body["data"]


def instant(url: str, expr: str) -> List[dict]:
    """An instant query's vector: [{"metric": {...}, "value": [time, "text"]}, ...]."""
    data = api(url, "query", query=expr)
    assert data["resultType"] == "vector", data
    return data["result"]


def targets_up(url: str) -> bool:
    """Every active target scraped successfully at least once."""
    active = api(url, "targets")["activeTargets"]
    return bool(active) and all(target["health"] == "up" for target in active)
