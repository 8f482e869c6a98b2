"""The Redis client the collector reads through.

redis-py opens, authenticates and encrypts the connection; the commands of a tick then go
through `round_trip`, the one function that touches redis-py's internals (its pool, a
connection's socket), because redis-py's pipeline costs ~20 microseconds of CPU per command and
our own RESP code about one.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, List, Sequence

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from queue_metrics.config import Settings
from queue_metrics.errors import ReplyError, describe_redis_error
from queue_metrics.redis_url import describe_redis_url
from queue_metrics.resp import read_replies


def connect(settings: Settings) -> "redis.Redis":
    """A client that fails fast: bounded timeouts, no retries (the next tick is the retry)."""
    options: dict = dict(
        socket_timeout=settings.timeout,
        socket_connect_timeout=settings.timeout,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        # Bytes in, bytes out: queue names and payloads need not be UTF-8.
        decode_responses=False,
        max_connections=2,
        # RESP2: no HELLO on connect, so Redis < 6 works and a minimal ACL user suffices.
        protocol=2,
        **_no_client_setinfo(),
    )
    if settings.redis_url.startswith("rediss://"):
        if settings.tls_verify:
            options.update(ssl_cert_reqs="required", ssl_check_hostname=True)
            if settings.tls_ca_file:
                options["ssl_ca_certs"] = settings.tls_ca_file
        else:
            # Heroku Key-Value Store presents self-signed certificates; Heroku's guidance for
            # Python clients is to skip verification (the connection is still encrypted).
            options.update(ssl_cert_reqs=None, ssl_check_hostname=False)
    return redis.Redis.from_url(settings.redis_url, **options)


def round_trip(client: "redis.Redis", packed: Sequence[bytes], count: int) -> List[Any]:
    """Send the packed commands in one write and read their `count` replies.

    A command that fails comes back as a ReplyError in its place; a connection that is not
    authenticated (NOAUTH), a lost connection or a timeout raise, and fail the whole tick.
    """
    pool = client.connection_pool
    connection = pool.get_connection("PING") if _needs_command_name(type(pool)) else pool.get_connection()
    try:
        connection.send_packed_command([b"".join(packed)], check_health=False)
        values = read_replies(connection._sock, count)  # type: ignore[arg-type]
    except BaseException:
        # Whatever was left unread would answer the next tick's commands: start afresh.
        connection.disconnect()
        raise
    finally:
        pool.release(connection)
    if values and isinstance(values[0], ReplyError) and values[0].code == "NOAUTH":
        raise values[0]
    return values


@functools.lru_cache(maxsize=None)
def _needs_command_name(pool_class: type) -> bool:
    # redis-py < 5.3 requires a command name; later versions deprecate passing one. Asked once
    # per pool class: inspecting a signature costs more than a small tick's whole round trip.
    parameter = inspect.signature(getattr(pool_class, "get_connection")).parameters.get("command_name")
    return parameter is not None and parameter.default is inspect.Parameter.empty


def _no_client_setinfo() -> dict:
    # redis-py >= 5 sends CLIENT SETINFO on connect; a read-only ACL user is denied it (and the
    # denial is logged), so turn it off. redis-py 8 spells that `driver_info=None`.
    parameters = inspect.signature(redis.Redis.__init__).parameters
    if "driver_info" in parameters:
        return {"driver_info": None}
    if "lib_name" in parameters:
        return {"lib_name": None, "lib_version": None}
    return {}


def describe_error(error: BaseException, settings: Settings) -> str:
    """One line for a failed tick: where, and what went wrong, without any secret."""
    from urllib.parse import urlsplit

    try:
        has_password = bool(urlsplit(settings.redis_url).password)
    except ValueError:
        has_password = False
    return describe_redis_error(error, describe_redis_url(settings.redis_url), settings.timeout,
                                settings.redis_url.startswith("rediss://"), has_password)
