"""The argument parser: every subcommand, its flags, and the function that runs it."""

from __future__ import annotations

import argparse
from typing import Any, Protocol

from codehub.operator.cli import config, edge, lifecycle, resources, services
from codehub.operator.cli import gc as archive_gc
from codehub.operator.cli import open as open_cmd
from codehub.operator.cli.arguments import duration_arg, listen_arg
from codehub.operator.cli.connection import DEFAULT_CONFIG

DEFAULT_LISTEN = "127.0.0.1:8443"
DEFAULT_COORDINATOR_LISTEN = "127.0.0.1:8444"


class _Add(Protocol):
    def __call__(self, name: str, help_text: str, **kw: Any) -> argparse.ArgumentParser: ...


def _common(parser: argparse.ArgumentParser) -> None:
    """Connection flags, accepted before or after the subcommand (kubectl style)."""
    s = argparse.SUPPRESS
    g = parser.add_argument_group("connection")
    g.add_argument("--server", "-s", default=s, help="API URL (env CODEHUB_SERVER)")
    g.add_argument("--token", default=s, help="bearer token (env CODEHUB_TOKEN)")
    g.add_argument("--ca-file", default=s, help="CA certificate to trust (env CODEHUB_CA_FILE)")
    g.add_argument(
        "--insecure-skip-tls-verify",
        action="store_true",
        default=s,
        help="do not verify the server certificate (testing only)",
    )
    g.add_argument(
        "--config",
        default=s,
        help=f"kubeconfig-style config file (env CODEHUB_CONFIG; default {DEFAULT_CONFIG})",
    )
    g.add_argument("--debug", action="store_true", default=s, help="show tracebacks")


def _ns(parser: argparse.ArgumentParser, all_namespaces: bool = False) -> None:
    parser.add_argument(
        "-n",
        "--namespace",
        default=argparse.SUPPRESS,
        help="namespace (default: CODEHUB_NAMESPACE, the config's, or your own)",
    )
    if all_namespaces:
        parser.add_argument(
            "-A", "--all-namespaces", action="store_true", help="list across namespaces"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="codehub",
        description="codehub: cloud development workspaces (kubectl-style client and services)",
    )
    _common(parser)
    _ns(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def add(name: str, help_text: str, **kw: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, **kw)
        _common(p)
        return p

    _add_resource_commands(add)
    _add_lifecycle_commands(add)
    _add_config_commands(add)
    _add_service_commands(add)
    _add_dev_commands(add)
    return parser


def _add_resource_commands(add: _Add) -> None:
    p = add("apply", "create or update workspaces from YAML/JSON manifests")
    p.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        help="file, directory (recursive *.yaml, *.yml, *.json) or - for stdin; repeatable",
    )
    _ns(p)
    p.set_defaults(func=resources.cmd_apply)

    p = add("get", "list or show workspaces")
    p.add_argument("resource", help="ws | workspace | workspaces (or ws/NAME)")
    p.add_argument("name", nargs="?")
    _ns(p, all_namespaces=True)
    p.add_argument("-o", "--output", choices=("wide", "yaml", "json", "name"))
    p.add_argument("-l", "--selector", help="label selector, e.g. team=a")
    p.add_argument("-w", "--watch", action="store_true", help="after listing, watch for changes")
    p.set_defaults(func=resources.cmd_get)

    p = add("describe", "show a workspace with its status, error and recent events")
    p.add_argument("resource")
    p.add_argument("name", nargs="?")
    _ns(p)
    p.set_defaults(func=resources.cmd_describe)

    p = add("delete", "delete workspaces")
    p.add_argument("resource")
    p.add_argument("names", nargs="*")
    _ns(p)
    p.add_argument("--wait", action="store_true", help="wait until the workspace is gone")
    p.add_argument("--timeout", type=duration_arg, default=300.0, help="for --wait (300s)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=resources.cmd_delete)


def _add_lifecycle_commands(add: _Add) -> None:
    for verb, what in (
        ("start", "set desired_state RUNNING"),
        ("stop", "set desired_state STANDBY"),
        ("archive", "set desired_state PENDING (archive to object storage)"),
    ):
        p = add(verb, what)
        p.add_argument("name")
        _ns(p)
        p.add_argument("--wait", action="store_true", help="wait for the matching display")
        p.add_argument("--timeout", type=duration_arg, default=300.0)
        p.set_defaults(func=lifecycle.cmd_set_desired)

    p = add("recover", "administrators: clear a workspace's error so it converges again")
    p.add_argument("name")
    _ns(p)
    p.set_defaults(func=lifecycle.cmd_recover)

    p = add("open", "print a single-use sign-in link to a workspace in the browser")
    p.add_argument("name")
    _ns(p)
    p.add_argument("--browser", action="store_true", help="open the link in a browser")
    p.set_defaults(func=open_cmd.cmd_open)

    p = add("wait", "wait for a workspace condition, e.g. --for=display=RUNNING")
    p.add_argument("resource")
    p.add_argument("name", nargs="?")
    _ns(p)
    p.add_argument("--for", dest="for_", required=True, help="display=RUNNING, delete, ...")
    p.add_argument("--timeout", type=duration_arg, default=300.0, help="e.g. 300s, 5m")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=lifecycle.cmd_wait)


def _add_config_commands(add: _Add) -> None:
    p = add("kubeconfig", "print or write a kubeconfig (CA embedded) for kubectl")
    p.add_argument("--user-token", help="token to put in the kubeconfig (default: yours)")
    p.add_argument("-o", "--output", help="write to this file (mode 0600) instead of stdout")
    _ns(p)
    p.set_defaults(func=config.cmd_kubeconfig)

    p = add("crd", "print the Workspace CustomResourceDefinition")
    p.set_defaults(func=config.cmd_crd)


def _add_service_commands(add: _Add) -> None:
    p = add("server", "run the API server")
    p.add_argument("--listen", type=listen_arg, default=listen_arg(DEFAULT_LISTEN))
    p.add_argument("--insecure-http", action="store_true", help="serve plain HTTP (tests)")
    p.set_defaults(func=services.cmd_server)

    edge.add_arguments(add("edge", "run nginx as the public edge in front of a server"), listen_arg)

    p = add("db", "database maintenance")
    dbsub = p.add_subparsers(dest="db_command", metavar="ACTION")
    dbsub.required = True
    m = dbsub.add_parser("migrate", help="apply schema migrations (idempotent)")
    _common(m)
    m.add_argument("--database-url", help="default: CODEHUB_DATABASE_URL")
    m.set_defaults(func=services.cmd_db_migrate)

    p = add("gc", "Archive GC (administrators)")
    gcsub = p.add_subparsers(dest="gc_command", metavar="ACTION")
    gcsub.required = True
    m = gcsub.add_parser("preview", help="show what the Archive GC would delete and when")
    _common(m)
    m.set_defaults(func=archive_gc.cmd_gc_preview)

    p = add("coordinator", "run the coordinator (leader election, operator, monitors)")
    p.add_argument("--listen", type=listen_arg, default=listen_arg(DEFAULT_COORDINATOR_LISTEN))
    p.add_argument(
        "--scope-label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="label added to (and filtering) every container and volume; repeatable "
        "(env CODEHUB_SCOPE_LABELS=k=v,k2=v2)",
    )
    p.set_defaults(func=services.cmd_coordinator)


def _add_dev_commands(add: _Add) -> None:
    p = add("dev", "the embedded local stack")
    devsub = p.add_subparsers(dest="dev_command", metavar="ACTION")
    devsub.required = True
    up = devsub.add_parser("up", help="start services, server, coordinator and a demo")
    _common(up)
    up.add_argument("--detach", action="store_true", help="leave it running and return")
    up.set_defaults(func=services.cmd_dev)
    down = devsub.add_parser("down", help="stop what `dev up` started")
    _common(down)
    down.set_defaults(func=services.cmd_dev, detach=False)
