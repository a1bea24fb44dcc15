"""Routing on the raw request target: what reaches which workspace, what is refused."""

from __future__ import annotations

import pytest

from codehub.crd_like.proxy.routing import Forward, Redirect, Refuse, redact, route, safe_next


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/w/alice/ws/", Forward("alice", "ws", "/", "")),
        ("/w/alice/ws/a/b.txt?x=1&y=%2F", Forward("alice", "ws", "/a/b.txt", "x=1&y=%2F")),
        ("/w/alice/ws/a%20b/", Forward("alice", "ws", "/a%20b/", "")),
        ("/w/alice/ws//double", Forward("alice", "ws", "//double", "")),
        ("/w/alice/ws/.hidden/x", Forward("alice", "ws", "/.hidden/x", "")),
        ("/w/alice/ws/a..b", Forward("alice", "ws", "/a..b", "")),
        ("/w/alice/ws", Redirect("/w/alice/ws/")),
        ("/w/alice/ws?folder=/home", Redirect("/w/alice/ws/?folder=/home")),
    ],
)
def test_routes(target: str, expected: object) -> None:
    assert route(target) == expected


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/w/alice/ws/../../bob/ws/", 400),
        ("/w/alice/ws/..", 400),
        ("/w/alice/ws/./x", 400),
        ("/w/alice/ws/%2e%2e/%2e%2e/bob/ws/", 400),
        ("/w/alice/ws/%2E%2E/x", 400),
        ("/w/alice/ws/%252e%252e/x", 400),
        ("/w/alice/ws/%25252e%25252e/x", 400),
        ("/w/alice/ws/a%2fb", 400),
        ("/w/alice/ws/a%2Fb", 400),
        ("/w/alice/ws/a%252fb", 400),
        ("/w/alice/ws/a%5cb", 400),
        ("/w/alice/ws/a\\b", 400),
        ("/w/alice/ws/%ff%fe", 400),
        ("/w/alice%2fws/x/", 404),
        ("/w/%61lice/ws/", 404),
        ("/w/alice/%2e%2e/", 404),
        ("/w/../w/bob/ws/", 404),
        ("/w/Alice/ws/", 404),
        ("/w/alice/", 404),
        ("/w/", 404),
        ("/w/-/ws/", 404),
        ("/w/alice/" + "a" * 64 + "/", 404),
        ("/apis/x", 404),
    ],
)
def test_refusals(target: str, status: int) -> None:
    found = route(target)
    assert isinstance(found, Refuse), found
    assert found.status == status


def test_prefix_is_the_workspace_root() -> None:
    found = route("/w/alice/ws/x")
    assert isinstance(found, Forward)
    assert found.prefix == "/w/alice/ws"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/w/alice/ws/", "/w/alice/ws/"),
        ("/w/alice/ws", "/w/alice/ws/"),
        ("/w/alice/ws/x?y=1", "/w/alice/ws/x?y=1"),
        ("https://evil.example/w/alice/ws/", None),
        ("//evil.example/w/alice/ws/", None),
        ("/w/-/signin", None),
        ("/w/alice/ws/../../x", None),
        ("/apis", None),
        (None, None),
    ],
)
def test_safe_next(raw: str | None, expected: str | None) -> None:
    assert safe_next(raw) == expected


def test_redact_hides_link_tokens_only() -> None:
    assert redact("/w/-/link/v1.abc.def") == "/w/-/link/REDACTED"
    assert "v1.abc" not in redact("/w/-/link/v1.abc.def?x=1")
    assert redact("/w/alice/ws/?q=1") == "/w/alice/ws/?q=1"
