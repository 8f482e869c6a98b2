"""The real BullMQ / Bull library, driven from the tests through tests/helpers/bullmq_driver.js
(one JSON command a line): producers, workers, and the library's own counts."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

HELPERS = os.path.dirname(__file__)


class BullDriver:
    """One `node bullmq_driver.js <lib> <url> <prefix>` process; `call` sends a command and
    returns the library's reply (raises with its stack on an error)."""

    def __init__(self, lib: str, url: str, prefix: str = "bull") -> None:
        self.lib = lib
        self.process = subprocess.Popen(
            ["node", os.path.join(HELPERS, "bullmq_driver.js"), lib, url, prefix],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        ready = self._reply()
        assert ready == "ready", ready

    def _reply(self) -> Any:
        line = self.process.stdout.readline()  # type: ignore[union-attr]
        assert line, f"the {self.lib} driver exited ({self.process.poll()})"
        reply = json.loads(line)
        if "error" in reply:
            raise AssertionError(f"{self.lib}: {reply['error']}")
        return reply["ok"]

    def call(self, op: str, **arguments: Any) -> Any:
        self.process.stdin.write(json.dumps({"op": op, **arguments}) + "\n")  # type: ignore[union-attr]
        self.process.stdin.flush()  # type: ignore[union-attr]
        return self._reply()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.call("close")
                self.process.stdin.close()  # type: ignore[union-attr]
                self.process.wait(timeout=20)
            except (AssertionError, OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(timeout=10)

    def __enter__(self) -> "BullDriver":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
