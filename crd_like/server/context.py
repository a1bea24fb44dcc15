"""What every handler shares: configuration, store, authentication, metrics, helpers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from codehub.crd_like.config import ApiConfig
from codehub.crd_like.crd import printer_columns
from codehub.crd_like.identity import GROUP, KIND, LIST_KIND, PLURAL, VERSION
from codehub.crd_like.store.interface import AdmissionCheck, Selectors, Store, StoreError

from .admission import running_limit_check
from .auth import Identity, TokenAuthenticator
from .metrics import ApiMetrics
from .status import ApiError, bad_request, from_store_error

CTX_KEY: web.AppKey[ServerContext] = web.AppKey("codehub_ctx")
IDENTITY_KEY: web.RequestKey[Identity] = web.RequestKey("codehub_identity")
VERB_KEY: web.RequestKey[str] = web.RequestKey("codehub_verb")
RESOURCE_KEY: web.RequestKey[str] = web.RequestKey("codehub_resource")


@dataclass(frozen=True)
class ResourceKind:
    plural: str  # also the store's kind
    group: str
    version: str
    kind: str
    list_kind: str
    namespaced: bool = True
    columns: tuple[dict[str, Any], ...] = ()
    #: field selector paths the store filters on (dotted paths into the body)
    field_labels: frozenset[str] = frozenset({"metadata.name", "metadata.namespace"})

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


WORKSPACES = ResourceKind(
    PLURAL,
    GROUP,
    VERSION,
    KIND,
    LIST_KIND,
    columns=tuple(printer_columns()),
)
EVENTS = ResourceKind(
    "events",
    "",
    "v1",
    "Event",
    "EventList",
    columns=(
        {"name": "Last Seen", "type": "date", "jsonPath": ".lastTimestamp"},
        {"name": "Type", "type": "string", "jsonPath": ".type"},
        {"name": "Reason", "type": "string", "jsonPath": ".reason"},
        {"name": "Object", "type": "string", "jsonPath": ".involvedObject.name"},
        {"name": "Message", "type": "string", "jsonPath": ".message"},
    ),
    field_labels=frozenset(
        {
            "metadata.name",
            "metadata.namespace",
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        }
    ),
)
NAMESPACES = ResourceKind(
    "namespaces",
    "",
    "v1",
    "Namespace",
    "NamespaceList",
    namespaced=False,
    columns=(
        {"name": "Status", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ),
)


@dataclass
class ServerContext:
    config: ApiConfig
    store: Store
    auth: TokenAuthenticator
    metrics: ApiMetrics = field(default_factory=ApiMetrics)
    admit: AdmissionCheck | None = None
    started_at: str = ""
    #: Handler tasks of open watch and SSE streams, cancelled on shutdown so a
    #: restart does not wait for clients to hang up.
    streams: set[asyncio.Task[Any]] = field(default_factory=set)
    #: Open watch and SSE streams per user, bounded by ``max_streams_per_user``.
    open_streams: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.admit is None:
            self.admit = running_limit_check(
                self.config.max_running_per_user, self.config.max_running_global
            )


def ctx_of(request: web.Request) -> ServerContext:
    return request.app[CTX_KEY]


@contextlib.contextmanager
def tracked_stream(request: web.Request) -> Iterator[None]:
    """Register the current handler as a long-lived stream for the shutdown hook."""
    streams = ctx_of(request).streams
    task = asyncio.current_task()
    if task is not None:
        streams.add(task)
    try:
        yield
    finally:
        if task is not None:
            streams.discard(task)


@contextlib.contextmanager
def stream_slot(request: web.Request) -> Iterator[None]:
    """Hold one of the user's ``max_streams_per_user`` stream slots; 429 when none is
    free, so one identity cannot pin the server's connections and store watches."""
    ctx = ctx_of(request)
    user = identity_of(request).user
    held = ctx.open_streams.get(user, 0)
    if held >= ctx.config.max_streams_per_user:
        raise ApiError(
            429,
            f'too many open watches and event streams for user "{user}": at most '
            f"{ctx.config.max_streams_per_user} at once; close one first",
            reason="TooManyRequests",
            details={"retryAfterSeconds": 1},
        )
    ctx.open_streams[user] = held + 1
    try:
        yield
    finally:
        left = ctx.open_streams.get(user, 1) - 1
        if left > 0:
            ctx.open_streams[user] = left
        else:
            ctx.open_streams.pop(user, None)


def identity_of(request: web.Request) -> Identity:
    ident = request.get(IDENTITY_KEY)
    if not isinstance(ident, Identity):
        raise ApiError(401, "Unauthorized")
    return ident


def mark(request: web.Request, verb: str, resource: str) -> None:
    request[VERB_KEY] = verb
    request[RESOURCE_KEY] = resource


def authorize(
    request: web.Request,
    verb: str,
    rk: ResourceKind,
    namespace: str | None,
    *,
    name: str = "",
    subresource: str = "",
) -> Identity:
    """Namespace ownership rules; raises 403 with the message a real cluster sends."""
    ident = identity_of(request)
    resource = f"{rk.plural}/{subresource}" if subresource else rk.plural
    allowed = True
    if rk.namespaced and namespace is None:
        allowed = ident.privileged
    elif namespace is not None and not ident.may_access_namespace(namespace):
        allowed = False
    if subresource == "status" and verb in ("update", "patch") and not ident.may_write_status:
        allowed = False
    if allowed:
        return ident
    what = f'{rk.qualified} "{name}"' if name else rk.qualified
    scope = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    raise ApiError(
        403,
        f'{what} is forbidden: User "{ident.user}" cannot {verb} resource "{resource}" '
        f'in API group "{rk.group}"{scope}',
        details={"name": name, "group": rk.group, "kind": rk.plural},
    )


def store_error(exc: StoreError, rk: ResourceKind, name: str) -> ApiError:
    return from_store_error(exc, resource=rk.plural, group=rk.group, kind=rk.kind, name=name)


#: ``json.dumps(..., separators=(",", ":"))`` without making an encoder per call.
_COMPACT = json.JSONEncoder(separators=(",", ":"))


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=_COMPACT.encode(body).encode(),
        status=status,
        content_type="application/json",
    )


async def read_body(request: web.Request) -> bytes:
    limit = ctx_of(request).config.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise too_large(request.content_length, limit)
    content = request.content
    if content.is_eof():
        # The whole body came with the headers (a small PATCH does): nothing to wait
        # for, so no timer (docs/adr/0007-api-write-path-performance.md).
        data = content.read_nowait()
        if len(data) > limit:
            raise too_large(len(data), limit)
        return data
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(ctx_of(request).config.body_timeout):
            async for chunk in request.content.iter_chunked(65536):
                size += len(chunk)
                if size > limit:
                    raise too_large(size, limit)
                chunks.append(chunk)
    except TimeoutError:
        # A client trickling its body would hold a handler for ever (docs/security.md).
        raise ApiError(408, "the request body did not arrive in time", reason="Timeout") from None
    return b"".join(chunks)


def too_large(size: int, limit: int) -> ApiError:
    return ApiError(
        413,
        f"the request body is too large: {size} bytes exceeds the limit of {limit} bytes",
        reason="RequestEntityTooLarge",
    )


_LABEL_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


def _bad_selector(part: str, why: str) -> ApiError:
    return bad_request(f"unable to parse requirement {part[:64]!r}: {why}", "labelSelector")


def parse_label_selector(raw: str | None) -> tuple[dict[str, str], dict[str, str]]:
    """``key=value``, ``key==value`` and ``key!=value`` requirements: (equal, not equal).

    Keys and values must be valid label keys and values, so ``===`` or ``=`` alone is a
    400 rather than a selector that silently matches nothing.
    """
    equal: dict[str, str] = {}
    not_equal: dict[str, str] = {}
    if not raw:
        return equal, not_equal
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        if "!=" in part:
            key, _, value = part.partition("!=")
            target = not_equal
        elif "==" in part:
            key, _, value = part.partition("==")
            target = equal
        elif "=" in part:
            key, _, value = part.partition("=")
            target = equal
        else:
            raise _bad_selector(part, "only key=value, key==value and key!=value are supported")
        key, value = key.strip(), value.strip()
        if not _LABEL_KEY.match(key) or len(key) > 317:
            raise _bad_selector(part, "the key is not a valid label key")
        if not _LABEL_VALUE.match(value) or len(value) > 63:
            raise _bad_selector(part, "the value is not a valid label value")
        target[key] = value
    return equal, not_equal


def parse_field_selector(raw: str | None, rk: ResourceKind) -> dict[str, str]:
    out: dict[str, str] = {}
    if not raw:
        return out
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        if "!=" in part or "=" not in part:
            raise bad_request(
                f"unsupported field selector {part!r}: only equality is supported",
                "fieldSelector",
            )
        key, _, value = part.replace("==", "=", 1).partition("=")
        key = key.strip()
        if key not in rk.field_labels:
            raise bad_request(
                f'"{key}" is not a known field selector: only '
                + ", ".join(f'"{k}"' for k in sorted(rk.field_labels)),
                "fieldSelector",
            )
        out[key] = value.strip()
    return out


def selectors_of(request: web.Request, rk: ResourceKind) -> Selectors | None:
    labels, not_labels = parse_label_selector(request.query.get("labelSelector"))
    fields = parse_field_selector(request.query.get("fieldSelector"), rk)
    if not labels and not fields and not not_labels:
        return None
    return Selectors(labels=labels, fields=fields, not_labels=not_labels)


def query_bool(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("true", "1")


def query_int(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"{name} must be an integer, got {raw!r}", name) from None
    if value < 0:
        raise bad_request(f"{name} must not be negative", name)
    return value
