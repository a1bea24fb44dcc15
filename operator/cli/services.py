"""The service commands: ``server``, ``coordinator``, ``db migrate`` and ``dev up|down``.

Configured by the environment through ``Settings`` (docs/settings.md). Each command imports
its component inside the function, so client commands never load kopf, docker or psycopg
(docs/adr/0004-composition-root.md).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace

from codehub.crd_like.config import ApiConfig, ApiConfigError
from codehub.operator.cli.arguments import opt
from codehub.operator.cli.connection import run
from codehub.operator.cli.console import CliError, out
from codehub.operator.settings import Settings, SettingsError, parse_label_list


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    try:
        return Settings.from_env(env)
    except SettingsError as exc:
        raise CliError(f"configuration: {exc}") from None


def api_config_from_settings(settings: Settings, env: Mapping[str, str] | None = None) -> ApiConfig:
    """The API server's configuration: shared values from Settings, server-only knobs
    (bookmark and heartbeat intervals, compaction, body limit) from the environment."""
    source = dict(os.environ if env is None else env)
    source["CODEHUB_DATABASE_URL"] = settings.database_url or "unset"
    try:
        base = ApiConfig.from_env(source)
    except ApiConfigError as exc:
        raise CliError(f"configuration: {exc}") from None
    return replace(
        base,
        database_url=settings.database_url,
        state_dir=settings.state_dir,
        token_file=settings.token_file,
        tls_cert=settings.tls_cert,
        tls_key=settings.tls_key,
        max_running_per_user=settings.max_running_per_user,
        max_running_global=settings.max_running_global,
        default_image=settings.default_image,
        default_standby_ttl=settings.default_standby_ttl,
        default_archive_ttl=settings.default_archive_ttl,
    )


def parse_labels(items: Sequence[str]) -> dict[str, str]:
    """``k=v`` items (each may hold several, comma-separated) -> a label dict."""
    labels: dict[str, str] = {}
    for item in items:
        try:
            labels.update(parse_label_list("--scope-label", item))
        except SettingsError as exc:
            raise CliError(str(exc)) from None
    return labels


def with_connection_flags(settings: Settings, args: argparse.Namespace) -> Settings:
    """--server/--token/--ca-file given on the command line win over the environment."""
    changes = {
        key: opt(args, key) for key in ("server", "token", "ca_file") if opt(args, key) is not None
    }
    return replace(settings, **changes) if changes else settings


def _configure_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )


def cmd_server(args: argparse.Namespace) -> int:
    from codehub.crd_like.server.app import run_server

    settings = load_settings()
    if not settings.database_url:
        raise CliError("CODEHUB_DATABASE_URL is not set (see `scripts/dev-services up`)")
    config = api_config_from_settings(settings)
    host, port = args.listen
    _configure_logging()
    try:
        run_server(config, host, port, args.insecure_http)
    except OSError as exc:
        if exc.errno is None:
            raise
        raise CliError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    return 0


def cmd_db_migrate(args: argparse.Namespace) -> int:
    from codehub.crd_like.store.postgres import migrate

    settings = load_settings()
    url = args.database_url or settings.database_url
    if not url:
        raise CliError("no database: set CODEHUB_DATABASE_URL or pass --database-url")
    run(lambda: migrate(url))
    out("database migrated\n")
    return 0


def cmd_coordinator(args: argparse.Namespace) -> int:
    from codehub.operator.coordinator import run_coordinator

    settings = with_connection_flags(load_settings(), args)
    labels = {**settings.scope_labels, **parse_labels(args.scope_label)}
    host, port = args.listen
    _configure_logging()
    try:
        run_coordinator(settings, host, port, scope_labels=labels or None)
    except SystemExit as exc:
        if isinstance(exc.code, str):
            raise CliError(exc.code) from None
        return int(exc.code or 0)
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from codehub.operator.cli.dev import down, up

    settings = load_settings()
    return up(settings, args.detach) if args.dev_command == "up" else down(settings)
