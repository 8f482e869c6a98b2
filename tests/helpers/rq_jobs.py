"""Jobs for a real `rq worker` process in the tests (started with `--path tests/helpers`)."""

from __future__ import annotations

import time


def nap(seconds: float) -> None:
    time.sleep(seconds)


def fail() -> None:
    raise RuntimeError("fails on purpose")


def quick() -> int:
    return 1
