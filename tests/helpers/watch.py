"""Watch a running `queue-metrics run` process: every line of stdout and stderr, timestamped."""

from __future__ import annotations

import queue
import threading
import time
from typing import Callable, List, Tuple


class Watcher:
    def __init__(self, process) -> None:
        self.process = process
        self.lines: "queue.Queue[Tuple[float, str, str]]" = queue.Queue()
        self.seen: List[Tuple[float, str, str]] = []
        for name in ("stdout", "stderr"):
            threading.Thread(target=self._pump, args=(name,), daemon=True).start()

    def _pump(self, name: str) -> None:
        stream = getattr(self.process, name)
        for raw in iter(stream.readline, b""):
            self.lines.put((time.monotonic(), name, raw.decode("utf-8", "replace")))

    def wait_for(self, predicate: Callable[[str, str], bool], timeout: float) -> Tuple[float, str, str]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching line within {timeout} s; last lines: {self.seen[-6:]}")
            try:
                item = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            self.seen.append(item)
            if predicate(item[1], item[2]):
                return item

    def drain(self, seconds: float) -> List[Tuple[float, str, str]]:
        deadline = time.monotonic() + seconds
        got = []
        while time.monotonic() < deadline:
            try:
                item = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(item)
            got.append(item)
        return got

    def all_text(self) -> str:
        return "".join(line for _, _, line in self.seen)


def collector_line(stream: str, line: str) -> bool:
    return stream == "stdout" and "collector.queues=" in line


def metric_line(stream: str, line: str) -> bool:
    return stream == "stdout" and ".size=" in line
