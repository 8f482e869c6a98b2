"""The Redis client the collector reads through, and what its failures mean in one line."""

from __future__ import annotations

import functools
import inspect
import socket
import ssl

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from queue_metrics.config import Settings
from queue_metrics.redis_url import describe_redis_url


def connect(settings: Settings) -> "redis.Redis":
    """A client that fails fast: bounded timeouts, no retries (the next tick is the retry)."""
    options = dict(
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


def take_connection(client: "redis.Redis"):
    """A connected connection from the client's pool; give it back with `pool.release`."""
    pool = client.connection_pool
    if _needs_command_name(type(pool)):
        return pool.get_connection("PING")
    return pool.get_connection()


@functools.lru_cache(maxsize=None)
def _needs_command_name(pool_class: type) -> bool:
    # redis-py < 5.3 requires a command name; later versions deprecate passing one. Asked once
    # per pool class: inspecting a signature costs more than a small tick's whole round trip.
    parameter = inspect.signature(pool_class.get_connection).parameters.get("command_name")
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
    where = describe_redis_url(settings.redis_url)
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    lowered = text.lower()
    cause = error.__cause__ or error.__context__

    if "noauth" in lowered or "authentication required" in lowered:
        return f"Redis at {where} needs a password and the URL has none"
    if isinstance(error, redis.AuthenticationError) or "wrongpass" in lowered or "invalid password" in lowered \
            or "invalid username-password" in lowered:
        return f"Redis at {where} rejected the password (check the URL's credentials)"
    if "invalid db index" in lowered or "db index is out of range" in lowered:
        return f"Redis at {where}: that database number does not exist on this server"
    if "noperm" in lowered or "no permissions" in lowered:
        return f"Redis at {where} refused a read: the user lacks permission ({text[:120]})"
    if isinstance(error, redis.TimeoutError) or isinstance(cause, socket.timeout):
        hint = " (is that port really TLS?)" if settings.redis_url.startswith("rediss://") else ""
        return f"Redis at {where} did not answer within {settings.timeout:g} s (timeout){hint}"
    if isinstance(cause, ssl.SSLError) or "ssl" in lowered or "certificate" in lowered:
        hint = ""
        if "certificate verify failed" in lowered:
            hint = " (QUEUE_METRICS_TLS_VERIFY is on: set QUEUE_METRICS_TLS_CA_FILE to the server's CA, or turn it off)"
        return f"TLS with Redis at {where} failed: {_after_colon(text)}{hint}"
    if isinstance(cause, socket.gaierror) or "name or service not known" in lowered \
            or "temporary failure in name resolution" in lowered or "nodename nor servname" in lowered:
        return f"cannot resolve the host of Redis at {where} (DNS lookup failed)"
    if "connection refused" in lowered:
        return f"cannot connect to Redis at {where}: connection refused (is it running?)"
    if isinstance(error, redis.ConnectionError):
        return f"lost the connection to Redis at {where}: {_after_colon(text)}"
    return f"Redis at {where}: {text[:200]}"


def _after_colon(text: str) -> str:
    # redis-py says "Error 111 connecting to host:port. Reason." : keep the reason.
    reason = text.rsplit(". ", 1)[-1] if "connecting to" in text else text
    return reason.strip().rstrip(".")[:200] or "unknown error"
