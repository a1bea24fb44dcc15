"""Plain configuration the API server takes (built by the CLI from the one Settings)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ApiConfig:
    database_url: str = field(repr=False)
    state_dir: Path = Path(".codehub-dev")
    token_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    max_running_per_user: int = 2
    max_running_global: int = 100
    default_image: str = "codehub/workspace-test:local"
    default_standby_ttl: int = 300
    default_archive_ttl: int = 86400
    max_body_bytes: int = 1024 * 1024
    bookmark_interval: float = 15.0
    watch_poll_interval: float = 1.0
    compaction_keep_revisions: int = 100_000
    compaction_interval: float = 60.0
