"""ApiClient against a small in-process aiohttp fake (unit level: no real server)."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from support.api import serve_app

from codehub.crd_like.client.api import ApiClient, ApiConnectionError, ApiError
from codehub.crd_like.client.transport import MAX_RETRIES, MAX_RETRY_WAIT, retry_wait

TOKEN = "s3cr3t-token-value"


def _status(code: int, reason: str, message: str, **details: Any) -> web.Response:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
        "details": details,
    }
    return web.json_response(body, status=code)


class Fake:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str], str, bytes]] = []
        self.watch_lines: list[dict[str, Any]] = []
        #: When set, the watch stream is written as these raw chunks instead.
        self.watch_chunks: list[bytes] = []
        self.refusals: dict[str, int] = {}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            (
                request.method,
                request.path,
                dict(request.query),
                request.headers.get("Content-Type", ""),
                body,
            )
        )
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return _status(401, "Unauthorized", "Unauthorized")
        name = request.match_info.get("name", "")
        if request.method == "POST" and body.startswith(b"{"):
            name = (json.loads(body).get("metadata") or {}).get("name", "")
        if request.query.get("watch") == "true":
            resp = web.StreamResponse()
            await resp.prepare(request)
            for line in self.watch_lines:
                await resp.write(json.dumps(line).encode() + b"\n")
            for chunk in self.watch_chunks:
                await resp.write(chunk)
            await resp.write_eof()
            return resp
        if "limit" in request.query:
            start = int(request.query.get("continue") or 0)
            size = int(request.query["limit"])
            items = [{"metadata": {"name": f"w{i}"}} for i in range(start, min(start + size, 5))]
            meta: dict[str, Any] = {"resourceVersion": "40"}
            if start + size < 5:
                meta["continue"] = str(start + size)
            return web.json_response({"kind": "WorkspaceList", "metadata": meta, "items": items})
        if name == "missing":
            return _status(404, "NotFound", 'workspaces.codehub.io "missing" not found')
        if name == "invalid":
            return _status(
                422,
                "Invalid",
                'Workspace.codehub.io "invalid" is invalid',
                causes=[
                    {
                        "field": "spec.desired_state",
                        "reason": "FieldValueNotSupported",
                        "message": 'Unsupported value: "FLYING"',
                    }
                ],
            )
        if name == "limit":
            return web.json_response(
                {
                    "error": "workspace_limit_exceeded",
                    "message": "limit reached",
                    "details": {"limit_type": "per_user", "current": 2, "max": 2},
                },
                status=429,
            )
        if name.startswith("busy-"):
            # busy-N: the first N requests for the name are refused with Retry-After 0.
            refused = self.refusals.get(name, 0)
            limit = 10**6 if name == "busy-forever" else int(name.split("-")[1])
            if refused < limit:
                self.refusals[name] = refused + 1
                response = _status(503, "ServiceUnavailable", "the database is unavailable")
                response.headers["Retry-After"] = "0"
                return response
        if name == "slow-busy":
            self.refusals[name] = self.refusals.get(name, 0) + 1
            await asyncio.sleep(0.6)
            response = _status(503, "ServiceUnavailable", "the pool timed out")
            response.headers["Retry-After"] = "0"
            return response
        if name == "unavailable":
            return _status(503, "ServiceUnavailable", "no Retry-After: not to be retried")
        if name == "html":
            return web.Response(status=502, text="<html>bad gateway</html>")
        return web.json_response(
            {
                "kind": "Workspace",
                "metadata": {"name": name, "resourceVersion": "7"},
                "echo": json.loads(body) if body else None,
            }
        )


@pytest.fixture
async def fake() -> AsyncIterator[tuple[Fake, str]]:
    f = Fake()
    app = web.Application()
    app.router.add_route(
        "*", "/apis/codehub.io/v1alpha1/namespaces/{ns}/workspaces/{name}", f.handle
    )
    app.router.add_route(
        "*", "/apis/codehub.io/v1alpha1/namespaces/{ns}/workspaces/{name}/status", f.handle
    )
    app.router.add_route("*", "/apis/codehub.io/v1alpha1/namespaces/{ns}/workspaces", f.handle)
    app.router.add_route("*", "/apis/codehub.io/v1alpha1/workspaces", f.handle)
    app.router.add_route("*", "/api/v1/namespaces/{ns}/events", f.handle)
    runner, url = await serve_app(app)
    yield f, url
    await runner.cleanup()


async def test_paths_methods_and_content_types(fake: tuple[Fake, str]) -> None:
    f, url = fake
    async with ApiClient(url, TOKEN) as api:
        await api.get("alice", "w1")
        await api.list("alice", label_selector="a=b")
        await api.list()
        await api.create("alice", {"metadata": {"name": "w1"}})
        await api.patch_merge("alice", "w1", {"spec": {"desired_state": "STANDBY"}})
        await api.patch_merge("alice", "w1", {"status": {}}, status=True)
        await api.patch_json("alice", "w1", [{"op": "test", "path": "/x", "value": 1}])
        await api.delete("alice", "w1")
        await api.list_events("alice", "w1")
    seen = [(m, p, ct) for m, p, _q, ct, _b in f.requests]
    base = "/apis/codehub.io/v1alpha1"
    assert seen == [
        ("GET", f"{base}/namespaces/alice/workspaces/w1", ""),
        ("GET", f"{base}/namespaces/alice/workspaces", ""),
        ("GET", f"{base}/workspaces", ""),
        ("POST", f"{base}/namespaces/alice/workspaces", "application/json"),
        ("PATCH", f"{base}/namespaces/alice/workspaces/w1", "application/merge-patch+json"),
        ("PATCH", f"{base}/namespaces/alice/workspaces/w1/status", "application/merge-patch+json"),
        ("PATCH", f"{base}/namespaces/alice/workspaces/w1", "application/json-patch+json"),
        ("DELETE", f"{base}/namespaces/alice/workspaces/w1", ""),
        ("GET", "/api/v1/namespaces/alice/events", ""),
    ]
    assert f.requests[1][2] == {"labelSelector": "a=b"}
    assert f.requests[8][2] == {"fieldSelector": "involvedObject.name=w1"}


async def test_status_errors_are_parsed(fake: tuple[Fake, str]) -> None:
    _f, url = fake
    async with ApiClient(url, TOKEN) as api:
        with pytest.raises(ApiError) as nf:
            await api.get("alice", "missing")
        assert nf.value.not_found
        assert nf.value.reason == "NotFound"
        assert "missing" in nf.value.message
        with pytest.raises(ApiError) as inv:
            await api.get("alice", "invalid")
        assert inv.value.invalid
        assert inv.value.causes[0]["field"] == "spec.desired_state"
        with pytest.raises(ApiError) as lim:
            await api.get("alice", "limit")
        assert lim.value.too_many_requests
        assert lim.value.reason == "workspace_limit_exceeded"
        assert lim.value.details["limit_type"] == "per_user"
        with pytest.raises(ApiError) as html:
            await api.get("alice", "html")
        assert html.value.status == 502
        assert "bad gateway" in html.value.message


async def test_token_never_in_errors(fake: tuple[Fake, str]) -> None:
    _f, url = fake
    async with ApiClient(url, "wrong-" + TOKEN) as api:
        assert TOKEN not in repr(api)
        with pytest.raises(ApiError) as err:
            await api.get("alice", "w1")
    assert err.value.unauthorized
    assert TOKEN not in str(err.value)
    assert TOKEN not in repr(err.value)


async def test_connection_refused_is_one_clean_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with ApiClient(f"http://127.0.0.1:{port}", TOKEN) as api:
        with pytest.raises(ApiConnectionError) as err:
            await api.get("alice", "w1")
    assert isinstance(err.value, ConnectionError)
    assert isinstance(err.value, ApiError)
    assert "cannot connect" in str(err.value)
    assert "\n" not in str(err.value)
    assert TOKEN not in str(err.value)


async def test_missing_ca_file_is_clean(tmp_path: Any) -> None:
    async with ApiClient("https://127.0.0.1:1", TOKEN, ca_file=str(tmp_path / "nope.crt")) as api:
        with pytest.raises(ApiConnectionError) as err:
            await api.get("alice", "w1")
    assert "CA file" in str(err.value)


async def test_watch_bookmarks_advance_rv_and_are_not_yielded(fake: tuple[Fake, str]) -> None:
    f, url = fake
    f.watch_lines = [
        {"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "5"}}},
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}},
        {"type": "MODIFIED", "object": {"metadata": {"name": "a", "resourceVersion": "11"}}},
        {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}},
    ]
    async with ApiClient(url, TOKEN) as api:
        watch = api.watch(
            "alice", resource_version="3", field_selector="metadata.name=a", timeout_seconds=5
        )
        events = [(t, o["metadata"]["resourceVersion"]) async for t, o in watch]
        assert events == [("ADDED", "5"), ("MODIFIED", "11")]
        assert watch.resource_version == "12"
    q = f.requests[-1][2]
    assert q["watch"] == "true"
    assert q["resourceVersion"] == "3"
    assert q["fieldSelector"] == "metadata.name=a"
    assert q["timeoutSeconds"] == "5"


async def test_watch_events_split_and_joined_across_chunks(fake: tuple[Fake, str]) -> None:
    """Many events in one chunk, one event over several chunks, a last line without a
    newline: every event once, in order."""
    f, url = fake
    lines = [
        json.dumps({"type": "MODIFIED", "object": {"metadata": {"name": f"w{i}", "i": i}}})
        for i in range(60)
    ]
    stream = ("\n".join(lines[:59]) + "\n\n" + lines[59]).encode()
    f.watch_chunks = [stream[:5], stream[5:4000], stream[4000:4001], stream[4001:]]
    assert b"\n" not in f.watch_chunks[0]
    async with ApiClient(url, TOKEN) as api:
        seen = [o["metadata"]["i"] async for _, o in api.watch("alice", timeout_seconds=5)]
    assert seen == list(range(60))


async def test_watch_410_raises(fake: tuple[Fake, str]) -> None:
    f, url = fake
    f.watch_lines = [
        {
            "type": "ERROR",
            "object": {
                "kind": "Status",
                "code": 410,
                "reason": "Expired",
                "message": "too old resource version: 1 (50)",
            },
        },
    ]
    async with ApiClient(url, TOKEN) as api:
        with pytest.raises(ApiError) as err:
            async for _ in api.watch("alice", resource_version="1"):
                pass
    assert err.value.gone


async def test_list_follows_continue_tokens(fake: tuple[Fake, str]) -> None:
    f, url = fake
    async with ApiClient(url, TOKEN) as api:
        result = await api.list("alice", limit=2)
    assert [i["metadata"]["name"] for i in result["items"]] == [f"w{i}" for i in range(5)]
    assert result["metadata"] == {"resourceVersion": "40"}
    assert [q.get("continue") for _m, _p, q, _c, _b in f.requests] == [None, "2", "4"]


@pytest.mark.parametrize(
    ("status", "header", "done", "expected"),
    [
        (503, "1", 0, 1.0),
        (503, "1", 2, 1.0),
        (503, "1", 3, None),  # the budget is spent: the caller sees the 503
        (503, " 2 ", 0, 2.0),
        (503, "0", 0, 0.0),
        (503, "120", 0, MAX_RETRY_WAIT),  # capped: a client never sleeps minutes
        (503, None, 0, None),  # no Retry-After: the server did not ask for a retry
        (429, "3", 0, 3.0),
        (429, None, 0, None),  # the workspace limit: a refusal, never retried
        (500, "1", 0, None),
        (409, "1", 0, None),
        (503, "Fri, 27 Nov 2026 10:00:00 GMT", 0, None),
        (503, "-1", 0, None),
        (503, "1.5", 0, None),
    ],
)
def test_retry_wait_table(
    status: int, header: str | None, done: int, expected: float | None
) -> None:
    assert retry_wait(status, header, done) == expected


async def test_an_answer_with_retry_after_is_sent_again(fake: tuple[Fake, str]) -> None:
    f, url = fake
    async with ApiClient(url, TOKEN) as api:
        obj = await api.patch_merge("alice", "busy-2", {"spec": {"desired_state": "RUNNING"}})
        assert obj["metadata"]["name"] == "busy-2"
        assert obj["echo"] == {"spec": {"desired_state": "RUNNING"}}
        created = await api.create("alice", {"metadata": {"name": "busy-1"}})
        assert created["metadata"]["name"] == "busy-1"
    sent = [(m, p.rsplit("/", 1)[-1]) for m, p, *_ in f.requests]
    assert sent == [("PATCH", "busy-2")] * 3 + [("POST", "workspaces")] * 2
    assert f.refusals == {"busy-2": 2, "busy-1": 1}


async def test_retries_are_bounded_and_the_last_answer_is_the_error(
    fake: tuple[Fake, str],
) -> None:
    f, url = fake
    async with ApiClient(url, TOKEN) as api:
        with pytest.raises(ApiError) as forever:
            await api.get("alice", "busy-forever")
        assert forever.value.status == 503
        assert forever.value.reason == "ServiceUnavailable"
        assert f.refusals["busy-forever"] == 1 + MAX_RETRIES
        with pytest.raises(ApiError) as plain:
            await api.get("alice", "unavailable")
        assert plain.value.status == 503
    assert sum(1 for r in f.requests if r[1].endswith("/unavailable")) == 1
    async with ApiClient(url, TOKEN, max_retries=0) as api:
        with pytest.raises(ApiError):
            await api.get("alice", "busy-5")
    assert f.refusals["busy-5"] == 1


async def test_retries_stop_at_the_requests_timeout(fake: tuple[Fake, str]) -> None:
    """An overloaded server that answers 503 only after a wait must not hold a caller for
    four such waits: retrying ends once the request's timeout (here 1 s) would pass."""
    f, url = fake
    async with ApiClient(url, TOKEN, timeout=1.0) as api:
        with pytest.raises(ApiError) as busy:
            await api.get("alice", "slow-busy")
    assert busy.value.status == 503
    assert f.refusals["slow-busy"] == 2
