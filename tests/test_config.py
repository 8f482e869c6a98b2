"""Settings from plain dicts: defaults, precedence and one-line errors."""

from __future__ import annotations

import pytest

from helpers.process import lines_of, queue_metrics
from helpers.servers import self_signed_certificate
from queue_metrics.config import ConfigError, Settings, check_tls_ca_file


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


def test_every_redis_the_app_has_is_read_in_the_documented_order():
    env = {"REDISGREEN_URL": "redis://g:1/0", "REDISCLOUD_URL": "redis://c:1/0", "REDIS_URL": "redis://r:1/0"}
    settings = Settings.from_env(env)
    assert [(location.label, location.source) for location in settings.locations()] == [
        ("redis", "REDIS_URL"),
        ("rediscloud", "REDISCLOUD_URL"),
        ("redisgreen", "REDISGREEN_URL"),
    ]
    assert settings.redis_url_var == "REDIS_URL"
    env["REDIS_TLS_URL"] = "rediss://t:1/0"
    assert [location.label for location in Settings.from_env(env).locations()][:2] == ["redis", "redis_tls"]
    env["QUEUE_METRICS_REDIS_URL"] = "redis://q:1/0"
    assert [(location.label, location.url) for location in Settings.from_env(env).locations()] == [
        ("redis", "redis://q:1/0")
    ]
    only = Settings.from_env({"REDIS_URL": "", "REDISTOGO_URL": "redis://t:1/0"})
    assert only.redis_url_var == "REDISTOGO_URL" and len(only.locations()) == 1


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
        ({"QUEUE_METRICS_BACKENDS": "sidekiq,kafka"}, "unknown backend 'kafka'"),
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


def ca_file_cases(directory) -> dict:
    """{case: (path, words its usage error must hold)} for CA files that cannot be used."""
    not_pem = directory / "ca.der"
    not_pem.write_bytes(b"\x30\x82\x01\x0a not a PEM file")
    broken = directory / "broken.pem"
    broken.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n")
    return {
        "missing": (str(directory / "no-such-ca.pem"), "no such file"),
        "a directory": (str(directory), "is a directory"),
        "not PEM": (str(not_pem), "is not a PEM certificate"),
        "broken PEM": (str(broken), "holds no certificate OpenSSL can load"),
    }


@pytest.mark.parametrize("case", ["missing", "a directory", "not PEM", "broken PEM"])
def test_a_ca_file_that_cannot_be_used_is_a_usage_error_naming_the_setting(tmp_path, case):
    path, words = ca_file_cases(tmp_path)[case]
    settings = Settings.from_env({"REDIS_URL": "rediss://:pw@127.0.0.1:1/0", "QUEUE_METRICS_TLS_CA_FILE": path})
    with pytest.raises(ConfigError) as raised:
        check_tls_ca_file(settings)
    message = str(raised.value)
    assert message.startswith("QUEUE_METRICS_TLS_CA_FILE") and words in message and path in message
    assert "\n" not in message


def test_a_good_ca_file_passes_and_an_unused_one_is_not_loaded(tmp_path):
    cert, _ = self_signed_certificate(tmp_path)
    check_tls_ca_file(Settings.from_env({"REDIS_URL": "rediss://127.0.0.1:1/0", "QUEUE_METRICS_TLS_CA_FILE": cert}))
    check_tls_ca_file(Settings.from_env({}))
    # Verification off, or no TLS: OpenSSL never reads the file (only whether it reads as PEM).
    broken, _ = ca_file_cases(tmp_path)["broken PEM"]
    for env in (
        {"REDIS_URL": "redis://127.0.0.1:1/0"},
        {"REDIS_URL": "rediss://127.0.0.1:1/0", "QUEUE_METRICS_TLS_VERIFY": "false"},
    ):
        check_tls_ca_file(Settings.from_env({**env, "QUEUE_METRICS_TLS_CA_FILE": broken}))


@pytest.mark.parametrize("command", ["once", "run", "doctor"])
def test_a_missing_ca_file_stops_every_command_with_exit_2(tmp_path, command, make_server):
    server = make_server()
    missing = str(tmp_path / "ca.pem")
    result = queue_metrics(
        command,
        env={"REDIS_URL": f"rediss://:Sup3rSecretPass@127.0.0.1:{server.port}/0", "QUEUE_METRICS_TLS_CA_FILE": missing},
    )
    assert result.returncode == 2
    (line,) = lines_of(result.stderr)
    assert line == f"queue-metrics: usage error: QUEUE_METRICS_TLS_CA_FILE: no such file {missing!r}"
    assert result.stdout == ""


def test_every_system_name_is_a_reserved_label():
    from queue_metrics.datastores import RESERVED_LABELS
    from queue_metrics.systems import SYSTEMS

    assert {spec.name for spec in SYSTEMS} | {"collector"} == set(RESERVED_LABELS)
