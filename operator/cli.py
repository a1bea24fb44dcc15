"""The ``codehub`` command line: a kubectl-like client for workspaces plus the launchers of
the server, coordinator and local stack.

Every subcommand imports what it needs lazily so ``codehub --help`` and client commands
start fast and a missing optional component gives one clear line, not a traceback. Any
failure ends as one line on stderr and a non-zero exit code; ``--debug`` shows the trace.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

if TYPE_CHECKING:
    from codehub.crd_like.client.api import ApiClient
    from codehub.crd_like.config import ApiConfig
    from codehub.operator.settings import Settings

Obj = dict[str, Any]
T = TypeVar("T")

DEFAULT_CONFIG = "~/.config/codehub/config.yaml"
DEFAULT_LISTEN = "127.0.0.1:8443"
DEFAULT_COORDINATOR_LISTEN = "127.0.0.1:8444"
RESOURCE_ALIASES = frozenset(
    ("ws", "workspace", "workspaces", "workspace.codehub.io", "workspaces.codehub.io")
)
DESIRED_FOR = {"start": "RUNNING", "stop": "STANDBY", "archive": "PENDING"}
#: A metadata change so kopf runs the update handler at once (status-only changes do not);
#: outside the ``codehub.io/`` prefix, whose annotations kopf treats as its own bookkeeping.
RECOVER_ANNOTATION = "recovery.codehub.io/requested-at"


class CliError(Exception):
    """A failure already phrased for the user (one line, no trace)."""


class WaitFailed(CliError):
    """A wait ended without its condition (timeout, ERROR, deleted)."""


# -- connection -----------------------------------------------------------------------


@dataclass
class Conn:
    server: str
    token: str = field(repr=False)
    ca_file: str | None
    ca_pem: str | None
    insecure: bool
    namespace: str | None

    def client(self) -> ApiClient:
        from codehub.crd_like.client.api import ApiClient

        return ApiClient(
            self.server,
            self.token,
            ca_file=self.ca_file,
            insecure=self.insecure,
            ca_data=self.ca_pem,
        )


def config_path(args: argparse.Namespace, env: Mapping[str, str]) -> Path:
    raw = _opt(args, "config") or env.get("CODEHUB_CONFIG") or DEFAULT_CONFIG
    return Path(raw).expanduser()


def resolve_connection(args: argparse.Namespace, env: Mapping[str, str]) -> Conn:
    """Flags win over CODEHUB_* environment variables, which win over the config file.

    The config file is a kubeconfig (as written by ``codehub kubeconfig``); its token, CA
    and namespace are used only for the server it names, so pointing ``--server``
    elsewhere never sends that token to another host.
    """
    from codehub.crd_like.client.kubeconfig import (
        Connection,
        KubeconfigError,
        parse_kubeconfig,
    )

    cfg: Connection | None = None
    path = config_path(args, env)
    explicit_config = bool(_opt(args, "config") or env.get("CODEHUB_CONFIG"))
    if path.is_file():
        try:
            cfg = parse_kubeconfig(path.read_text(encoding="utf-8"))
        except (KubeconfigError, OSError, UnicodeDecodeError) as exc:
            raise CliError(f"config file {path}: {exc}") from None
    elif explicit_config:
        raise CliError(f"config file {path} does not exist")
    server = _opt(args, "server") or env.get("CODEHUB_SERVER")
    if cfg is not None and server and server.rstrip("/") != cfg.server.rstrip("/"):
        cfg = None
    if not server:
        if cfg is None:
            raise CliError(
                "no server configured: pass --server, set CODEHUB_SERVER, or write a config "
                f"with `codehub kubeconfig -o {DEFAULT_CONFIG}`"
            )
        server = cfg.server
    token = _opt(args, "token") or env.get("CODEHUB_TOKEN") or (cfg.token if cfg else "")
    ca_file = _opt(args, "ca_file") or env.get("CODEHUB_CA_FILE") or None
    ca_pem = None
    if ca_file is None and cfg is not None:
        ca_file, ca_pem = cfg.ca_file, cfg.ca_pem
    insecure = bool(_opt(args, "insecure_skip_tls_verify")) or _truthy(
        env.get("CODEHUB_INSECURE_SKIP_TLS_VERIFY")
    )
    if not insecure and cfg is not None:
        insecure = cfg.insecure
    namespace = env.get("CODEHUB_NAMESPACE") or (cfg.namespace if cfg else None)
    return Conn(server, token, ca_file, ca_pem, insecure, namespace)


async def resolve_namespace(api: ApiClient, args: argparse.Namespace, conn: Conn) -> str:
    """-n, then CODEHUB_NAMESPACE / the config's context, then who the server says we are."""
    explicit = _opt(args, "namespace")
    if explicit:
        return str(explicit)
    if conn.namespace:
        return conn.namespace
    found = await whoami_namespace(api)
    if found:
        return found
    raise CliError(
        "no namespace: pass -n NAMESPACE, set CODEHUB_NAMESPACE, or use a config written by "
        "`codehub kubeconfig` (it records your namespace)"
    )


async def whoami_namespace(api: ApiClient) -> str | None:
    """The caller's own namespace: SelfSubjectReview if served, else the only visible one."""
    from codehub.crd_like.client.api import ApiError

    try:
        review = await api.request(
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            json_body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
        user = (((review or {}).get("status") or {}).get("userInfo") or {}).get("username")
        if isinstance(user, str) and user:
            return user
    except ApiError as exc:
        if exc.status in (0, 401):
            raise
    try:
        data = await api.request("GET", "/api/v1/namespaces")
    except ApiError as exc:
        if exc.status in (0, 401):
            raise
        return None
    items = (data or {}).get("items") if isinstance(data, dict) else None
    if isinstance(items, list) and len(items) == 1:
        name = (items[0].get("metadata") or {}).get("name")
        return str(name) if name else None
    return None


# -- helpers --------------------------------------------------------------------------


def _opt(args: argparse.Namespace, name: str) -> Any:
    return getattr(args, name, None)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _now() -> datetime:
    return datetime.now(UTC)


def _out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _resource_and_names(resource: str, names: Sequence[str]) -> list[str]:
    """Accept ``ws NAME``, ``workspace NAME`` and ``ws/NAME`` forms."""
    if "/" in resource:
        kind, _, name = resource.partition("/")
        _check_resource(kind)
        return [name, *names]
    _check_resource(resource)
    return list(names)


def _check_resource(resource: str) -> None:
    if resource.lower() not in RESOURCE_ALIASES:
        raise CliError(
            f'the server doesn\'t have a resource type "{resource}" '
            "(codehub serves workspaces: ws, workspace, workspaces)"
        )


def parse_duration(text: str) -> float:
    """``300``, ``300s``, ``5m``, ``1h``, ``1h30m`` -> seconds."""
    raw = text.strip().lower()
    if not raw:
        raise ValueError("empty duration")
    try:
        return float(raw)
    except ValueError:
        pass
    total = 0.0
    number = ""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0}
    for ch in raw:
        if ch.isdigit() or ch == ".":
            number += ch
        elif ch in units and number:
            total += float(number) * units[ch]
            number = ""
        else:
            raise ValueError(f"invalid duration {text!r}")
    if number:
        raise ValueError(f"invalid duration {text!r} (missing unit)")
    return total


def _duration_arg(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _listen_arg(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


def _run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    async def runner() -> T:
        return await coro_fn()

    return asyncio.run(runner())


def _load(module: str, attr: str, command: str) -> Any:
    """Import a component written elsewhere; absence is a clear message, not a trace."""
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module == missing or module.startswith(missing + ".")):
            raise CliError(
                f"`codehub {command}` is not available in this build ({module} is missing)"
            ) from None
        raise CliError(f"`codehub {command}` cannot start: missing module {missing!r}") from None
    fn = getattr(mod, attr, None)
    if fn is None:
        raise CliError(
            f"`codehub {command}` is not available in this build ({module}.{attr} is missing)"
        )
    return fn


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    from codehub.operator.settings import Settings, SettingsError

    try:
        return Settings.from_env(env)
    except SettingsError as exc:
        raise CliError(f"configuration: {exc}") from None


def api_config_from_settings(settings: Settings, env: Mapping[str, str] | None = None) -> ApiConfig:
    """The API server's configuration: shared values from Settings, server-only knobs
    (bookmark and heartbeat intervals, compaction, body limit) from the environment."""
    from dataclasses import replace

    from codehub.crd_like.config import ApiConfig, ApiConfigError

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
    from codehub.operator.settings import SettingsError, parse_label_list

    labels: dict[str, str] = {}
    for item in items:
        try:
            labels.update(parse_label_list("--scope-label", item))
        except SettingsError as exc:
            raise CliError(str(exc)) from None
    return labels


def _configure_logging() -> None:
    import logging

    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )


# -- client commands ------------------------------------------------------------------


def cmd_apply(args: argparse.Namespace) -> int:
    from codehub.crd_like.client.manifests import load_manifests

    manifests = load_manifests(args.filename, stdin=sys.stdin)
    explicit_ns = _opt(args, "namespace")
    for m in manifests:
        if explicit_ns and m.namespace and m.namespace != explicit_ns:
            raise CliError(
                f"{m.source}: the namespace from the provided object {m.namespace!r} does not "
                f"match the namespace {explicit_ns!r}; change one of them"
            )
    conn = resolve_connection(args, os.environ)

    async def go() -> int:
        from codehub.crd_like.client.api import ApiError
        from codehub.operator.cli_output import format_api_error, resource_name

        failed = 0
        async with conn.client() as api:
            default_ns = None
            if any(m.namespace is None for m in manifests):
                default_ns = await resolve_namespace(api, args, conn)
            for m in manifests:
                ns = m.namespace or default_ns
                assert ns is not None
                try:
                    result = await apply_one(api, ns, m.obj)
                except ApiError as exc:
                    if exc.status in (0, 401):
                        raise
                    failed += 1
                    _err(f"{format_api_error(exc)} ({m.source})")
                    continue
                _out(f"{resource_name(m.name)} {result}\n")
        return 1 if failed else 0

    return _run(go)


async def apply_one(api: ApiClient, ns: str, manifest: Obj) -> str:
    """Create, or merge-patch the fields the manifest sets; says what happened."""
    from codehub.crd_like.client.api import ApiError

    name = manifest["metadata"]["name"]
    body = _manifest_body(manifest, ns)
    try:
        current = await api.get(ns, name)
    except ApiError as exc:
        if exc.status != 404:
            raise
        try:
            await api.create(ns, body)
            return "created"
        except ApiError as create_exc:
            if create_exc.status != 409 or create_exc.reason != "AlreadyExists":
                raise
            current = await api.get(ns, name)
    patch = apply_patch(current, body)
    if not patch:
        return "unchanged"
    await api.patch_merge(ns, name, patch)
    return "configured"


def _manifest_body(manifest: Obj, ns: str) -> Obj:
    meta = manifest.get("metadata") or {}
    out_meta: Obj = {"name": meta["name"], "namespace": ns}
    for key in ("labels", "annotations"):
        if meta.get(key):
            out_meta[key] = dict(meta[key])
    body: Obj = {
        "apiVersion": manifest["apiVersion"],
        "kind": manifest["kind"],
        "metadata": out_meta,
        "spec": dict(manifest.get("spec") or {}),
    }
    return body


def apply_patch(current: Obj, desired: Obj) -> Obj:
    """The merge patch that makes ``current`` carry what ``desired`` sets (and only that).

    Fields the manifest omits are left alone (there is no last-applied record), so
    removing a line from a manifest does not reset the field; set it explicitly instead.
    """
    patch: Obj = {}
    meta_patch: Obj = {}
    cur_meta = current.get("metadata") or {}
    for key in ("labels", "annotations"):
        want = (desired.get("metadata") or {}).get(key) or {}
        have = cur_meta.get(key) or {}
        changed = {k: v for k, v in want.items() if have.get(k) != v}
        if changed:
            meta_patch[key] = changed
    if meta_patch:
        patch["metadata"] = meta_patch
    spec_patch = _diff(current.get("spec") or {}, desired.get("spec") or {})
    if spec_patch:
        patch["spec"] = spec_patch
    return patch


def _diff(have: Obj, want: Obj) -> Obj:
    out: Obj = {}
    for key, value in want.items():
        cur = have.get(key)
        if isinstance(value, dict) and isinstance(cur, dict):
            sub = _diff(cur, value)
            if sub:
                out[key] = sub
        elif cur != value:
            out[key] = value
    return out


def cmd_get(args: argparse.Namespace) -> int:
    names = _resource_and_names(args.resource, [args.name] if args.name else [])
    if names and args.all_namespaces:
        raise CliError("a resource cannot be retrieved by name across all namespaces")
    conn = resolve_connection(args, os.environ)
    fmt = args.output or "table"

    async def go() -> int:
        from codehub.operator import cli_output as out

        async with conn.client() as api:
            ns = None if args.all_namespaces else await resolve_namespace(api, args, conn)
            name = names[0] if names else None
            selector = args.selector
            if name:
                assert ns is not None
                obj = await api.get(ns, name)
                items = [obj]
                rv = (obj.get("metadata") or {}).get("resourceVersion")
            else:
                lst = await api.list(ns, label_selector=selector)
                items = list(lst.get("items") or [])
                rv = (lst.get("metadata") or {}).get("resourceVersion")
            items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
            wide = fmt == "wide"
            all_ns = bool(args.all_namespaces)
            widths: list[int] | None = None
            if fmt in ("table", "wide"):
                if not items and not args.watch:
                    where = "in any namespace" if all_ns else f"in {ns} namespace"
                    _err(f"No resources found {where}.")
                else:
                    rows = [out.headers(wide, all_ns)]
                    rows += [out.workspace_row(o, _now(), wide, all_ns) for o in items]
                    widths = out.column_widths(rows)
                    _out(out.render_rows(rows, widths))
            elif fmt == "name":
                _out("".join(out.resource_name(o["metadata"]["name"]) + "\n" for o in items))
            elif name and not args.watch:
                _out(out.render_object(items[0], fmt))
            elif not args.watch:
                _out(out.render_list(items, fmt, rv))
            else:
                for o in items:
                    _watch_print(o, fmt, wide, all_ns, widths)
            if args.watch:
                await _watch_forever(api, ns, name, selector, rv, fmt, wide, all_ns, widths)
        return 0

    return _run(go)


def _watch_print(
    obj: Obj, fmt: str, wide: bool, all_ns: bool, widths: list[int] | None
) -> list[int] | None:
    from codehub.operator import cli_output as out

    if fmt in ("table", "wide"):
        row = out.workspace_row(obj, _now(), wide, all_ns)
        if widths is None:
            rows = [out.headers(wide, all_ns), row]
            widths = out.column_widths(rows)
            _out(out.render_rows(rows, widths))
        else:
            widths = [max(w, len(c)) for w, c in zip(widths, row, strict=False)]
            _out(out.render_rows([row], widths))
    elif fmt == "name":
        _out(out.resource_name(obj["metadata"]["name"]) + "\n")
    elif fmt == "yaml":
        _out("---\n" + out.render_object(obj, fmt))
    else:
        _out(out.render_object(obj, fmt))
    return widths


async def _watch_forever(
    api: ApiClient,
    ns: str | None,
    name: str | None,
    selector: str | None,
    rv: str | None,
    fmt: str,
    wide: bool,
    all_ns: bool,
    widths: list[int] | None,
) -> None:
    from codehub.crd_like.client.api import ApiError

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
                widths = _watch_print(obj, fmt, wide, all_ns, widths)
        except ApiError as exc:
            if exc.status != 410:
                raise
            lst = await api.list(ns, label_selector=selector)
            rv = (lst.get("metadata") or {}).get("resourceVersion")
            continue
        rv = watch.resource_version


def cmd_describe(args: argparse.Namespace) -> int:
    names = _resource_and_names(args.resource, [args.name] if args.name else [])
    if not names:
        raise CliError("describe needs a workspace name")
    conn = resolve_connection(args, os.environ)

    async def go() -> int:
        from codehub.crd_like.client.api import ApiError
        from codehub.operator import cli_output as out

        async with conn.client() as api:
            ns = await resolve_namespace(api, args, conn)
            obj = await api.get(ns, names[0])
            try:
                events = await api.list_events(ns, names[0])
            except ApiError as exc:
                if exc.status in (0, 401):
                    raise
                events = []
            uid = (obj.get("metadata") or {}).get("uid")
            events = [
                e
                for e in events
                if (e.get("involvedObject") or {}).get("name") == names[0]
                and (not uid or (e.get("involvedObject") or {}).get("uid") in (None, "", uid))
            ]
            _out(out.describe(obj, events, _now()))
        return 0

    return _run(go)


def cmd_delete(args: argparse.Namespace) -> int:
    names = _resource_and_names(args.resource, args.names)
    if not names:
        raise CliError("delete needs at least one workspace name")
    conn = resolve_connection(args, os.environ)

    async def go() -> int:
        from codehub.crd_like.client.api import ApiError
        from codehub.operator.cli_output import format_api_error, resource_name

        failed = 0
        async with conn.client() as api:
            ns = await resolve_namespace(api, args, conn)
            deleted = []
            for name in names:
                try:
                    await api.delete(ns, name)
                except ApiError as exc:
                    if exc.status in (0, 401):
                        raise
                    failed += 1
                    _err(format_api_error(exc))
                    continue
                _out(f"{resource_name(name)} deleted\n")
                deleted.append(name)
            if args.wait:
                for name in deleted:
                    await wait_for(
                        api, ns, name, _gone, args.timeout, "delete", progress=not args.quiet
                    )
        return 1 if failed else 0

    return _run(go)


def cmd_set_desired(args: argparse.Namespace) -> int:
    desired = DESIRED_FOR[args.command]
    conn = resolve_connection(args, os.environ)

    async def go() -> int:
        from codehub.operator.cli_output import resource_name

        async with conn.client() as api:
            ns = await resolve_namespace(api, args, conn)
            current = await api.get(ns, args.name)
            before = (current.get("spec") or {}).get("desired_state")
            if before == desired:
                _out(f"{resource_name(args.name)} unchanged (desired_state already {desired})\n")
            else:
                await api.patch_merge(ns, args.name, {"spec": {"desired_state": desired}})
                _out(f"{resource_name(args.name)} desired_state {before} -> {desired}\n")
            if args.wait:
                target = "ARCHIVED" if desired == "PENDING" else desired
                await wait_for(
                    api,
                    ns,
                    args.name,
                    _display_is(target),
                    args.timeout,
                    f"display={target}",
                    progress=True,
                )
        return 0

    return _run(go)


def cmd_recover(args: argparse.Namespace) -> int:
    conn = resolve_connection(args, os.environ)

    async def go() -> int:
        from codehub.crd_like.client.api import ApiError
        from codehub.operator.cli_output import resource_name

        async with conn.client() as api:
            ns = await resolve_namespace(api, args, conn)
            for _attempt in range(5):
                obj = await api.get(ns, args.name)
                status = obj.get("status") or {}
                info = status.get("error_info") or {}
                count = status.get("error_count") or 0
                operation = status.get("operation") or "NONE"
                if (
                    not info
                    and not count
                    and operation == "NONE"
                    and (status.get("observed_status") != "ERROR")
                ):
                    _out(f"{resource_name(args.name)} has no error to recover from\n")
                    return 0
                rv = obj["metadata"]["resourceVersion"]
                ops = [
                    {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
                    {"op": "add", "path": "/status/error_info", "value": None},
                    {"op": "add", "path": "/status/error_count", "value": 0},
                    {"op": "add", "path": "/status/operation", "value": "NONE"},
                ]
                try:
                    await api.patch_json(ns, args.name, ops, status=True)
                except ApiError as exc:
                    if exc.status in (409, 422) and _is_stale(exc):
                        continue
                    raise
                break
            else:
                raise CliError(f"{args.name} kept changing; recover not applied, try again")
            stamp = _now().strftime("%Y-%m-%dT%H:%M:%SZ")
            try:
                await api.patch_merge(
                    ns, args.name, {"metadata": {"annotations": {RECOVER_ANNOTATION: stamp}}}
                )
            except ApiError as exc:
                if exc.status in (0, 401):
                    raise
            changes = []
            if info:
                reason = info.get("reason") or "unknown"
                message = " ".join(str(info.get("message") or "").split())
                changes.append(
                    f"cleared error_info ({reason}" + (f": {message}" if message else "") + ")"
                )
            if count:
                changes.append(f"error_count {count} -> 0")
            if operation != "NONE":
                changes.append(f"operation {operation} -> NONE")
            changes.append(f"op_id kept ({status.get('op_id') or '<none>'})")
            _out(f"{resource_name(args.name)} recovered: {', '.join(changes)}\n")
        return 0

    return _run(go)


def _is_stale(exc: Exception) -> bool:
    from codehub.crd_like.client.api import ApiError

    if not isinstance(exc, ApiError):
        return False
    if exc.status == 409:
        return True
    text = (exc.message + " " + str(exc.causes)).lower()
    return "resourceversion" in text or "test" in text


# -- wait -----------------------------------------------------------------------------

Check = Callable[[Obj | None], bool]


def _gone(obj: Obj | None) -> bool:
    return obj is None


def _display_is(value: str) -> Check:
    from codehub.operator.cli_output import display_of

    return lambda obj: obj is not None and display_of(obj) == value


def parse_condition(text: str) -> tuple[str, Check]:
    """``delete``, ``display=RUNNING``, ``observed_status=STANDBY``, ``operation=NONE``,
    ``desired_state=RUNNING`` (also with ``status.``/``spec.`` prefixes)."""
    raw = text.strip()
    if raw.lower() in ("delete", "deleted"):
        return "delete", _gone
    key, sep, value = raw.partition("=")
    if not sep or not value:
        raise CliError(f"--for: expected delete or FIELD=VALUE, got {text!r}")
    key = key.strip().removeprefix("status.").removeprefix("spec.").lower()
    value = value.strip().upper()
    if key == "display":
        return f"display={value}", _display_is(value)
    if key in ("observed_status", "observed", "operation", "error_count"):
        field_name = "observed_status" if key == "observed" else key

        def check_status(obj: Obj | None) -> bool:
            return obj is not None and str((obj.get("status") or {}).get(field_name)) == value

        return f"{field_name}={value}", check_status
    if key == "desired_state":

        def check_spec(obj: Obj | None) -> bool:
            return obj is not None and str((obj.get("spec") or {}).get("desired_state")) == value

        return f"desired_state={value}", check_spec
    raise CliError(
        f"--for: unknown field {key!r} (use display, observed_status, operation, "
        "desired_state or delete)"
    )


async def wait_for(
    api: ApiClient,
    ns: str,
    name: str,
    check: Check,
    timeout_s: float,
    label: str,
    progress: bool = True,
    stream: TextIO | None = None,
) -> Obj | None:
    """Follow one workspace by watch until ``check`` holds; a timeout, a terminal ERROR, or
    the workspace vanishing ends the wait with ``WaitFailed``."""
    from codehub.crd_like.client.api import ApiError
    from codehub.operator.cli_output import Progress, display_of, progress_text

    started = time.monotonic()
    bar = Progress(stream or sys.stderr, f"waiting for {name} {label}", enabled=progress)
    last: list[Obj | None] = [None]

    def examine(obj: Obj | None) -> bool:
        last[0] = obj
        bar.update(progress_text(obj), time.monotonic() - started)
        if check(obj):
            return True
        if obj is None:
            raise WaitFailed(f"workspace {ns}/{name} was deleted while waiting for {label}")
        if display_of(obj) == "ERROR":
            info = (obj.get("status") or {}).get("error_info") or {}
            why = (
                ": ".join(str(x) for x in (info.get("reason"), info.get("message")) if x)
                or "no error_info"
            )
            raise WaitFailed(
                f"workspace {ns}/{name} is in ERROR ({' '.join(why.split())}); "
                f"an administrator can run `codehub recover {name} -n {ns}`"
            )
        return False

    async def follow() -> Obj | None:
        while True:
            try:
                obj: Obj | None = await api.get(ns, name)
            except ApiError as exc:
                if exc.status != 404:
                    raise
                obj = None
            if examine(obj):
                return obj
            assert obj is not None
            rv = obj["metadata"].get("resourceVersion")
            try:
                async for etype, event_obj in api.watch(
                    ns,
                    resource_version=rv,
                    field_selector=f"metadata.name={name}",
                    timeout_seconds=60,
                ):
                    if (event_obj.get("metadata") or {}).get("name") != name:
                        continue
                    if examine(None if etype == "DELETED" else event_obj):
                        return None if etype == "DELETED" else event_obj
            except ApiError as exc:
                if exc.status != 410:
                    raise

    try:
        return await asyncio.wait_for(follow(), timeout_s)
    except TimeoutError:
        now_text = progress_text(last[0]) if last[0] is not None else "unknown"
        raise WaitFailed(
            f"timed out after {timeout_s:g}s waiting for {ns}/{name} {label} (now: {now_text})"
        ) from None
    finally:
        bar.finish()


def cmd_wait(args: argparse.Namespace) -> int:
    names = _resource_and_names(args.resource, [args.name] if args.name else [])
    if not names:
        raise CliError("wait needs a workspace name")
    label, check = parse_condition(args.for_)
    conn = resolve_connection(args, os.environ)

    async def go() -> int:
        from codehub.operator.cli_output import resource_name

        async with conn.client() as api:
            ns = await resolve_namespace(api, args, conn)
            await wait_for(api, ns, names[0], check, args.timeout, label, not args.quiet)
        _out(f"{resource_name(names[0])} condition met ({label})\n")
        return 0

    return _run(go)


def cmd_kubeconfig(args: argparse.Namespace) -> int:
    from codehub.crd_like.client.kubeconfig import render_kubeconfig

    conn = resolve_connection(args, os.environ)
    token = args.user_token or conn.token
    if not token:
        raise CliError("no token: pass --user-token or --token, or set CODEHUB_TOKEN")
    ca_pem = conn.ca_pem
    if ca_pem is None:
        ca_pem = _find_ca_pem(conn)
    if conn.server.startswith("https://") and ca_pem is None and not conn.insecure:
        _err(
            "warning: no CA given (--ca-file / CODEHUB_CA_FILE); the kubeconfig relies on "
            "the system trust store"
        )
    namespace = _opt(args, "namespace") or (conn.namespace if token == conn.token else None)
    if not namespace:
        namespace = _run(lambda: _whoami_with(conn, token))
    text = render_kubeconfig(conn.server, token, ca_pem, namespace or None)
    if _opt(args, "insecure_skip_tls_verify") or (conn.insecure and ca_pem is None):
        text = text.replace("    server:", "    insecure-skip-tls-verify: true\n    server:", 1)
    if args.output and args.output != "-":
        path = Path(args.output).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(path, 0o600)
        _err(f"kubeconfig written to {path} (use: KUBECONFIG={path} kubectl get ws)")
    else:
        _out(text)
    return 0


async def _whoami_with(conn: Conn, token: str) -> str:
    from codehub.crd_like.client.api import ApiClient, ApiError

    try:
        async with ApiClient(
            conn.server, token, ca_file=conn.ca_file, insecure=conn.insecure, ca_data=conn.ca_pem
        ) as api:
            return await whoami_namespace(api) or ""
    except ApiError:
        return ""


def _find_ca_pem(conn: Conn) -> str | None:
    candidates = [conn.ca_file, os.environ.get("CODEHUB_TLS_CERT")]
    state_dir = os.environ.get("CODEHUB_STATE_DIR") or ".codehub-dev"
    candidates.append(str(Path(state_dir) / "tls" / "server.crt"))
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            try:
                return Path(candidate).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise CliError(f"cannot read CA file {candidate}: {exc}") from None
    return None


# -- launchers ------------------------------------------------------------------------


def cmd_server(args: argparse.Namespace) -> int:
    run_server = _load("codehub.crd_like.server.app", "run_server", "server")
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


def cmd_crd(args: argparse.Namespace) -> int:
    render = _load("codehub.crd_like.crd", "render_crd_yaml", "crd")
    text = str(render())
    _out(text if text.endswith("\n") else text + "\n")
    return 0


def cmd_db_migrate(args: argparse.Namespace) -> int:
    migrate = _load("codehub.crd_like.store.postgres", "migrate", "db migrate")
    settings = load_settings()
    url = args.database_url or settings.database_url
    if not url:
        raise CliError("no database: set CODEHUB_DATABASE_URL or pass --database-url")

    async def go() -> int:
        await migrate(url)
        return 0

    code = _run(go)
    _out("database migrated\n")
    return code


def cmd_coordinator(args: argparse.Namespace) -> int:
    run_coordinator = _load("codehub.operator.coordinator", "run_coordinator", "coordinator")
    settings = _with_connection_flags(load_settings(), args)
    labels = {**settings.scope_labels, **parse_labels(args.scope_label)}
    host, port = args.listen
    _configure_logging()
    try:
        if labels:
            run_coordinator(settings, host, port, scope_labels=labels)
        else:
            run_coordinator(settings, host, port)
    except SystemExit as exc:
        if isinstance(exc.code, str):
            raise CliError(exc.code) from None
        return int(exc.code or 0)
    return 0


def _with_connection_flags(settings: Settings, args: argparse.Namespace) -> Settings:
    """--server/--token/--ca-file given on the command line win over the environment."""
    from dataclasses import replace

    changes = {
        key: _opt(args, key)
        for key in ("server", "token", "ca_file")
        if _opt(args, key) is not None
    }
    return replace(settings, **changes) if changes else settings


def cmd_dev(args: argparse.Namespace) -> int:
    fn_name = "up" if args.dev_command == "up" else "down"
    fn = _load("codehub.operator.devstack", fn_name, f"dev {fn_name}")
    settings = load_settings()
    result = fn(settings, args.detach) if fn_name == "up" else fn(settings)
    return int(result or 0)


# -- parser ---------------------------------------------------------------------------


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

    p = add("apply", "create or update workspaces from YAML/JSON manifests")
    p.add_argument(
        "-f",
        "--filename",
        action="append",
        required=True,
        help="file, directory (recursive *.yaml, *.yml, *.json) or - for stdin; repeatable",
    )
    _ns(p)
    p.set_defaults(func=cmd_apply)

    p = add("get", "list or show workspaces")
    p.add_argument("resource", help="ws | workspace | workspaces (or ws/NAME)")
    p.add_argument("name", nargs="?")
    _ns(p, all_namespaces=True)
    p.add_argument("-o", "--output", choices=("wide", "yaml", "json", "name"))
    p.add_argument("-l", "--selector", help="label selector, e.g. team=a")
    p.add_argument("-w", "--watch", action="store_true", help="after listing, watch for changes")
    p.set_defaults(func=cmd_get)

    p = add("describe", "show a workspace with its status, error and recent events")
    p.add_argument("resource")
    p.add_argument("name", nargs="?")
    _ns(p)
    p.set_defaults(func=cmd_describe)

    p = add("delete", "delete workspaces")
    p.add_argument("resource")
    p.add_argument("names", nargs="*")
    _ns(p)
    p.add_argument("--wait", action="store_true", help="wait until the workspace is gone")
    p.add_argument("--timeout", type=_duration_arg, default=300.0, help="for --wait (300s)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=cmd_delete)

    for verb, what in (
        ("start", "set desired_state RUNNING"),
        ("stop", "set desired_state STANDBY"),
        ("archive", "set desired_state PENDING (archive to object storage)"),
    ):
        p = add(verb, what)
        p.add_argument("name")
        _ns(p)
        p.add_argument("--wait", action="store_true", help="wait for the matching display")
        p.add_argument("--timeout", type=_duration_arg, default=300.0)
        p.set_defaults(func=cmd_set_desired)

    p = add("recover", "administrators: clear a workspace's error so it converges again")
    p.add_argument("name")
    _ns(p)
    p.set_defaults(func=cmd_recover)

    p = add("wait", "wait for a workspace condition, e.g. --for=display=RUNNING")
    p.add_argument("resource")
    p.add_argument("name", nargs="?")
    _ns(p)
    p.add_argument("--for", dest="for_", required=True, help="display=RUNNING, delete, ...")
    p.add_argument("--timeout", type=_duration_arg, default=300.0, help="e.g. 300s, 5m")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=cmd_wait)

    p = add("kubeconfig", "print or write a kubeconfig (CA embedded) for kubectl")
    p.add_argument("--user-token", help="token to put in the kubeconfig (default: yours)")
    p.add_argument("-o", "--output", help="write to this file (mode 0600) instead of stdout")
    _ns(p)
    p.set_defaults(func=cmd_kubeconfig)

    p = add("server", "run the API server")
    p.add_argument("--listen", type=_listen_arg, default=_listen_arg(DEFAULT_LISTEN))
    p.add_argument("--insecure-http", action="store_true", help="serve plain HTTP (tests)")
    p.set_defaults(func=cmd_server)

    p = add("crd", "print the Workspace CustomResourceDefinition")
    p.set_defaults(func=cmd_crd)

    p = add("db", "database maintenance")
    dbsub = p.add_subparsers(dest="db_command", metavar="ACTION")
    dbsub.required = True
    m = dbsub.add_parser("migrate", help="apply schema migrations (idempotent)")
    _common(m)
    m.add_argument("--database-url", help="default: CODEHUB_DATABASE_URL")
    m.set_defaults(func=cmd_db_migrate)

    p = add("coordinator", "run the coordinator (leader election, operator, monitors)")
    p.add_argument("--listen", type=_listen_arg, default=_listen_arg(DEFAULT_COORDINATOR_LISTEN))
    p.add_argument(
        "--scope-label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="label added to (and filtering) every container and volume; repeatable "
        "(env CODEHUB_SCOPE_LABELS=k=v,k2=v2)",
    )
    p.set_defaults(func=cmd_coordinator)

    p = add("dev", "the embedded local stack")
    devsub = p.add_subparsers(dest="dev_command", metavar="ACTION")
    devsub.required = True
    up = devsub.add_parser("up", help="start services, server, coordinator and a demo")
    _common(up)
    up.add_argument("--detach", action="store_true", help="leave it running and return")
    up.set_defaults(func=cmd_dev)
    down = devsub.add_parser("down", help="stop what `dev up` started")
    _common(down)
    down.set_defaults(func=cmd_dev, detach=False)
    return parser


# -- entry point ----------------------------------------------------------------------

_SECRETS: list[str] = []


def _err(line: str) -> None:
    for secret in _SECRETS:
        if secret:
            line = line.replace(secret, "***")
    sys.stderr.write(line.rstrip("\n") + "\n")
    sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    _SECRETS[:] = [
        t for t in (_opt(args, "token"), os.environ.get("CODEHUB_TOKEN")) if t and len(t) >= 8
    ]
    debug = bool(_opt(args, "debug"))
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # one line for everything; --debug shows the trace
        if debug:
            traceback.print_exc()
        _err(_describe_failure(exc))
        return 1


def _describe_failure(exc: BaseException) -> str:
    from codehub.crd_like.client.api import ApiError
    from codehub.crd_like.client.manifests import ManifestError
    from codehub.operator.cli_output import format_api_error, one_line

    if isinstance(exc, ManifestError):
        problems = exc.problems
        head = f"error: {one_line(problems[0])}"
        if len(problems) > 1:
            rest = " | ".join(one_line(p) for p in problems[1:])
            head += f" | {rest}"
        return head + " (nothing was applied)"
    if isinstance(exc, ApiError):
        return format_api_error(exc)
    if isinstance(exc, CliError):
        return f"error: {one_line(str(exc))}"
    text = one_line(str(exc)) or type(exc).__name__
    return f"error: unexpected {type(exc).__name__}: {text} (run with --debug for details)"


if __name__ == "__main__":
    sys.exit(main())
