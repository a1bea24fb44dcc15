"""Auto-wake decisions and pages (pure parts): what is a page load, what a page load of
a sleeping workspace does, and what the limit and error pages show."""

from __future__ import annotations

from typing import Any

import pytest

from codehub.crd_like.proxy.routing import Forward
from codehub.crd_like.proxy.wake import decide, is_navigation
from codehub.crd_like.proxy.wake_pages import error_page, limited_page, loading_page
from codehub.crd_like.server.admission import LimitExceeded
from codehub.crd_like.store.interface import RunningRef


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        ("GET", {"Accept": "text/html,application/xhtml+xml"}, True),
        ("GET", {"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}, True),
        ("GET", {"Accept": "text/html", "Sec-Fetch-Mode": "cors"}, False),
        ("GET", {"Accept": "text/html", "Sec-Fetch-Mode": "no-cors"}, False),
        ("GET", {"Accept": "application/json"}, False),
        ("GET", {"Accept": "*/*"}, False),
        ("GET", {}, False),
        ("HEAD", {"Accept": "text/html"}, False),
        ("POST", {"Accept": "text/html"}, False),
        ("GET", {"Accept": "text/html", "Upgrade": "websocket"}, False),
    ],
)
def test_only_page_loads_are_navigations(
    method: str, headers: dict[str, str], expected: bool
) -> None:
    assert is_navigation(method, headers) is expected


def ws(desired: str, status: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "alice", "name": "w", "uid": "u1", **meta},
        "spec": {"desired_state": desired},
        "status": status or {},
    }


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (ws("STANDBY", {"observed_status": "STANDBY"}), "wake"),
        (ws("PENDING", {"observed_status": "PENDING", "archive_key": "k"}), "wake"),
        (ws("PENDING"), "wake"),
        (ws("RUNNING", {"observed_status": "STANDBY", "operation": "STARTING"}), "wait"),
        (ws("RUNNING", {"observed_status": "RUNNING"}), "wait"),
        (ws("STANDBY", {"observed_status": "ERROR"}), "error"),
        (ws("RUNNING", {"observed_status": "ERROR", "display": "ERROR"}), "error"),
        (ws("STANDBY", deletionTimestamp="2026-01-01T00:00:00Z"), "refuse"),
    ],
)
def test_decide(obj: dict[str, Any], expected: str) -> None:
    assert decide(obj) == expected


def test_limited_page_lists_only_this_namespace() -> None:
    exc = LimitExceeded("global", 2, 2, [RunningRef("alice", "mine"), RunningRef("bob", "secret")])
    resp = limited_page(exc, "alice", "w")
    assert resp.status == 429
    text = resp.text or ""
    assert "/w/alice/mine/" in text
    assert "codehub stop mine" in text
    assert "kubectl patch workspace mine -n alice" in text
    assert "bob" not in text
    assert "secret" not in text


def test_error_page_escapes_and_explains() -> None:
    obj = ws(
        "RUNNING",
        {"observed_status": "ERROR", "error_info": {"reason": "X<y>", "message": "<b>m</b>"}},
    )
    resp = error_page(obj)
    text = resp.text or ""
    assert "X&lt;y&gt;" in text
    assert "&lt;b&gt;m&lt;/b&gt;" in text
    assert "<b>m" not in text
    assert "codehub recover w -n alice" in text
    assert "<script" not in text


def test_loading_page_script_runs_only_with_its_nonce() -> None:
    resp = loading_page(
        ws("STANDBY", {"observed_status": "PENDING", "archive_key": "k"}),
        Forward("alice", "w", "/", ""),
        woken=True,
    )
    csp = resp.headers["Content-Security-Policy"]
    nonce = csp.split("'nonce-")[1].split("'")[0]
    text = resp.text or ""
    assert f"<script nonce={nonce}>" in text
    assert text.count("<script") == 1
    assert "Restoring from the archive" in text
    assert 'data-events="/w/-/events/alice/w"' in text
    other = loading_page(ws("STANDBY"), Forward("alice", "w", "/", ""), woken=False)
    assert other.headers["Content-Security-Policy"] != csp, "a fresh nonce per answer"
