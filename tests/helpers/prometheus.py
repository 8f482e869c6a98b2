"""A private, real Prometheus (Debian's `prometheus`) for a test: scrapes given targets every
second, loads given rule files, may send its alerts to an Alertmanager; queried over its HTTP API."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.parse
import urllib.request
from typing import Iterator, List, Optional, Sequence

from helpers.process import stop, wait_ready
from helpers.servers import free_port

SCRAPE_INTERVAL = "1s"
READY_TIMEOUT = 30.0


def prometheus_config(
    scrape_targets: Sequence[str], rule_files: Sequence[str] = (), alertmanager: Optional[str] = None
) -> str:
    """The YAML (JSON is YAML): one job, `queue-metrics`, scraping `host:port` targets at /metrics."""
    config: dict = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
        "scrape_configs": [
            {
                "job_name": "queue-metrics",
                "scrape_interval": SCRAPE_INTERVAL,
                "scrape_timeout": SCRAPE_INTERVAL,
                "static_configs": [{"targets": list(scrape_targets)}],
            }
        ],
        "rule_files": [os.path.abspath(path) for path in rule_files],
    }
    if alertmanager:
        target = urllib.parse.urlsplit(alertmanager).netloc if "://" in alertmanager else alertmanager
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [target]}]}]}
    return json.dumps(config, indent=2)


@contextlib.contextmanager
def prometheus_server(
    tmpdir,
    scrape_targets: Sequence[str],
    rule_files: Sequence[str] = (),
    alertmanager: Optional[str] = None,
) -> Iterator[str]:
    """Start Prometheus with its data under `tmpdir`; yield its base URL (`http://127.0.0.1:<port>`).
    `alertmanager` is its `host:port` or URL. Stopped (and waited for) on exit."""
    directory = os.path.join(str(tmpdir), "prometheus")
    os.makedirs(directory, exist_ok=True)
    config_file = os.path.join(directory, "prometheus.yml")
    with open(config_file, "w") as handle:
        handle.write(prometheus_config(scrape_targets, rule_files, alertmanager))
    port = free_port()
    log = open(os.path.join(directory, "prometheus.log"), "wb")
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config_file}",
            f"--storage.tsdb.path={os.path.join(directory, 'data')}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready("prometheus", base, process, log.name, READY_TIMEOUT)
        yield base
    finally:
        stop(process)
        log.close()


def query(base: str, promql: str) -> List[dict]:
    """An instant query's result vector: [{"metric": {...}, "value": [time, "text"]}, ...]."""
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    with urllib.request.urlopen(url, timeout=5) as answer:
        document = json.load(answer)
    assert document["status"] == "success", document
    return document["data"]["result"]


def targets(base: str) -> List[dict]:
    """The active scrape targets with their health and last error."""
    with urllib.request.urlopen(f"{base}/api/v1/targets", timeout=5) as answer:
        return json.load(answer)["data"]["activeTargets"]


def target_metadata(base: str, metric: str) -> List[dict]:
    """What the scrapes told of a metric family: type, help, unit (units come with OpenMetrics only)."""
    url = f"{base}/api/v1/targets/metadata?{urllib.parse.urlencode({'metric': metric})}"
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.load(answer)["data"]


def wait_for_query(base: str, promql: str, predicate, timeout: float = 30.0) -> List[dict]:
    """Query until `predicate(result)` holds; the last result in the failure's message."""
    deadline = time.monotonic() + timeout
    result: List[dict] = []
    while time.monotonic() < deadline:
        result = query(base, promql)
        if predicate(result):
            return result
        time.sleep(0.25)
    raise AssertionError(f"{promql}: no matching result within {timeout} s; last: {result}; targets: {targets(base)}")
