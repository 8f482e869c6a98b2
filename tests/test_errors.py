"""Error classification: by exception type and Redis error code, never by the message text.

The errors are real ones, raised by redis-py and our own reader against real failures; each is
described for hosts whose names contain the words a text search would trip over."""

from __future__ import annotations

import socket

import pytest

from helpers.servers import free_port
from queue_metrics.config import Settings
from queue_metrics.datastores.redis.connection import connect, round_trip
from queue_metrics.datastores.redis.resp import pack_commands
from queue_metrics.errors import (
    RedisUnavailable,
    ReplyError,
    ServerClosed,
    describe_redis_error,
    describe_reply_error,
    is_unknown_command,
)

TRAP_WORDS = ("ssl", "tls", "certificate", "auth", "timeout", "refused", "noauth", "wrongpass")
PASSWORD = "s3cret-pass"


def failure(url: str, timeout: float = 1.0) -> BaseException:
    settings = Settings.from_env(
        {"QUEUE_METRICS_REDIS_URL": url, "QUEUE_METRICS_TIMEOUT": str(timeout), "QUEUE_METRICS_INTERVAL": "30"}
    )
    with pytest.raises((RedisUnavailable, ReplyError)) as raised:
        round_trip(connect(settings), [pack_commands([("SMEMBERS", "queues")])], 1)
    return raised.value


@pytest.fixture(scope="module")
def real_errors(redis_server):
    from helpers.servers import RedisServer

    locked = RedisServer(extra=["--requirepass", PASSWORD]).start()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(0)
    try:
        errors = {
            "refused": failure(f"redis://127.0.0.1:{free_port()}/0"),
            "dns": failure("redis://redis-ssl-tls-certificate-auth-timeout.invalid:6379/0"),
            "timeout": failure(f"redis://127.0.0.1:{silent.getsockname()[1]}/0", timeout=0.3),
            "wrong password": failure(f"redis://:nope@127.0.0.1:{locked.port}/0"),
            "no password": failure(f"redis://127.0.0.1:{locked.port}/0"),
        }
    finally:
        silent.close()
        locked.close()
    return errors


@pytest.mark.parametrize("word", TRAP_WORDS)
@pytest.mark.parametrize(
    "kind, has_password, expected",
    [
        ("refused", False, "cannot connect to Redis at {where}: connection refused (is it running?)"),
        ("dns", False, "cannot resolve the host of Redis at {where} (DNS lookup failed)"),
        ("timeout", False, "Redis at {where} did not answer within 1 s (timeout)"),
        ("wrong password", True, "Redis at {where} rejected the password (check the URL's credentials)"),
        ("no password", False, "Redis at {where} needs a password and the URL has none"),
    ],
)
def test_each_failure_is_told_by_its_type_whatever_the_host_is_called(real_errors, word, kind, has_password, expected):
    where = f"redis://redis-{word}.example.com:6379/0"
    assert describe_redis_error(real_errors[kind], where, 1.0, False, has_password) == expected.format(where=where)


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("NOAUTH Authentication required.", "needs a password and the URL has none"),
        ("NOPERM this user has no permissions to run the 'smembers' command", "lacks permission"),
        ("WRONGTYPE Operation against a key holding the wrong kind of value", "Redis at h: WRONGTYPE"),
    ],
)
def test_error_replies_are_told_by_their_code(reply, expected):
    assert expected in describe_redis_error(ReplyError(reply), "h", 1.0, False, True)


def test_the_text_of_an_error_is_never_searched():
    error = RedisUnavailable("Error 104 connecting to ssl-certificate-timeout-refused.example.com:6379. Boom.")
    assert describe_redis_error(error, "w", 1.0, False, False) == (
        "lost the connection to Redis at w: Error 104 connecting to ssl-certificate-timeout-refused.example.com:6379. "
        "Boom."
    )


@pytest.mark.parametrize(
    "text",
    [
        # Redis 7 quotes each argument (cut at 128 characters) in single quotes, Redis 6 in backticks.
        "ERR unknown command 'LPOS', with args beginning with: 'celery' '{\"body\": \"job-secret\"}' ",
        'ERR unknown command `LPOS`, with args beginning with: `celery`, `{"body": "job-secret"}`, ',
    ],
)
def test_an_unknown_command_reply_is_told_without_the_arguments_it_quotes(text):
    """Any read's unknown-command reply quotes its arguments: job bytes, a password. None is told."""
    reply = ReplyError(text)
    for told in (
        describe_reply_error(reply),
        describe_redis_error(reply, "redis://h:6379/0", 1.0, False, False),
        describe_redis_error(ServerClosed(reply.text), "redis://h:6379/0", 1.0, False, False),
        str(reply),
    ):
        assert "job-secret" not in told and "with args" not in told, told
        assert "unknown command" in told and "LPOS" in told
    assert is_unknown_command(reply)
