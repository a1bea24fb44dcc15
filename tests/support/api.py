"""The in-process API: ``create_app`` over a MemoryStore or a PostgresStore, served on
127.0.0.1 by aiohttp's test server, with a static token file and clients per identity.

Tests get it through the ``make_api`` fixture (tests/conftest.py)::

    async def test_x(make_api: ApiFactory) -> None:
        api = await make_api()                                   # MemoryStore
        api = await make_api("postgres", bookmark_interval=0.3)  # + ApiConfig fields
        await api.http.get(path, headers=api.headers("alice"))   # raw HTTP (TestClient)
        ws = await api.client("operator").get("alice", "w")      # ApiClient

Everything a factory opened is closed when the test ends.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from codehub.crd_like.client.api import ApiClient
from codehub.crd_like.config import ApiConfig
from codehub.crd_like.server.app import create_app
from codehub.crd_like.store.interface import Store
from codehub.crd_like.store.memory import MemoryStore

Backend = Literal["memory", "postgres"]


@dataclass(frozen=True)
class Identity:
    """One row of the static token file."""

    token: str
    user: str
    uid: str
    groups: tuple[str, ...] = ()

    def csv(self) -> str:
        groups = f',"{",".join(self.groups)}"' if self.groups else ""
        return f"{self.token},{self.user},{self.uid}{groups}"


#: The default identities, by the name tests use for them.
IDENTITIES: dict[str, Identity] = {
    "alice": Identity("alice-t", "alice", "u-alice"),
    "bob": Identity("bob-t", "bob", "u-bob"),
    "admin": Identity("admin-t", "admin", "u-admin", ("codehub:admin",)),
    "operator": Identity(
        "operator-t", "codehub-operator", "u-operator", ("codehub:operator", "codehub:admin")
    ),
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class ApiHarness:
    """One running server: its store, its config, raw HTTP and ApiClients."""

    http: TestClient[Any, Any]
    store: Store
    config: ApiConfig
    identities: dict[str, Identity]
    _clients: list[ApiClient] = field(default_factory=list)
    _owns_store: bool = True
    _closed: bool = False

    @property
    def url(self) -> str:
        """The server's base URL, ``http://127.0.0.1:PORT``."""
        return str(self.http.make_url("")).rstrip("/")

    def headers(self, who: str) -> dict[str, str]:
        """The Authorization header of identity ``who``."""
        return bearer(self.identities[who].token)

    def client(self, who: str, **options: Any) -> ApiClient:
        """An ApiClient with ``who``'s token, closed with the harness."""
        c = ApiClient(self.url, self.identities[who].token, **options)
        self._clients.append(c)
        return c

    async def close(self) -> None:
        """Idempotent: a test may stop a server early (a restart, say)."""
        if self._closed:
            return
        self._closed = True
        for c in self._clients:
            await c.close()
        await self.http.close()
        if self._owns_store:
            await self.store.close()


class ApiFactory(Protocol):
    def __call__(
        self,
        backend: Backend = "memory",
        *,
        identities: Mapping[str, Identity] | Sequence[Identity] | None = None,
        store: Store | None = None,
        store_options: Mapping[str, Any] | None = None,
        serve: Mapping[str, Any] | None = None,
        **config: Any,
    ) -> Awaitable[ApiHarness]: ...


async def start_api(
    tmp_path: Path,
    database_url: str | None,
    *,
    identities: Mapping[str, Identity] | Sequence[Identity] | None = None,
    store: Store | None = None,
    store_options: Mapping[str, Any] | None = None,
    serve: Mapping[str, Any] | None = None,
    **config: Any,
) -> ApiHarness:
    """Start one server. Without ``store``, a new MemoryStore (``database_url`` None) or
    PostgresStore (``store_options`` go to ``PostgresStore.open``; the default polls
    every 0.5 s) that the harness closes; a given ``store`` is left open. ``serve`` goes
    to aiohttp's server start as ``codehub server`` sets it (``ssl``, ``access_log_class``,
    ``access_log``); with ``ssl`` the URL is https."""
    named = _named(identities)
    tokens = _token_file(tmp_path, named)
    owns = store is None
    if store is None:
        store = await _open_store(database_url, store_options)
    settings = ApiConfig(
        database_url=database_url or "",
        token_file=str(tokens),
        state_dir=tmp_path / "state",
    )
    settings = dataclasses.replace(settings, **config)
    server = TestServer(create_app(settings, store), host="127.0.0.1")
    http = TestClient(server)
    try:
        await server.start_server(**(serve or {}))
        await http.start_server()
    except BaseException:
        if owns:
            await store.close()
        raise
    return ApiHarness(http, store, settings, named, _owns_store=owns)


async def _open_store(database_url: str | None, options: Mapping[str, Any] | None) -> Store:
    if database_url is None:
        return MemoryStore()
    from codehub.crd_like.store.postgres import PostgresStore

    return await PostgresStore.open(database_url, **{"watch_poll_interval": 0.5, **(options or {})})


def _token_file(folder: Path, named: Mapping[str, Identity]) -> Path:
    path = folder / f"tokens-{len(list(folder.glob('tokens-*')))}.csv"
    path.write_text("".join(i.csv() + "\n" for i in named.values()))
    return path


def _named(identities: Mapping[str, Identity] | Sequence[Identity] | None) -> dict[str, Identity]:
    if identities is None:
        return dict(IDENTITIES)
    if isinstance(identities, Mapping):
        return dict(identities)
    return {i.user: i for i in identities}


async def serve_app(app: web.Application) -> tuple[web.AppRunner, str]:
    """Serve any aiohttp app (a fake server, say) on 127.0.0.1; returns runner and URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"
