"""``apply``, ``get``, ``describe`` and ``delete``: the kubectl verbs on Workspaces."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass

from codehub.crd_like.client.api import ApiClient, ApiError
from codehub.crd_like.client.manifests import Manifest, load_manifests
from codehub.operator.cli import output
from codehub.operator.cli.arguments import opt, resource_and_names
from codehub.operator.cli.connection import (
    fatal,
    resolve_connection,
    resolve_namespace,
    run,
)
from codehub.operator.cli.console import CliError, err, out
from codehub.operator.cli.output import Obj, resource_name
from codehub.operator.cli.waiting import gone, wait_for
from codehub.vocabulary.timestamps import utc_now

# -- apply ----------------------------------------------------------------------------


def cmd_apply(args: argparse.Namespace) -> int:
    manifests = load_manifests(args.filename, stdin=sys.stdin)
    explicit_ns = opt(args, "namespace")
    for m in manifests:
        if explicit_ns and m.namespace and m.namespace != explicit_ns:
            raise CliError(
                f"{m.source}: the namespace from the provided object {m.namespace!r} does not "
                f"match the namespace {explicit_ns!r}; change one of them"
            )
    conn = resolve_connection(args, os.environ)

    async def go() -> int:
        async with conn.client() as api:
            default_ns = None
            if any(m.namespace is None for m in manifests):
                default_ns = await resolve_namespace(api, args, conn)
            failed = [m for m in manifests if not await _apply_reporting(api, m, default_ns)]
        return 1 if failed else 0

    return run(go)


async def _apply_reporting(api: ApiClient, m: Manifest, default_ns: str | None) -> bool:
    """Apply one document and print the outcome; False when the server refused it."""
    ns = m.namespace or default_ns
    assert ns is not None
    try:
        result = await apply_one(api, ns, m.obj)
    except ApiError as exc:
        if fatal(exc):
            raise
        err(f"{output.format_api_error(exc)} ({m.source})")
        return False
    out(f"{resource_name(m.name)} {result}\n")
    return True


#: kubectl's record of the manifest last applied, so a field removed from the manifest is
#: removed from the object on the next apply (kubectl's client-side three-way merge).
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


async def apply_one(api: ApiClient, ns: str, manifest: Obj) -> str:
    """Create, or merge-patch what changed since the last apply; says what happened."""
    name = manifest["metadata"]["name"]
    body = _manifest_body(manifest, ns)
    record = last_applied_record(body)
    try:
        current = await api.get(ns, name)
    except ApiError as exc:
        if not exc.not_found:
            raise
        try:
            await api.create(ns, _with_record(body, record))
            return "created"
        except ApiError as create_exc:
            if not create_exc.conflict or create_exc.reason != "AlreadyExists":
                raise
            current = await api.get(ns, name)
    patch = apply_patch(current, body, last_applied_of(current))
    if last_applied_of(current) != json.loads(record):
        patch.setdefault("metadata", {}).setdefault("annotations", {})[LAST_APPLIED] = record
    if not patch:
        return "unchanged"
    await api.patch_merge(ns, name, patch)
    return "configured"


def _manifest_body(manifest: Obj, ns: str) -> Obj:
    meta = manifest.get("metadata") or {}
    out_meta: Obj = {"name": meta["name"], "namespace": ns}
    for key in ("labels", "annotations"):
        entries = {k: v for k, v in (meta.get(key) or {}).items() if k != LAST_APPLIED}
        if entries:
            out_meta[key] = entries
    return {
        "apiVersion": manifest["apiVersion"],
        "kind": manifest["kind"],
        "metadata": out_meta,
        "spec": dict(manifest.get("spec") or {}),
    }


def last_applied_record(body: Obj) -> str:
    """The annotation's value: the applied manifest as compact JSON, as kubectl writes it."""
    return json.dumps(body, sort_keys=True, separators=(",", ":")) + "\n"


def _with_record(body: Obj, record: str) -> Obj:
    meta = {**body["metadata"]}
    meta["annotations"] = {**meta.get("annotations", {}), LAST_APPLIED: record}
    return {**body, "metadata": meta}


def last_applied_of(obj: Obj) -> Obj | None:
    """The manifest recorded by the last apply (codehub's or kubectl's), if readable."""
    raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    if not isinstance(raw, str):
        return None
    try:
        parsed = json.loads(raw)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def apply_patch(current: Obj, desired: Obj, original: Obj | None = None) -> Obj:
    """The merge patch that makes ``current`` carry what ``desired`` sets.

    With ``original`` (the last-applied manifest), fields it set that ``desired`` no
    longer sets are removed (null in the patch), as kubectl's three-way merge does;
    without it, fields the manifest omits are left alone.
    """
    patch: Obj = {}
    meta_patch: Obj = {}
    cur_meta = current.get("metadata") or {}
    old_meta = (original or {}).get("metadata") or {}
    for key in ("labels", "annotations"):
        want = (desired.get("metadata") or {}).get(key) or {}
        have = cur_meta.get(key) or {}
        changed: Obj = {k: v for k, v in want.items() if have.get(k) != v}
        for k in old_meta.get(key) or {}:
            if k not in want and k in have and k != LAST_APPLIED:
                changed[k] = None
        if changed:
            meta_patch[key] = changed
    if meta_patch:
        patch["metadata"] = meta_patch
    spec_patch = _diff(
        current.get("spec") or {},
        desired.get("spec") or {},
        (original or {}).get("spec") if original is not None else None,
    )
    if spec_patch:
        patch["spec"] = spec_patch
    return patch


def _diff(have: Obj, want: Obj, old: Obj | None = None) -> Obj:
    result: Obj = {}
    for key, value in want.items():
        cur = have.get(key)
        if isinstance(value, dict) and isinstance(cur, dict):
            before = old.get(key) if isinstance(old, dict) else None
            sub = _diff(cur, value, before if isinstance(before, dict) else None)
            if sub:
                result[key] = sub
        elif cur != value:
            result[key] = value
    for key in old or {}:
        if key not in want and key in have:
            result[key] = None
    return result


# -- get ------------------------------------------------------------------------------


@dataclass
class _Listing:
    """How ``get`` prints: the format, its columns, and the widths printed so far (a watch
    keeps them, so later rows line up with the first table)."""

    fmt: str
    all_ns: bool
    widths: list[int] | None = None

    @property
    def wide(self) -> bool:
        return self.fmt == "wide"

    @property
    def tabular(self) -> bool:
        return self.fmt in ("table", "wide")

    def table(self, items: list[Obj]) -> None:
        rows = [output.headers(self.wide, self.all_ns)]
        rows += [output.workspace_row(o, utc_now(), self.wide, self.all_ns) for o in items]
        self.widths = output.column_widths(rows)
        out(output.render_rows(rows, self.widths))

    def one(self, obj: Obj) -> None:
        """One object as a watch prints it: a table row, a name, or a document."""
        if self.tabular:
            row = output.workspace_row(obj, utc_now(), self.wide, self.all_ns)
            if self.widths is None:
                self.table([obj])
                return
            self.widths = [max(w, len(c)) for w, c in zip(self.widths, row, strict=False)]
            out(output.render_rows([row], self.widths))
        elif self.fmt == "name":
            out(resource_name(obj["metadata"]["name"]) + "\n")
        elif self.fmt == "yaml":
            out("---\n" + output.render_object(obj, self.fmt))
        else:
            out(output.render_object(obj, self.fmt))


def cmd_get(args: argparse.Namespace) -> int:
    names = resource_and_names(args.resource, [args.name] if args.name else [])
    if names and args.all_namespaces:
        raise CliError("a resource cannot be retrieved by name across all namespaces")
    conn = resolve_connection(args, os.environ)
    listing = _Listing(args.output or "table", bool(args.all_namespaces))

    async def go() -> int:
        async with conn.client() as api:
            ns = None if args.all_namespaces else await resolve_namespace(api, args, conn)
            name = names[0] if names else None
            if name:
                assert ns is not None
                obj = await api.get(ns, name)
                items = [obj]
                rv = (obj.get("metadata") or {}).get("resourceVersion")
            else:
                lst = await api.list(ns, label_selector=args.selector)
                items = list(lst.get("items") or [])
                rv = (lst.get("metadata") or {}).get("resourceVersion")
            items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
            _print_items(listing, items, ns, name, rv, args.watch)
            if args.watch:
                await _watch_forever(api, ns, name, args.selector, rv, listing)
        return 0

    return run(go)


def _print_items(
    listing: _Listing,
    items: list[Obj],
    ns: str | None,
    name: str | None,
    rv: str | None,
    watch: bool,
) -> None:
    """What ``get`` prints before a watch (if any) takes over."""
    fmt = listing.fmt
    if listing.tabular:
        if not items and not watch:
            where = "in any namespace" if listing.all_ns else f"in {ns} namespace"
            err(f"No resources found {where}.")
        else:
            listing.table(items)
    elif fmt == "name":
        out("".join(resource_name(o["metadata"]["name"]) + "\n" for o in items))
    elif name and not watch:
        out(output.render_object(items[0], fmt))
    elif not watch:
        out(output.render_list(items, fmt, rv))
    else:
        for o in items:
            listing.one(o)


async def _watch_forever(
    api: ApiClient,
    ns: str | None,
    name: str | None,
    selector: str | None,
    rv: str | None,
    listing: _Listing,
) -> None:
    """Follow the watch from ``rv``; resume after a stream ends, re-list on 410."""
    field_selector = f"metadata.name={name}" if name else None
    while True:
        watch = api.watch(
            ns,
            resource_version=rv,
            field_selector=field_selector,
            timeout_seconds=300,
            label_selector=selector,
        )
        try:
            async for _etype, obj in watch:
                if name and (obj.get("metadata") or {}).get("name") != name:
                    continue
                listing.one(obj)
        except ApiError as exc:
            if not exc.gone:
                raise
            lst = await api.list(ns, label_selector=selector)
            rv = (lst.get("metadata") or {}).get("resourceVersion")
            continue
        rv = watch.resource_version


# -- describe, delete -----------------------------------------------------------------


def cmd_describe(args: argparse.Namespace) -> int:
    names = resource_and_names(args.resource, [args.name] if args.name else [])
    if not names:
        raise CliError("describe needs a workspace name")
    conn = resolve_connection(args, os.environ)

    async def go() -> int:
        async with conn.client() as api:
            ns = await resolve_namespace(api, args, conn)
            obj = await api.get(ns, names[0])
            events = await _events_about(api, ns, obj)
            out(output.describe(obj, events, utc_now()))
        return 0

    return run(go)


async def _events_about(api: ApiClient, ns: str, obj: Obj) -> list[Obj]:
    """Events whose involvedObject is this workspace (this incarnation, when the uid is set);
    none when the caller may not read events."""
    meta = obj.get("metadata") or {}
    name, uid = meta.get("name"), meta.get("uid")
    try:
        events = await api.list_events(ns, name)
    except ApiError as exc:
        if fatal(exc):
            raise
        return []
    return [
        e
        for e in events
        if (e.get("involvedObject") or {}).get("name") == name
        and (not uid or (e.get("involvedObject") or {}).get("uid") in (None, "", uid))
    ]


def cmd_delete(args: argparse.Namespace) -> int:
    names = resource_and_names(args.resource, args.names)
    if not names:
        raise CliError("delete needs at least one workspace name")
    conn = resolve_connection(args, os.environ)

    async def go() -> int:
        async with conn.client() as api:
            ns = await resolve_namespace(api, args, conn)
            deleted = []
            for name in names:
                try:
                    await api.delete(ns, name)
                except ApiError as exc:
                    if fatal(exc):
                        raise
                    err(output.format_api_error(exc))
                    continue
                out(f"{resource_name(name)} deleted\n")
                deleted.append(name)
            if args.wait:
                for name in deleted:
                    await wait_for(
                        api, ns, name, gone, args.timeout, "delete", progress=not args.quiet
                    )
        return 1 if len(deleted) < len(names) else 0

    return run(go)
