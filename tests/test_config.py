"""Settings from plain dicts: defaults, precedence and one-line errors."""

from __future__ import annotations

import pytest

from queue_metrics.config import ConfigError, Settings


def test_defaults():
    settings = Settings.from_env({})
    assert settings.redis_url == "redis://localhost:6379/0"
    assert settings.redis_url_var is None
    assert settings.interval == 30.0 and settings.timeout == 5.0
    assert settings.backends is None and settings.prefix == "queue" and settings.source is None
    assert settings.output_format == "librato" and settings.tls_verify is False
    celery = settings.of("celery")
    assert celery.sep == "\x06\x16" and celery.priority_steps is None and celery.keyprefix is None
    assert settings.of("sidekiq").namespace == "" and settings.of("rq").queues == ()
    assert settings.discovery_interval == 15.0
    assert settings.extras is True


@pytest.mark.parametrize(
    "word, extras",
    [
        ("0", False),
        ("off", False),
        (" No ", False),
        ("false", False),
        ("1", True),
        ("ON", True),
        ("yes", True),
        ("", True),
    ],
)
def test_extras_switch(word, extras):
    assert Settings.from_env({"QUEUE_METRICS_EXTRAS": word}).extras is extras


def test_redis_url_precedence_follows_heroku_add_ons():
    env = {"REDISGREEN_URL": "redis://g:1/0", "REDISCLOUD_URL": "redis://c:1/0", "REDIS_URL": "redis://r:1/0"}
    assert Settings.from_env(env).redis_url_var == "REDIS_URL"
    env["REDIS_TLS_URL"] = "rediss://t:1/0"
    assert Settings.from_env(env).redis_url_var == "REDIS_TLS_URL"
    env["QUEUE_METRICS_REDIS_URL"] = "redis://q:1/0"
    assert Settings.from_env(env).redis_url == "redis://q:1/0"
    assert Settings.from_env({"REDIS_URL": "", "REDISTOGO_URL": "redis://t:1/0"}).redis_url_var == "REDISTOGO_URL"


def test_interval_fractions_and_timeout_below_interval():
    settings = Settings.from_env({"QUEUE_METRICS_INTERVAL": "0.5"})
    assert settings.interval == 0.5 and settings.timeout == 0.25
    assert Settings.from_env({"QUEUE_METRICS_INTERVAL": "10", "QUEUE_METRICS_TIMEOUT": "2"}).timeout == 2.0


@pytest.mark.parametrize(
    "env, words",
    [
        ({"QUEUE_METRICS_INTERVAL": "0"}, "QUEUE_METRICS_INTERVAL must be a positive"),
        ({"QUEUE_METRICS_INTERVAL": "-3"}, "positive"),
        ({"QUEUE_METRICS_INTERVAL": "soon"}, "must be a number"),
        ({"QUEUE_METRICS_INTERVAL": "inf"}, "positive"),
        ({"QUEUE_METRICS_INTERVAL": "5", "QUEUE_METRICS_TIMEOUT": "5"}, "shorter than"),
        ({"QUEUE_METRICS_BACKENDS": "sidekiq,resque"}, "unknown backend 'resque'"),
        ({"QUEUE_METRICS_BACKENDS": ","}, "names no backend"),
        ({"QUEUE_METRICS_PREFIX": "my queue"}, "QUEUE_METRICS_PREFIX may hold only"),
        ({"QUEUE_METRICS_SOURCE": "web 1"}, "QUEUE_METRICS_SOURCE"),
        ({"QUEUE_METRICS_FORMAT": "xml"}, "librato, json, table"),
        ({"QUEUE_METRICS_TLS_VERIFY": "maybe"}, "true or false"),
        ({"QUEUE_METRICS_EXTRAS": "sometimes"}, "QUEUE_METRICS_EXTRAS must be true or false, got 'sometimes'"),
        ({"QUEUE_METRICS_CELERY_PRIORITY_STEPS": "a,b"}, "whole numbers"),
        ({"QUEUE_METRICS_CELERY_PRIORITY_STEPS": "-1,3"}, "QUEUE_METRICS_CELERY_PRIORITY_STEPS needs whole numbers"),
        ({"QUEUE_METRICS_CELERY_SEP": "\\x"}, "QUEUE_METRICS_CELERY_SEP is not a valid escaped string"),
        ({"REDIS_URL": "http://h:1"}, "REDIS_URL is not a Redis URL"),
        ({"REDIS_URL": "redis://:secret@host:notaport/0"}, "REDIS_URL is not a valid Redis URL"),
        ({"REDIS_URL": "redis://:secret@host:6379/zero"}, "database that is not a number"),
    ],
)
def test_bad_values_are_one_line_errors_that_name_the_variable(env, words):
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env)
    message = str(raised.value)
    assert words in message
    assert "\n" not in message
    assert "secret" not in message


def test_backends_lists_and_queue_lists():
    settings = Settings.from_env(
        {
            "QUEUE_METRICS_BACKENDS": " RQ, celery ,rq",
            "QUEUE_METRICS_RQ_QUEUES": "a, b,,a",
            "QUEUE_METRICS_CELERY_SEP": r"\x06\x16",
            "QUEUE_METRICS_CELERY_PRIORITY_STEPS": "9,0,3",
        }
    )
    assert settings.backends == ("rq", "celery")
    assert settings.of("rq").queues == ("a", "b")
    assert settings.of("celery").sep == "\x06\x16"
    assert settings.of("celery").priority_steps == (0, 3, 9)
    assert Settings.from_env({"QUEUE_METRICS_BACKENDS": "auto"}).backends is None


def test_ca_file_turns_verification_on_unless_told_otherwise():
    assert Settings.from_env({"QUEUE_METRICS_TLS_CA_FILE": "/ca.pem"}).tls_verify is True
    assert Settings.from_env({"QUEUE_METRICS_TLS_VERIFY": "yes"}).tls_verify is True
    assert (
        Settings.from_env({"QUEUE_METRICS_TLS_CA_FILE": "/ca.pem", "QUEUE_METRICS_TLS_VERIFY": "0"}).tls_verify is False
    )


def test_settings_are_frozen():
    settings = Settings.from_env({})
    with pytest.raises(AttributeError):
        settings.interval = 1  # type: ignore[misc]
