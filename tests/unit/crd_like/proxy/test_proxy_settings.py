"""The proxy's settings are read under the same names by the server and the Settings."""

from __future__ import annotations

from codehub.crd_like.config import ApiConfig
from codehub.operator.settings import Settings

ENV = {
    "CODEHUB_DATABASE_URL": "postgresql://x/y",
    "CODEHUB_SESSION_SECRET": "s3cret",
    "CODEHUB_SESSION_TTL": "120",
    "CODEHUB_SIGNIN_LINK_TTL": "600",
    "CODEHUB_ACTIVITY_INTERVAL": "5",
    "CODEHUB_REPLICA_ID": "r1",
    "CODEHUB_REPLICA_TTL": "20",
}


def test_api_config_reads_proxy_settings() -> None:
    config = ApiConfig.from_env(ENV)
    assert config.session_secret == "s3cret"
    assert (config.session_ttl, config.signin_link_ttl) == (120.0, 60.0)
    assert (config.activity_interval, config.replica_id, config.replica_ttl) == (5.0, "r1", 20.0)
    assert "s3cret" not in repr(config)


def test_defaults() -> None:
    config = ApiConfig.from_env({"CODEHUB_DATABASE_URL": "postgresql://x/y"})
    assert (config.session_secret, config.signin_link_ttl, config.activity_interval) == (
        "",
        60.0,
        30.0,
    )


def test_settings_read_the_same_names() -> None:
    settings = Settings.from_env(ENV)
    assert settings.session_secret == "s3cret"
    assert (settings.activity_interval, settings.replica_id, settings.replica_ttl) == (
        5.0,
        "r1",
        20.0,
    )
    assert "s3cret" not in repr(settings)
