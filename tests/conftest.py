"""Shared fixtures: a private redis-server per test session, emptied before every test."""

from __future__ import annotations

import os
import sys

import pytest
import redis

sys.path.insert(0, os.path.dirname(__file__))

from helpers.servers import RedisServer  # noqa: E402


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture
def redis_url(redis_server) -> str:
    redis.Redis.from_url(redis_server.url).flushall()
    return redis_server.url


@pytest.fixture
def client(redis_url):
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


@pytest.fixture
def make_server():
    """Start extra servers for fault injection; all are stopped after the test."""
    servers = []

    def start(**options) -> RedisServer:
        server = RedisServer(**options)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.close()


# CI runs the property-based tests on a fixed sequence of examples, so a green run stays green;
# locally every run explores new ones.
from hypothesis import settings as hypothesis_settings  # noqa: E402

hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")
