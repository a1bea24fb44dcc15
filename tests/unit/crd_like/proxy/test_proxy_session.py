"""Signed session cookies and sign-in links: genuine ones verify, nothing else does."""

from __future__ import annotations

from pathlib import Path

import pytest

from codehub.crd_like.proxy import session as s

SECRET = b"k" * 32
NOW = 1_800_000_000.0


def test_session_round_trip() -> None:
    token = s.issue_session(SECRET, "alice", NOW, 3600)
    got = s.read_session(SECRET, token, NOW + 10)
    assert got.user == "alice"
    assert got.expires_at == NOW + 3600


def _tamper_payload(token: str) -> str:
    v, body, mac = token.split(".")
    payload = s._unb64(body).replace(b"alice", b"admin")
    return f"{v}.{s._b64(payload)}.{mac}"


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda: s.issue_session(SECRET, "alice", NOW, 3600) + "x", "bad signature"),
        (lambda: s.issue_session(b"other" * 8, "alice", NOW, 3600), "bad signature"),
        (lambda: _tamper_payload(s.issue_session(SECRET, "alice", NOW, 3600)), "bad signature"),
        (lambda: s.issue_session(SECRET, "alice", NOW - 7200, 3600), "expired"),
        (lambda: s.issue_session(SECRET, "alice", NOW - 3600, 3600), "expired"),
        (lambda: s.issue_link(SECRET, "alice", "alice", "ws", NOW, 60)[0], "wrong kind"),
        (lambda: s.sign(SECRET, {"k": "session", "exp": NOW + 5}), "no subject"),
        (lambda: s.sign(SECRET, {"k": "session", "sub": "a", "exp": True}), "expired"),
        (lambda: s.sign(SECRET, {"k": "session", "sub": "a"}), "expired"),
        (lambda: "v2.a.b", "malformed"),
        (lambda: "garbage", "malformed"),
        (lambda: "", "malformed"),
        (lambda: "v1." + "a" * 5000 + ".b", "malformed"),
        (lambda: "v1.é.b", "malformed"),
    ],
)
def test_refused_sessions(make: object, why: str) -> None:
    token = make()  # type: ignore[operator]
    with pytest.raises(s.TokenError, match=why):
        s.read_session(SECRET, token, NOW)


def test_link_round_trip_and_ttl_capped_at_60s() -> None:
    token, link = s.issue_link(SECRET, "alice", "alice", "ws", NOW, 600)
    assert link.expires_at == NOW + 60
    got = s.read_link(SECRET, token, NOW + 59)
    assert (got.user, got.namespace, got.name, got.link_id) == (
        "alice",
        "alice",
        "ws",
        link.link_id,
    )
    with pytest.raises(s.TokenError, match="expired"):
        s.read_link(SECRET, token, NOW + 60)
    with pytest.raises(s.TokenError, match="wrong kind"):
        s.read_link(SECRET, s.issue_session(SECRET, "alice", NOW, 60), NOW)


def test_links_are_distinct() -> None:
    a, _ = s.issue_link(SECRET, "alice", "alice", "ws", NOW, 60)
    b, _ = s.issue_link(SECRET, "alice", "alice", "ws", NOW, 60)
    assert a != b


def test_cookie_flags() -> None:
    header = s.cookie_header("tok", 100)
    parts = [p.strip() for p in header.split(";")]
    assert parts[0] == "codehub_session=tok"
    assert {"Path=/w/", "Max-Age=100", "HttpOnly", "Secure", "SameSite=Lax"} <= set(parts)
    assert "Max-Age=0" in s.clear_cookie_header()


def test_secret_generated_once_and_shared(tmp_path: Path) -> None:
    first = s.load_secret("", tmp_path)
    assert len(first) >= 32
    assert s.load_secret("", tmp_path) == first
    assert (tmp_path / "session-secret").stat().st_mode & 0o077 == 0
    assert s.load_secret("configured", tmp_path) == b"configured"
