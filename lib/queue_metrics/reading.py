"""The small protocol every backend speaks, so one pipeline serves all queues at once.

A backend reads a queue with a generator: it yields a `Batch` of the commands it needs, receives
their replies (and the time they arrived), may yield once more for a follow-up read, and returns
a `QueueSample` (or None when the size itself could not be read). The collector advances every
queue's generator in lockstep, so N queues cost one round trip per step, not N.

Commands travel already packed (RESP bytes): a queue's first batch is the same every tick, so
readers pack it once and keep it.
"""

from __future__ import annotations

import json
from typing import Callable, Generator, List, NamedTuple, Optional, Tuple

from queue_metrics.resp import pack_commands
from queue_metrics.sample import QueueSample
from queue_metrics.timestamps import PayloadError

Command = Tuple[object, ...]


class Replies(NamedTuple):
    values: list
    # Epoch seconds when the replies arrived: the `now` of every latency computed from them.
    now: float




class Batch(NamedTuple):
    """Commands packed for the wire, and how many replies they will get."""

    packed: bytes
    count: int


def batch(*commands: Command) -> Batch:
    return Batch(pack_commands(commands), len(commands))


QueueReader = Generator[Batch, Replies, Optional[QueueSample]]


class Problems:
    """Collects one-line problem messages during a tick."""

    def __init__(self) -> None:
        self.messages: List[str] = []

    def add(self, message: str) -> None:
        self.messages.append(message)

    def about_queue(self, backend: str, queue: str, message: str) -> None:
        self.messages.append(f"{backend} queue {show_name(queue)}: {message}")


def decode_name(raw: bytes) -> str:
    """Names are kept as str that turn back into the exact bytes of the key."""
    return raw.decode("utf-8", "surrogateescape")


def encode_key(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def show_name(name: str, limit: int = 80) -> str:
    """A name quoted on one line: control characters and odd bytes escaped, long names cut."""
    shown = json.dumps(name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))
    if len(shown) > limit:
        shown = shown[: limit - 4] + '..."'
    return shown


def is_error(reply: object) -> bool:
    return isinstance(reply, Exception)


def describe_reply_error(reply: Exception, expected: str = "a list") -> str:
    text = str(reply).split("\n", 1)[0]
    if text.startswith("WRONGTYPE"):
        return f"its key holds the wrong type of value (expected {expected})"
    return text or type(reply).__name__


def parse_json_object(payload: bytes, what: str) -> dict:
    try:
        # Decoding first spares json.loads guessing the encoding of bytes.
        value = json.loads(payload.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise PayloadError(f"{what} is not JSON ({len(payload)} bytes)") from None
    if not isinstance(value, dict):
        raise PayloadError(f"{what} is JSON but not an object")
    return value


class ListHead(NamedTuple):
    """A queue list read as LLEN + LINDEX: its size (None: unknown) and its oldest entry."""

    size: Optional[int]
    oldest: Optional[bytes]
    # False when the oldest entry could not be read: the latency is then unknown.
    readable: bool


def list_head(backend: str, queue: str, values: list, problems: Problems) -> ListHead:
    """Checks the replies of LLEN + LINDEX, reporting a failed one as a problem of the queue."""
    size, oldest = values
    if is_error(size):
        problems.about_queue(backend, queue, describe_reply_error(size))
        return ListHead(None, None, False)
    if is_error(oldest):
        problems.about_queue(backend, queue, describe_reply_error(oldest))
        return ListHead(size, None, False)
    return ListHead(size, oldest, True)


def latency_or_report(backend: str, queue: str, problems: Problems,
                      compute: Callable[[], Optional[float]]) -> Optional[float]:
    """The latency `compute` finds, or None with the reason reported when the payload is bad."""
    try:
        return compute()
    except PayloadError as error:
        problems.about_queue(backend, queue, f"latency unknown: {error}")
        return None


def registry_members(backend: str, key: str, reply: object, problems: Problems) -> list:
    """The members of a registry set (SMEMBERS), or none with the problem reported."""
    if is_error(reply):
        problems.add(f"{backend} registry {show_name(key)}: {describe_reply_error(reply, 'a set')}")
        return []
    return reply
