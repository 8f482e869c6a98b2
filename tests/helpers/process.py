"""Run `queue-metrics` as a real process, the way a dyno or a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
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


def stop(process: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if it is still there after 15 s; waited for either way."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def wait_ready(name: str, url: str, process: subprocess.Popen, log_path: str, timeout: float) -> None:
    """Until GET {url}/-/ready answers 200 (Prometheus, Alertmanager); a process that died, or is
    not ready in time, says why with the end of its log."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise AssertionError(f"{name} exited {process.returncode}: {log_tail(log_path)}")
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} not ready after {timeout} s: {log_tail(log_path)}")
        time.sleep(0.1)


def log_tail(path: str, size: int = 3000) -> str:
    with open(path, "rb") as handle:
        return handle.read().decode(errors="replace")[-size:]
