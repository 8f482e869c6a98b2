"""Run `queue-metrics` as a real process, the way a dyno or a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Dict, List, Optional

BASE_ENV_DROP = ("REDIS_URL", "REDIS_TLS_URL", "REDISCLOUD_URL", "REDISTOGO_URL", "OPENREDIS_URL", "REDISGREEN_URL")


def command_env(**env: str) -> Dict[str, str]:
    merged = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("QUEUE_METRICS_", "OTEL_")) and name not in BASE_ENV_DROP
    }
    merged["PYTHONUNBUFFERED"] = ""  # prove we flush ourselves
    merged.pop("PYTHONUNBUFFERED")
    merged.update(env)
    return merged


def queue_metrics(
    *arguments: str, env: Optional[Dict[str, str]] = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "queue_metrics", *arguments],
        env=command_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start(*arguments: str, env: Optional[Dict[str, str]] = None, **options) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "queue_metrics", *arguments],
        env=command_env(**(env or {})),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        **options,
    )


def lines_of(text: str) -> List[str]:
    return [line for line in text.splitlines() if line]
