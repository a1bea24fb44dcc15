"""Session cookies and single-use sign-in links: HMAC-signed tokens (pure).

A token is ``v1.<payload>.<mac>``: base64url JSON and base64url HMAC-SHA256 under the
server secret every replica shares, so any replica verifies what another issued. The
cookie names a user, not a token: the identity (groups included) is looked up again on
every request, so revoking a user's token also ends their sessions. A link is bound
to one workspace and carries a random id that PostgreSQL records when it is used, which
makes it single-use across replicas (see ``codehub.crd_like.store.activity``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COOKIE_NAME = "codehub_session"
COOKIE_PATH = "/w/"
_VERSION = "v1"
_MAX_TOKEN_LENGTH = 4096


class TokenError(ValueError):
    """Malformed, forged, expired or of the wrong kind; the message is for logs only."""


@dataclass(frozen=True)
class Session:
    user: str
    expires_at: float


@dataclass(frozen=True)
class Link:
    link_id: str
    user: str
    namespace: str
    name: str
    expires_at: float


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, message: str) -> str:
    return _b64(hmac.new(secret, message.encode("ascii"), hashlib.sha256).digest())


def sign(secret: bytes, payload: dict[str, Any]) -> str:
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    message = f"{_VERSION}.{body}"
    return f"{message}.{_mac(secret, message)}"


def verify(secret: bytes, token: str, kind: str, now: float) -> dict[str, Any]:
    """The payload of a genuine, unexpired token of ``kind``; else TokenError."""
    if not token or len(token) > _MAX_TOKEN_LENGTH or not token.isascii():
        raise TokenError("malformed token")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != _VERSION:
        raise TokenError("malformed token")
    if not hmac.compare_digest(_mac(secret, f"{parts[0]}.{parts[1]}"), parts[2]):
        raise TokenError("bad signature")
    try:
        payload = json.loads(_unb64(parts[1]))
    except (ValueError, binascii.Error):
        raise TokenError("malformed payload") from None
    if not isinstance(payload, dict) or payload.get("k") != kind:
        raise TokenError("wrong kind of token")
    exp = payload.get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool) or now >= exp:
        raise TokenError("expired")
    if not isinstance(payload.get("sub"), str) or not payload["sub"]:
        raise TokenError("no subject")
    return payload


def issue_session(secret: bytes, user: str, now: float, ttl: float) -> str:
    return sign(secret, {"k": "session", "sub": user, "iat": int(now), "exp": now + ttl})


def read_session(secret: bytes, token: str, now: float) -> Session:
    payload = verify(secret, token, "session", now)
    return Session(payload["sub"], float(payload["exp"]))


def issue_link(
    secret: bytes, user: str, namespace: str, name: str, now: float, ttl: float
) -> tuple[str, Link]:
    link = Link(secrets.token_urlsafe(18), user, namespace, name, now + min(ttl, 60.0))
    token = sign(
        secret,
        {
            "k": "link",
            "jti": link.link_id,
            "sub": user,
            "ns": namespace,
            "name": name,
            "exp": link.expires_at,
        },
    )
    return token, link


def read_link(secret: bytes, token: str, now: float) -> Link:
    payload = verify(secret, token, "link", now)
    fields = (payload.get("jti"), payload.get("ns"), payload.get("name"))
    if not all(isinstance(f, str) and f for f in fields):
        raise TokenError("incomplete link")
    return Link(payload["jti"], payload["sub"], payload["ns"], payload["name"], payload["exp"])


def cookie_header(token: str, max_age: int) -> str:
    """The ``Set-Cookie`` value: only the proxy's paths, never script or cross-site POST."""
    return (
        f"{COOKIE_NAME}={token}; Path={COOKIE_PATH}; Max-Age={max_age}; "
        "HttpOnly; Secure; SameSite=Lax"
    )


def clear_cookie_header() -> str:
    return f"{COOKIE_NAME}=; Path={COOKIE_PATH}; Max-Age=0; HttpOnly; Secure; SameSite=Lax"


def load_secret(configured: str, state_dir: Path) -> bytes:
    """The configured secret, or (development) one generated once under ``state_dir``.

    Replicas sharing a state dir share the generated one; production sets
    ``CODEHUB_SESSION_SECRET`` on every replica.
    """
    if configured:
        return configured.encode()
    path = state_dir / "session-secret"
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = secrets.token_urlsafe(48).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as fh:
        fh.write(fresh)
    return fresh
