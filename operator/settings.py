"""The one typed settings object, read from the environment once and passed down.

Defaults follow docs/settings.md. Secrets are kept out of ``repr`` so a logged Settings never
leaks them; layer-specific configuration objects are derived here, so ``crd_like`` and
``adapters`` never read the environment themselves.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from codehub.adapters.config import DockerConfig, S3Config


class SettingsError(ValueError):
    """An environment variable has a value that cannot be used."""


@dataclass(frozen=True)
class Settings:
    # docs/settings.md intervals and limits (seconds where a duration).
    reconciler_interval: float = 10.0
    reconciler_max_retries: int = 3
    reconciler_retry_backoff: float = 30.0
    health_monitor_interval: float = 30.0
    health_monitor_stale_threshold: float = 120.0
    ttl_manager_interval: float = 60.0
    default_standby_ttl: int = 300
    default_archive_ttl: int = 86400
    #: How long before the standby TTL acts the SSE stream sends ``idle_warning``.
    idle_warning_seconds: float = 60.0
    gc_interval: float = 3600.0
    gc_orphan_delay: float = 7200.0
    orphan_sweep_interval: float = 300.0
    orphan_delay: float = 600.0
    #: The coordinator's workspace cache re-lists this often even while its watch is
    #: healthy (docs/coordinator.md).
    informer_resync_interval: float = 600.0
    max_running_per_user: int = 2
    max_running_global: int = 100
    coordinator_retry_interval: float = 5.0
    #: Reconciles in flight at once (their API-heavy part; archive and restore transfers
    #: run outside the bound); the rest wait in the coordinator (docs/operator.md).
    reconcile_concurrency: int = 32
    # Per-operation timeouts (docs/errors.md).
    timeout_starting: float = 300.0
    timeout_stopping: float = 300.0
    timeout_provisioning: float = 300.0
    timeout_deleting: float = 300.0
    timeout_archiving: float = 1800.0
    timeout_restoring: float = 1800.0
    job_timeout: float = 1800.0
    # Services.
    database_url: str = field(default="", repr=False)
    s3_endpoint: str = "http://127.0.0.1:8333"
    s3_access_key: str = field(default="", repr=False)
    s3_secret_key: str = field(default="", repr=False)
    s3_bucket: str = "codehub"
    docker_host: str | None = None
    # API and clients.
    server: str = "https://127.0.0.1:8443"
    token: str = field(default="", repr=False)
    ca_file: str | None = None
    token_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    state_dir: Path = Path(".codehub-dev")
    default_image: str = "codehub/workspace-test:local"
    job_image: str = "codehub/storage-job:local"
    node_id: str = ""  # coordinator identity; empty means hostname-pid
    #: Test hook (never set in production): "action=seconds,..." pauses the named actuator
    #: (provision, restore, archive, start, stop, delete_volume) so tests can crash the
    #: coordinator mid-operation. Parsed by the operator.
    test_pause_actuators: str = ""
    #: Labels added to everything the adapters create and used to filter every listing
    #: (CODEHUB_SCOPE_LABELS="k=v,k2=v2"), so installations or test runs sharing one
    #: engine never see each other's containers and volumes.
    scope_labels: Mapping[str, str] = field(default_factory=dict)
    # Workspace proxy (docs/proxy.md); the server reads the same names (ApiConfig.from_env).
    session_secret: str = field(default="", repr=False)
    session_ttl: float = 8 * 3600.0
    signin_link_ttl: float = 60.0
    activity_interval: float = 30.0
    replica_id: str = ""
    replica_ttl: float = 60.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default ``os.environ``); unknown values are errors."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = _ENV_NAMES.get(f.name, f.name.upper())
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            values[f.name] = _convert(name, raw, f.type)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        for name in (
            "reconciler_interval",
            "health_monitor_interval",
            "ttl_manager_interval",
            "gc_interval",
            "orphan_sweep_interval",
            "informer_resync_interval",
            "coordinator_retry_interval",
        ):
            if getattr(self, name) <= 0:
                raise SettingsError(f"{name.upper()} must be greater than 0")
        for name in ("max_running_per_user", "max_running_global", "reconciler_max_retries"):
            if getattr(self, name) < 0:
                raise SettingsError(f"{name.upper()} must not be negative")
        if self.reconcile_concurrency < 1:
            raise SettingsError("CODEHUB_RECONCILE_CONCURRENCY must be at least 1")

    def s3_config(self) -> S3Config:
        return S3Config(
            endpoint=self.s3_endpoint,
            bucket=self.s3_bucket,
            access_key=self.s3_access_key,
            secret_key=self.s3_secret_key,
        )

    def docker_config(self, scope_labels: Mapping[str, str] | None = None) -> DockerConfig:
        return DockerConfig(
            docker_host=self.docker_host,
            job_image=self.job_image,
            job_timeout=self.job_timeout,
            scope_labels=dict(self.scope_labels if scope_labels is None else scope_labels),
        )


_ENV_NAMES = {
    "database_url": "CODEHUB_DATABASE_URL",
    "s3_endpoint": "CODEHUB_S3_ENDPOINT",
    "s3_access_key": "CODEHUB_S3_ACCESS_KEY",
    "s3_secret_key": "CODEHUB_S3_SECRET_KEY",
    "s3_bucket": "CODEHUB_S3_BUCKET",
    "docker_host": "DOCKER_HOST",
    "server": "CODEHUB_SERVER",
    "token": "CODEHUB_TOKEN",
    "ca_file": "CODEHUB_CA_FILE",
    "token_file": "CODEHUB_TOKEN_FILE",
    "tls_cert": "CODEHUB_TLS_CERT",
    "tls_key": "CODEHUB_TLS_KEY",
    "state_dir": "CODEHUB_STATE_DIR",
    "default_image": "CODEHUB_DEFAULT_IMAGE",
    "job_image": "CODEHUB_JOB_IMAGE",
    "timeout_starting": "TIMEOUT_STARTING",
    "timeout_stopping": "TIMEOUT_STOPPING",
    "timeout_provisioning": "TIMEOUT_PROVISIONING",
    "timeout_deleting": "TIMEOUT_DELETING",
    "timeout_archiving": "TIMEOUT_ARCHIVING",
    "timeout_restoring": "TIMEOUT_RESTORING",
    "job_timeout": "CODEHUB_JOB_TIMEOUT",
    "node_id": "CODEHUB_NODE_ID",
    "test_pause_actuators": "CODEHUB_TEST_PAUSE_ACTUATORS",
    "scope_labels": "CODEHUB_SCOPE_LABELS",
    "session_secret": "CODEHUB_SESSION_SECRET",
    "session_ttl": "CODEHUB_SESSION_TTL",
    "signin_link_ttl": "CODEHUB_SIGNIN_LINK_TTL",
    "activity_interval": "CODEHUB_ACTIVITY_INTERVAL",
    "replica_id": "CODEHUB_REPLICA_ID",
    "replica_ttl": "CODEHUB_REPLICA_TTL",
    "idle_warning_seconds": "CODEHUB_IDLE_WARNING_SECONDS",
    "reconcile_concurrency": "CODEHUB_RECONCILE_CONCURRENCY",
    "informer_resync_interval": "CODEHUB_INFORMER_RESYNC_INTERVAL",
}


def _convert(name: str, raw: str, type_: Any) -> Any:
    text = str(type_)
    if text == "Mapping[str, str]":
        return parse_label_list(name, raw)
    try:
        if text == "float":
            return float(raw)
        if text == "int":
            return int(raw)
        if text == "Path":
            return Path(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    return raw


def parse_label_list(name: str, raw: str) -> dict[str, str]:
    """``"k=v,k2=v2"`` -> a dict; an item without ``=`` or with an empty key is an error."""
    labels: dict[str, str] = {}
    for part in raw.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"{name} expects KEY=VALUE items, got {part.strip()!r}")
        labels[key.strip()] = value.strip()
    return labels
