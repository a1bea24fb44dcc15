"""``start``, ``stop``, ``archive``, ``wait`` and ``recover``: moving a workspace through its
states (docs/state-machine.md) and clearing an error (docs/errors.md)."""

from __future__ import annotations

import argparse
import os

from codehub.crd_like.client.api import ApiClient, ApiError
from codehub.operator.cli.arguments import resource_and_names
from codehub.operator.cli.connection import fatal, resolve_connection, resolve_namespace, run
from codehub.operator.cli.console import CliError, out
from codehub.operator.cli.output import Obj, resource_name
from codehub.operator.cli.waiting import display_is, parse_condition, wait_for
from codehub.vocabulary.timestamps import now_rfc3339

DESIRED_FOR = {"start": "RUNNING", "stop": "STANDBY", "archive": "PENDING"}
#: A metadata change so kopf runs the update handler at once (status-only changes do not);
#: outside the ``codehub.io/`` prefix, whose annotations kopf treats as its own bookkeeping.
RECOVER_ANNOTATION = "recovery.codehub.io/requested-at"
RECOVER_ATTEMPTS = 5


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
            before = await _clear_error(api, ns, args.name)
            if before is None:
                out(f"{resource_name(args.name)} has no error to recover from\n")
                return 0
            try:
                await api.patch_merge(
                    ns,
                    args.name,
                    {"metadata": {"annotations": {RECOVER_ANNOTATION: now_rfc3339()}}},
                )
            except ApiError as exc:
                if fatal(exc):
                    raise
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


async def _clear_error(api: ApiClient, ns: str, name: str) -> Obj | None:
    """Clear error_info, error_count and operation with a JSON Patch guarded by the
    resourceVersion, retried while the workspace changes; the status it replaced, or None
    when there was nothing to recover. op_id stays, so an uploaded archive is reused."""
    for _attempt in range(RECOVER_ATTEMPTS):
        obj = await api.get(ns, name)
        status = obj.get("status") or {}
        if not _needs_recovery(status):
            return None
        rv = obj["metadata"]["resourceVersion"]
        ops = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
            {"op": "add", "path": "/status/error_info", "value": None},
            {"op": "add", "path": "/status/error_count", "value": 0},
            {"op": "add", "path": "/status/operation", "value": "NONE"},
        ]
        try:
            await api.patch_json(ns, name, ops, status=True)
        except ApiError as exc:
            if _is_stale(exc):
                continue
            raise
        return status
    raise CliError(f"{name} kept changing; recover not applied, try again")


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


def _is_stale(exc: ApiError) -> bool:
    """The guard failed: a 409, or a 422 whose ``test`` of the resourceVersion did not hold."""
    if exc.conflict:
        return True
    if not exc.invalid:
        return False
    text = (exc.message + " " + str(exc.causes)).lower()
    return "resourceversion" in text or "test" in text
