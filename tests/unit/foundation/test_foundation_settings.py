"""Settings: docs/settings.md defaults, parsing from the environment, secrets kept out of repr."""

from __future__ import annotations

from pathlib import Path

import pytest

from codehub.operator.settings import Settings, SettingsError

SECRET = "s3cr3t-Value-that-must-not-leak"


def test_spec_defaults() -> None:
    s = Settings.from_env({})
    assert (s.reconciler_interval, s.reconciler_max_retries, s.reconciler_retry_backoff) == (
        10,
        3,
        30,
    )
    assert (s.health_monitor_interval, s.health_monitor_stale_threshold) == (30, 120)
    assert (s.ttl_manager_interval, s.default_standby_ttl, s.default_archive_ttl) == (
        60,
        300,
        86400,
    )
    assert (s.gc_interval, s.gc_orphan_delay) == (3600, 7200)
    assert (s.max_running_per_user, s.max_running_global) == (2, 100)
    assert s.coordinator_retry_interval == 5
    assert (s.timeout_starting, s.timeout_archiving, s.timeout_restoring) == (300, 1800, 1800)
    assert s.docker_host is None


def test_parses_service_and_numeric_values() -> None:
    s = Settings.from_env(
        {
            "CODEHUB_DATABASE_URL": "postgresql://u@127.0.0.1:5432/codehub",
            "CODEHUB_S3_ENDPOINT": "http://127.0.0.1:9000",
            "CODEHUB_S3_ACCESS_KEY": "ak",
            "CODEHUB_S3_SECRET_KEY": SECRET,
            "CODEHUB_S3_BUCKET": "b1",
            "DOCKER_HOST": "unix:///tmp/d.sock",
            "RECONCILER_INTERVAL": "0.05",
            "MAX_RUNNING_PER_USER": "7",
            "CODEHUB_STATE_DIR": "/tmp/state",
            "UNRELATED": "ignored",
        }
    )
    assert s.database_url.endswith("/codehub")
    assert s.reconciler_interval == pytest.approx(0.05)
    assert s.max_running_per_user == 7
    assert s.state_dir == Path("/tmp/state")
    cfg = s.s3_config()
    assert (cfg.endpoint, cfg.bucket, cfg.access_key, cfg.secret_key) == (
        "http://127.0.0.1:9000",
        "b1",
        "ak",
        SECRET,
    )
    docker = s.docker_config({"codehub.io/test-run": "r1"})
    assert docker.docker_host == "unix:///tmp/d.sock"
    assert dict(docker.scope_labels) == {"codehub.io/test-run": "r1"}


def test_empty_value_means_default() -> None:
    assert Settings.from_env({"RECONCILER_INTERVAL": ""}).reconciler_interval == 10


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RECONCILER_INTERVAL", "soon"),
        ("MAX_RUNNING_GLOBAL", "1.5"),
        ("RECONCILER_INTERVAL", "0"),
        ("MAX_RUNNING_PER_USER", "-1"),
    ],
)
def test_bad_values_are_errors_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_secrets_not_in_repr() -> None:
    s = Settings.from_env(
        {
            "CODEHUB_DATABASE_URL": f"postgresql://u:{SECRET}@127.0.0.1/db",
            "CODEHUB_S3_SECRET_KEY": SECRET,
            "CODEHUB_S3_ACCESS_KEY": "AKIA-visible-is-fine",
            "CODEHUB_TOKEN": SECRET,
        }
    )
    for text in (repr(s), str(s), repr(s.s3_config()), repr(s.docker_config())):
        assert SECRET not in text
    assert "reconciler_interval" in repr(s)
