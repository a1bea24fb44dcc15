"""Pure parts of the proxy: upstream URL building, header rules, close codes, Origin,
and the in-memory activity store (same contract as the PostgreSQL one)."""

from __future__ import annotations

import datetime as dt

import pytest
import yarl
from aiohttp.test_utils import make_mocked_request

from codehub.crd_like.proxy.forward import strip_session_cookie, upstream_headers
from codehub.crd_like.proxy.gate import endpoint_of, same_origin, upstream_url
from codehub.crd_like.proxy.routing import Forward
from codehub.crd_like.proxy.websocket import sendable
from codehub.crd_like.store.activity import MemoryActivityStore

FWD = Forward("alice", "ws", "/a%20b/c", "x=%2F&y=1")


@pytest.mark.parametrize(
    ("base", "websocket", "expected"),
    [
        ("http://127.0.0.1:8080", False, "http://127.0.0.1:8080/a%20b/c?x=%2F&y=1"),
        ("http://127.0.0.1:8080/", False, "http://127.0.0.1:8080/a%20b/c?x=%2F&y=1"),
        ("http://svc.ns:80/base/", False, "http://svc.ns/base/a%20b/c?x=%2F&y=1"),
        ("https://h", True, "wss://h/a%20b/c?x=%2F&y=1"),
        ("http://h:1", True, "ws://h:1/a%20b/c?x=%2F&y=1"),
    ],
)
def test_upstream_url_keeps_raw_path_and_query(base: str, websocket: bool, expected: str) -> None:
    url = upstream_url(yarl.URL(base), FWD, websocket=websocket)
    assert str(url) == expected


@pytest.mark.parametrize(
    ("endpoint", "ok"),
    [
        ("http://127.0.0.1:1234", True),
        ("https://h", True),
        ("ftp://h", False),
        ("http://", False),
        ("", False),
        (None, False),
        (5, False),
    ],
)
def test_endpoint_of(endpoint: object, ok: bool) -> None:
    obj = {"metadata": {"name": "ws"}, "status": {"endpoint": endpoint}}
    assert (endpoint_of(obj) is not None) is ok


def test_no_endpoint_while_deleting() -> None:
    obj = {"metadata": {"deletionTimestamp": "x"}, "status": {"endpoint": "http://h:1"}}
    assert endpoint_of(obj) is None


def test_headers_forwarded_without_credentials_and_hop_by_hop() -> None:
    request = make_mocked_request(
        "GET",
        "/w/alice/ws/x",
        headers={
            "Host": "hub:8443",
            "Authorization": "Bearer secret",
            "Cookie": "codehub_session=abc; a=1",
            "Connection": "keep-alive, X-Drop",
            "X-Drop": "1",
            "Keep-Alive": "5",
            "X-Forwarded-Prefix": "/evil",
            "Accept": "text/html",
        },
    )
    out = upstream_headers(request, Forward("alice", "ws", "/x", ""))
    keys = {k.lower() for k in out}
    assert not keys & {"authorization", "connection", "keep-alive", "x-drop", "host"}
    assert out["Cookie"] == "a=1"
    assert out["Accept"] == "text/html"
    assert out["X-Forwarded-Prefix"] == "/w/alice/ws"
    assert out["X-Forwarded-Host"] == "hub:8443"
    assert len(out.getall("X-Forwarded-Prefix")) == 1


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("codehub_session=x", ""),
        ("a=1; codehub_session=x; b=2", "a=1; b=2"),
        ("codehub_sessionx=1", "codehub_sessionx=1"),
    ],
)
def test_strip_session_cookie(header: str, expected: str) -> None:
    assert strip_session_cookie(header) == expected


@pytest.mark.parametrize(
    ("code", "sent"),
    [
        (None, 1000),
        (1000, 1000),
        (1005, 1000),
        (1006, 1011),
        (1015, 1011),
        (4001, 4001),
        (3000, 3000),
        (999, 1011),
        (5000, 1011),
        (1004, 1011),
    ],
)
def test_close_codes_on_the_wire(code: int | None, sent: int) -> None:
    assert sendable(code) == sent


@pytest.mark.parametrize(
    ("origin", "host", "ok"),
    [
        (None, "hub:8443", True),
        ("https://hub:8443", "hub:8443", True),
        ("https://HUB:8443", "hub:8443", True),
        ("https://hub", "hub", True),
        ("https://hub:8443", "hub", False),
        ("https://evil.example", "hub:8443", False),
        ("null", "hub:8443", False),
    ],
)
def test_same_origin(origin: str | None, host: str, ok: bool) -> None:
    headers = {"Host": host} | ({"Origin": origin} if origin is not None else {})
    assert same_origin(make_mocked_request("GET", "/w/a/b/", headers=headers)) is ok


async def test_memory_activity_store_contract() -> None:
    store = MemoryActivityStore()
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    ttl = 60.0
    await store.set_open("r1", "u", 2, now)
    await store.set_open("r2", "u", 1, now - dt.timedelta(seconds=61))
    assert await store.open_connections("u", now, ttl) == 2
    assert await store.expire(now, ttl) == 1
    await store.set_open("r1", "u", 0, now)
    assert await store.open_connections("u", now, ttl) == 0
    assert await store.claim_write("u", now, 30) is True
    assert await store.claim_write("u", now + dt.timedelta(seconds=29), 30) is False
    assert await store.last_write("u") == now
    assert await store.claim_write("u", now + dt.timedelta(seconds=30), 30) is True
    assert await store.use_link("l", now) is True
    assert await store.use_link("l", now) is False
