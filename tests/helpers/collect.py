"""Run the real collector against a test server, settings built from a plain dict."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Dict, Optional

from queue_metrics.config import Settings
from queue_metrics.datastores.redis.connection import connect
from queue_metrics.datastores.redis.reader import RedisReader
from queue_metrics.sample import TickReport

HELPERS = os.path.dirname(__file__)


def make_collector(url: str, **env: str) -> RedisReader:
    settings = Settings.from_env({"QUEUE_METRICS_REDIS_URL": url, **env})
    return RedisReader(settings, connect(settings))


def collect(url: str, **env: str) -> TickReport:
    return make_collector(url, **env).tick()


def by_queue(report: TickReport, backend: Optional[str] = None) -> Dict[str, object]:
    return {s.queue: s for s in report.samples if backend is None or s.backend == backend}


def sidekiq(url: str, plan: dict, namespace: str = "") -> dict:
    """Drive the real Sidekiq client (Ruby); returns Sidekiq's own sizes and latencies."""
    result = subprocess.run(
        ["ruby", os.path.join(HELPERS, "sidekiq_client.rb"), url, namespace],
        input=json.dumps(plan),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
