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
    ],
)
def test_nesting_is_bounded_whatever_the_length(raw: bytes, says: str | None) -> None:
    """Short bodies skip the bracket count (they cannot nest deeper than they are long);
    the limit is the same either side of that length."""
    if says is None:
        assert parse_document(raw, "application/json") is not None
        return
    with pytest.raises(ApiError) as caught:
        parse_document(raw, "application/json")
    assert says in caught.value.body()["message"]
