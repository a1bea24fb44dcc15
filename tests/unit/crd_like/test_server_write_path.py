"""Small parts of the API's write path (docs/adr/0007-api-write-path-performance.md): the
once-a-second clock, reading a body that arrived whole with its headers, and the nesting
limit of short bodies."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from support.api import ApiFactory

from codehub.crd_like.server import clock
from codehub.crd_like.server.bodies import MAX_DEPTH, parse_document
from codehub.crd_like.server.status import ApiError
from codehub.vocabulary.timestamps import format_rfc3339

NS = "/apis/codehub.io/v1alpha1/namespaces/alice/workspaces"
MAX_BODY = 4096


@pytest.mark.parametrize("instant", [1_700_000_000.0, 1_700_000_000.999999, 86_399.5])
def test_clock_formats_the_whole_second_of_the_instant(
    instant: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(clock.time, "time", lambda: instant)
    expected = format_rfc3339(datetime.fromtimestamp(int(instant), UTC))
    assert clock.now_rfc3339() == expected
    assert clock.now_rfc3339() == expected  # and again, from what it kept


def test_clock_moves_on_with_the_next_second(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_700_000_000.2]
    monkeypatch.setattr(clock.time, "time", lambda: now[0])
    first = clock.now_rfc3339()
    now[0] = 1_700_000_001.0
    assert (first, clock.now_rfc3339()) == ("2023-11-14T22:13:20Z", "2023-11-14T22:13:21Z")


async def chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@pytest.mark.parametrize("piece", [None, 64])
async def test_a_body_without_length_is_still_bounded_and_read_whole(
    make_api: ApiFactory, piece: int | None
) -> None:
    """Chunked bodies (no Content-Length): one too large is a 413 whether it is read at
    once or piece by piece; one within the limit is read whole either way."""
    api = await make_api(max_body_bytes=MAX_BODY)
    headers = {**api.headers("alice"), "Content-Type": "application/json"}
    body = {"metadata": {"name": "w"}, "spec": {"desired_state": "STANDBY", "memo": "m"}}
    big = json.dumps({**body, "spec": {"memo": "x" * MAX_BODY}}).encode()
    ok = json.dumps(body).encode()

    def send(data: bytes) -> Any:
        return chunks(data, piece or len(data))

    r = await api.http.post(NS, data=send(big), headers=headers)
    assert r.status == 413, await r.text()
    assert "too large" in (await r.json())["message"]
    r = await api.http.post(NS, data=send(ok), headers=headers)
    assert r.status == 201, await r.text()
    assert (await r.json())["spec"]["memo"] == "m"


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"[" * (MAX_DEPTH + 1), "nested too deeply"),
        (b"[" * MAX_DEPTH + b"]" * MAX_DEPTH, None),
        (b"[" * MAX_DEPTH, "not valid JSON"),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "nested too deeply"),
        # long, with few brackets: within the limit without the scan
        (b'{"pad":"' + b"x" * 500 + b'","a":[[1]]}', None),
        # long, many brackets but shallow (in strings, or side by side): scanned, passes
        (b'{"a":"' + b"[{" * MAX_DEPTH + b'"}', None),
        (b"[" + b",".join([b"[1]"] * (MAX_DEPTH + 1)) + b"]", None),
        # long and deep behind padding: scanned, refused
        (
            b'{"pad":"' + b"x" * 500 + b'","a":' + b"[" * MAX_DEPTH + b"]" * MAX_DEPTH + b"}",
            "nested too deeply",
        ),
    ],
)
def test_nesting_is_bounded_whatever_the_length(raw: bytes, says: str | None) -> None:
    """Short bodies, and bodies with no more opening brackets than the limit, skip the
    bracket scan (they cannot nest deeper); the limit is the same either way."""
    if says is None:
        assert parse_document(raw, "application/json") is not None
        return
    with pytest.raises(ApiError) as caught:
        parse_document(raw, "application/json")
    assert says in caught.value.body()["message"]


def test_json_patch_leaves_its_inputs_alone_so_a_mutator_can_run_twice() -> None:
    """The store may run a mutator twice with the same patch (its cached try, then the
    locked way): applying must copy both the target and the values it adds."""
    from codehub.crd_like.server.patch import json_patch

    target = {"status": {"a": [1]}, "spec": {"x": {"y": 1}}}
    ops = [
        {"op": "add", "path": "/status/b", "value": {"c": [2]}},
        {"op": "copy", "from": "/spec/x", "path": "/status/x"},
    ]
    first = json_patch(target, ops)
    first["status"]["b"]["c"].append(3)
    first["status"]["x"]["y"] = 2
    first["status"]["a"].append(9)
    assert target == {"status": {"a": [1]}, "spec": {"x": {"y": 1}}}
    assert ops[0]["value"] == {"c": [2]}
    second = json_patch(target, ops)
    assert second == {"status": {"a": [1], "b": {"c": [2]}, "x": {"y": 1}}, "spec": {"x": {"y": 1}}}


@pytest.mark.parametrize("_", range(2))
def test_accept_answers_are_remembered_per_header_and_served_types(_: int) -> None:
    """The remembered answer depends on both the header and what the path serves."""
    from codehub.crd_like.server.negotiation import JSON_RANGES, SSE_RANGES, acceptable

    assert acceptable("application/json", JSON_RANGES)
    assert not acceptable("application/json", SSE_RANGES)
    assert acceptable("text/event-stream", SSE_RANGES)
    assert not acceptable("text/event-stream", JSON_RANGES)
    assert not acceptable("application/json;q=0, text/html", JSON_RANGES)
    assert acceptable(None, JSON_RANGES)
