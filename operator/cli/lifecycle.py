"""``start``, ``stop``, ``archive``, ``wait`` and ``recover``: moving a workspace through its
states (docs/state-machine.md) and clearing an error (docs/errors.md)."""

from __future__ import annotations

import argparse
import os

from codehub.operator.cli.arguments import resource_and_names
from codehub.operator.cli.connection import resolve_connection, resolve_namespace, run
from codehub.operator.cli.console import CliError, out
from codehub.operator.cli.output import Obj, resource_name
from codehub.operator.cli.waiting import display_is, parse_condition, wait_for
from codehub.vocabulary.timestamps import now_rfc3339

DESIRED_FOR = {"start": "RUNNING", "stop": "STANDBY", "archive": "PENDING"}
#: Setting it asks the API server to recover the workspace (docs/errors.md#recovery);
#: the server does it in the same request and never stores the annotation.
RECOVER_ANNOTATION = "codehub.io/recover"


def cmd_set_desired(args: argparse.Namespace) -> int:
    desired = DESIRED_FOR[args.command]
    conn = resolve_connection(args, os.environ)

    async def go() -> int:
        async with conn.client() as api:
            ns = await resolve_namespace(api, args, conn)
            current = await api.get(ns, args.name)
            before = (current.get("spec") or {}).get("desired_state")
            if before == desired:
                out(f"{resource_name(args.name)} unchanged (desired_state already {desired})\n")
            else:
                await api.patch_merge(ns, args.name, {"spec": {"desired_state": desired}})
                out(f"{resource_name(args.name)} desired_state {before} -> {desired}\n")
            if args.wait:
                target = "ARCHIVED" if desired == "PENDING" else desired
                await wait_for(
                    api, ns, args.name, display_is(target), args.timeout, f"display={target}"
                )
        return 0

    return run(go)


def cmd_wait(args: argparse.Namespace) -> int:
    names = resource_and_names(args.resource, [args.name] if args.name else [])
    if not names:
        raise CliError("wait needs a workspace name")
    label, check = parse_condition(args.for_)
    conn = resolve_connection(args, os.environ)

    async def go() -> int:
        async with conn.client() as api:
            ns = await resolve_namespace(api, args, conn)
            await wait_for(api, ns, names[0], check, args.timeout, label, not args.quiet)
        out(f"{resource_name(names[0])} condition met ({label})\n")
        return 0

    return run(go)


# -- recover --------------------------------------------------------------------------


def cmd_recover(args: argparse.Namespace) -> int:
    conn = resolve_connection(args, os.environ)

    async def go() -> int:
        async with conn.client() as api:
            ns = await resolve_namespace(api, args, conn)
            before = (await api.get(ns, args.name)).get("status") or {}
            if not _needs_recovery(before):
                out(f"{resource_name(args.name)} has no error to recover from\n")
                return 0
            await api.patch_merge(
                ns, args.name, {"metadata": {"annotations": {RECOVER_ANNOTATION: now_rfc3339()}}}
            )
            out(f"{resource_name(args.name)} recovered: {', '.join(_changes(before))}\n")
        return 0

    return run(go)


def _needs_recovery(status: Obj) -> bool:
    return bool(
        status.get("error_info")
        or status.get("error_count")
        or (status.get("operation") or "NONE") != "NONE"
        or status.get("observed_status") == "ERROR"
    )


def _changes(status: Obj) -> list[str]:
    """What recover changed, for the one line it prints."""
    info = status.get("error_info") or {}
    count = status.get("error_count") or 0
    operation = status.get("operation") or "NONE"
    changes = []
    if info:
        reason = info.get("reason") or "unknown"
        message = " ".join(str(info.get("message") or "").split())
        changes.append(f"cleared error_info ({reason}" + (f": {message}" if message else "") + ")")
    if count:
        changes.append(f"error_count {count} -> 0")
    if operation != "NONE":
        changes.append(f"operation {operation} -> NONE")
    changes.append(f"op_id kept ({status.get('op_id') or '<none>'})")
    return changes
