"""Where a proxy request goes, decided on the raw request target (pure, table-tested).

Matching happens on the bytes the client sent, never on a decoded or normalised path:
``/w/{namespace}/{name}`` come from the first two raw segments and must be plain
DNS-1123 labels (so ``%2e``, ``%2f`` or ``..`` cannot name another workspace). The
rest is forwarded as sent, except that anything a server behind us could read as a
different path -- dot segments in any decoding, encoded slashes or backslashes -- is
refused, because two parsers disagreeing about a path is how isolation breaks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

PREFIX = "/w/"
#: Pages of the proxy itself live under a namespace no workspace can have.
PAGES_NAMESPACE = "-"
SIGNIN_PATH = "/w/-/signin"
LINK_PATH = "/w/-/link/"

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_DOT_SEGMENT = re.compile(r"(^|/)\.\.?(/|$)")
_ENCODED_SEPARATOR = re.compile(r"%(2f|5c)", re.IGNORECASE)
_MAX_DECODE_ROUNDS = 4


@dataclass(frozen=True)
class Forward:
    """Proxy to workspace ``namespace/name``; ``path`` (raw, starts with ``/``) upstream."""

    namespace: str
    name: str
    path: str
    query: str

    @property
    def prefix(self) -> str:
        return f"{PREFIX}{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Redirect:
    """The workspace root without its trailing slash: 308 to ``location``."""

    location: str


@dataclass(frozen=True)
class Refuse:
    """A target that is malformed (400) or names no possible workspace (404)."""

    status: int
    reason: str


Route = Forward | Redirect | Refuse


def is_label(text: str) -> bool:
    return bool(_LABEL.match(text))


def split_target(raw_target: str) -> tuple[str, str]:
    path, _, query = raw_target.partition("?")
    return path, query


def _ambiguous(raw_rest: str) -> str | None:
    """Why ``raw_rest`` could mean another path to some parser, or None."""
    if "\\" in raw_rest or "\x00" in raw_rest:
        return "backslash or NUL in path"
    text = raw_rest
    for _ in range(_MAX_DECODE_ROUNDS):
        if _ENCODED_SEPARATOR.search(text):
            return "encoded slash in path"
        if _DOT_SEGMENT.search(text):
            return "dot segment in path"
        if "\\" in text:
            return "backslash in path"
        decoded = unquote(text, errors="strict") if "%" in text else text
        if decoded == text:
            return None
        text = decoded
    return "path encoded too many times"


def route(raw_target: str) -> Route:
    """Decide what a request for ``raw_target`` (path and query, as sent) means."""
    path, query = split_target(raw_target)
    if not path.startswith(PREFIX):
        return Refuse(404, "not a workspace path")
    parts = path[len(PREFIX) :].split("/", 2)
    if len(parts) < 2 or not is_label(parts[0]) or not is_label(parts[1]):
        return Refuse(404, "no such workspace")
    namespace, name = parts[0], parts[1]
    if len(parts) == 2:
        location = f"{PREFIX}{namespace}/{name}/" + (f"?{query}" if query else "")
        return Redirect(location)
    rest = "/" + parts[2]
    try:
        why = _ambiguous(rest)
    except UnicodeDecodeError:
        why = "path is not UTF-8 when decoded"
    if why is not None:
        return Refuse(400, why)
    return Forward(namespace, name, rest, query)


def safe_next(raw: str | None) -> str | None:
    """A post-sign-in destination only if it is a workspace path on this server."""
    if not raw or not raw.startswith(PREFIX) or raw.startswith(f"{PREFIX}{PAGES_NAMESPACE}/"):
        return None
    found = route(raw)
    if isinstance(found, Forward):
        return raw
    return found.location if isinstance(found, Redirect) else None


def redact(raw_target: str) -> str:
    """``raw_target`` fit for a log line: a sign-in link's token never appears."""
    if split_target(raw_target)[0].startswith(LINK_PATH):
        return LINK_PATH + "REDACTED"
    return raw_target
