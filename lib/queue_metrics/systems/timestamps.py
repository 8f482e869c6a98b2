"""Timestamps as the three queue systems write them, and the latency rule.

Pure functions: the caller passes `now` (epoch seconds), so tests need no clock.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Optional

from queue_metrics.errors import PayloadError

# Epoch values above this are milliseconds (Sidekiq 8); 1e11 seconds is the year 5138,
# 1e11 milliseconds is 1973.
MILLISECONDS_ABOVE = 1e11
# Nothing enqueued a job before 2000-01-01: an older value is garbage, not a late job.
EARLIEST_PLAUSIBLE = 946684800.0


def epoch_seconds(value: object, field: str) -> float:
    """Epoch seconds from a JSON number or numeric string, in seconds or milliseconds."""
    if isinstance(value, bool) or value is None:
        raise PayloadError(f"{field} is {_kind(value)}, not a timestamp")
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:  # a JSON integer of hundreds of digits
            raise PayloadError(f"{field} is not a finite number") from None
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise PayloadError(f"{field} is not a number: {_clip(value)}") from None
    else:
        raise PayloadError(f"{field} is {_kind(value)}, not a timestamp")
    if not math.isfinite(number):
        raise PayloadError(f"{field} is not a finite number")
    if number > MILLISECONDS_ABOVE:
        number /= 1000.0
    if number < EARLIEST_PLAUSIBLE:
        raise PayloadError(f"{field} is before the year 2000: {_clip(str(value))}")
    return number


def iso8601_seconds(value: object, field: str) -> float:
    """Epoch seconds from an ISO 8601 string; one without an offset is UTC (as RQ writes it)."""
    if not isinstance(value, str):
        raise PayloadError(f"{field} is {_kind(value)}, not an ISO 8601 time")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    moment: Optional[datetime]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = _fromisoformat_long_fraction(text)
    if moment is None:
        raise PayloadError(f"{field} is not an ISO 8601 time: {_clip(value)}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    seconds = moment.timestamp()
    if seconds < EARLIEST_PLAUSIBLE:
        raise PayloadError(f"{field} is before the year 2000: {_clip(value)}")
    return seconds


def latency(enqueued_at: float, now: float) -> float:
    """Seconds the oldest job has waited; clocks of other machines may run ahead, so never < 0."""
    return max(0.0, now - enqueued_at)


def _fromisoformat_long_fraction(text: str) -> Optional[datetime]:
    # Python < 3.11 accepts only 3 or 6 fraction digits; trim or pad to 6 and try once more.
    head, dot, rest = text.partition(".")
    if not dot:
        return None
    digits = len(rest) - len(rest.lstrip("0123456789"))
    fraction, tail = rest[:digits], rest[digits:]
    if not fraction:
        return None
    try:
        return datetime.fromisoformat(f"{head}.{fraction[:6].ljust(6, '0')}{tail}")
    except ValueError:
        return None


def _kind(value: object) -> str:
    if value is None:
        return "missing"
    return {bool: "a boolean", dict: "an object", list: "a list"}.get(type(value), type(value).__name__)


def _clip(text: str, limit: int = 40) -> str:
    shown = text if len(text) <= limit else text[:limit] + "..."
    return repr(shown)
