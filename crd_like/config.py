"""Plain configuration the API server takes (built by the CLI from the one Settings).

``from_env`` exists so ``python -m codehub.crd_like.server`` can start without the
operator's Settings (crd_like never imports operator); both read the same variable names.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


class ApiConfigError(ValueError):
    """An environment variable has a value the API server cannot use."""


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
    #: SSE heartbeat period (docs/events.md: 30 s); tests set it small.
    sse_heartbeat_interval: float = 30.0
    #: How long before the standby TTL acts the SSE stream sends ``idle_warning``.
    idle_warning_seconds: float = 60.0
    #: Server-side limit of a watch without ``timeoutSeconds`` (clients re-watch).
    default_watch_timeout: float = 1800.0
    #: Slow and idle clients (docs/security.md): a connection must complete its request
    #: headers within this many seconds, and an idle keep-alive connection is closed after
    #: it; a request body must arrive within ``body_timeout`` (408 otherwise).
    header_timeout: float = 30.0
    body_timeout: float = 60.0
    #: Upper bound for a ``limit`` on list requests.
    max_list_limit: int = 10_000
    #: core/v1 events older than this are deleted (a real cluster keeps them an hour).
    event_ttl_seconds: float = 3600.0
    #: Open watches plus SSE streams one identity may hold at once (429 beyond).
    max_streams_per_user: int = 50
    #: Serve /metrics without a token (otherwise an operator or admin token is needed).
    metrics_public: bool = False
    #: Workspace proxy (docs/proxy.md): HMAC key of session cookies and sign-in links,
    #: shared by every replica; empty = generated once under ``state_dir`` (dev only).
    session_secret: str = field(default="", repr=False)
    #: Shared with ``codehub edge`` (docs/proxy.md, "The native edge"); empty = no edge:
    #: its endpoints do not exist and no forwarded header is trusted.
    edge_secret: str = field(default="", repr=False)
    session_ttl: float = 8 * 3600.0
    signin_link_ttl: float = 60.0
    #: At most one ``status.last_access_at`` write per workspace per this many seconds.
    activity_interval: float = 30.0
    #: This server's name in the connection-count rows; empty = hostname-pid.
    replica_id: str = ""
    #: A replica's rows whose heartbeat is older than this are ignored and removed.
    replica_ttl: float = 60.0
    #: How long a request waits for a free database connection (503 beyond); during an
    #: outage the store's breaker answers at once instead (docs/operations.md).
    database_acquire_timeout: float = 10.0
    #: Put the operator's finalizer on every new workspace (a mutating admission step);
    #: kopf then handles the create on the ADDED event instead of PATCHing it first.
    finalizer_on_create: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ApiConfig:
        """Long because it is one flat list: a variable per field, each with its default."""
        env = os.environ if env is None else env
        text = functools.partial(_text, env)
        number = functools.partial(_number, env)
        database_url = text("CODEHUB_DATABASE_URL")
        if database_url is None:
            raise ApiConfigError("CODEHUB_DATABASE_URL is required")
        defaults = cls(database_url="")
        return cls(
            database_url=database_url,
            state_dir=Path(text("CODEHUB_STATE_DIR") or defaults.state_dir),
            token_file=text("CODEHUB_TOKEN_FILE"),
            tls_cert=text("CODEHUB_TLS_CERT"),
            tls_key=text("CODEHUB_TLS_KEY"),
            max_running_per_user=int(
                number("MAX_RUNNING_PER_USER", defaults.max_running_per_user, int)
            ),
            max_running_global=int(number("MAX_RUNNING_GLOBAL", defaults.max_running_global, int)),
            default_image=text("CODEHUB_DEFAULT_IMAGE") or defaults.default_image,
            default_standby_ttl=int(
                number("DEFAULT_STANDBY_TTL", defaults.default_standby_ttl, int)
            ),
            default_archive_ttl=int(
                number("DEFAULT_ARCHIVE_TTL", defaults.default_archive_ttl, int)
            ),
            max_body_bytes=int(number("CODEHUB_MAX_BODY_BYTES", defaults.max_body_bytes, int)),
            bookmark_interval=number(
                "CODEHUB_BOOKMARK_INTERVAL", defaults.bookmark_interval, float
            ),
            sse_heartbeat_interval=number(
                "CODEHUB_SSE_HEARTBEAT_INTERVAL", defaults.sse_heartbeat_interval, float
            ),
            idle_warning_seconds=number(
                "CODEHUB_IDLE_WARNING_SECONDS", defaults.idle_warning_seconds, float
            ),
            compaction_keep_revisions=int(
                number("CODEHUB_COMPACTION_KEEP_REVISIONS", defaults.compaction_keep_revisions, int)
            ),
            compaction_interval=number(
                "CODEHUB_COMPACTION_INTERVAL", defaults.compaction_interval, float
            ),
            event_ttl_seconds=number("CODEHUB_EVENT_TTL", defaults.event_ttl_seconds, float),
            max_streams_per_user=int(
                number("CODEHUB_MAX_STREAMS_PER_USER", defaults.max_streams_per_user, int)
            ),
            metrics_public=(text("CODEHUB_METRICS_PUBLIC") or "").lower() in ("1", "true"),
            session_secret=text("CODEHUB_SESSION_SECRET") or "",
            edge_secret=text("CODEHUB_EDGE_SECRET") or "",
            session_ttl=number("CODEHUB_SESSION_TTL", defaults.session_ttl, float),
            signin_link_ttl=min(
                60.0, number("CODEHUB_SIGNIN_LINK_TTL", defaults.signin_link_ttl, float)
            ),
            activity_interval=number(
                "CODEHUB_ACTIVITY_INTERVAL", defaults.activity_interval, float
            ),
            replica_id=text("CODEHUB_REPLICA_ID") or "",
            replica_ttl=number("CODEHUB_REPLICA_TTL", defaults.replica_ttl, float),
            database_acquire_timeout=number(
                "CODEHUB_DB_ACQUIRE_TIMEOUT", defaults.database_acquire_timeout, float
            ),
            finalizer_on_create=(text("CODEHUB_FINALIZER_ON_CREATE") or "").lower()
            in ("1", "true"),
        )


def _text(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    return value if value else None


def _number(
    env: Mapping[str, str], name: str, default: float, kind: type[int] | type[float]
) -> float:
    raw = _text(env, name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ApiConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < 0:
        raise ApiConfigError(f"{name} must not be negative")
    return value
