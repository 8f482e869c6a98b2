"""The `run` loop: a fixed schedule, flushed output, and a prompt, clean stop on SIGTERM/SIGINT."""

from __future__ import annotations

import contextlib
import math
import signal
import time
from typing import Callable, Iterator, Optional, TypeVar

TickResult = TypeVar("TickResult")


class StopRequested(BaseException):
    """Raised from the signal handler; a BaseException so no `except Exception` swallows it."""


def next_due(previous_due: float, interval: float, now: float) -> float:
    """The next slot of the fixed grid `previous_due + k * interval` that is still ahead of `now`.

    Slots a slow tick overran are skipped rather than run back to back, and the grid never
    drifts by the time ticks take.
    """
    due = previous_due + interval
    if due <= now:
        due += (math.floor((now - due) / interval) + 1) * interval
    return due


class StopSignals:
    """Turns SIGTERM and SIGINT into StopRequested, except while a tick's lines are written."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested = False
        self._writing = False
        self._previous: dict = {}

    def install(self) -> None:
        for signum in self.SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:
        self.requested = True
        if not self._writing:
            raise StopRequested()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """A region no signal interrupts, so a line is never half written."""
        self._writing = True
        try:
            yield
        finally:
            self._writing = False
        if self.requested:
            raise StopRequested()


def run_forever(
    tick: Callable[[], TickResult],
    emit: Callable[[TickResult], None],
    interval: float,
    stop: StopSignals,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    idle: Optional[Callable[[float], None]] = None,
) -> None:
    """Tick at once, then every `interval` seconds on a fixed grid, until StopRequested.

    Between ticks `idle(deadline)` runs (the keyspace walk); it returns by the monotonic
    `deadline`. Without it the loop sleeps.
    """
    due = monotonic()
    while True:
        result = tick()
        with stop.writing():
            emit(result)
        # Not kept through the idle time and the next tick: at ten thousand queues a tick's
        # samples are a megabyte of the web dyno's memory.
        del result
        due = next_due(due, interval, monotonic())
        if idle is not None and due > monotonic():
            idle(due)
        # Whatever `idle` did, the next tick keeps to the grid.
        delay = due - monotonic()
        if delay > 0:
            sleep(delay)
