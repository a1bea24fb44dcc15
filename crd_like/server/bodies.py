"""Request bodies: size, media type, nesting depth and the JSON/YAML decoding itself.

Hostile bodies are refused before anything recursive touches them: the nesting depth is
measured on the raw bytes (JSON) or while composing (YAML) so neither the decoder, the
patch code nor the validator can hit Python's recursion limit, and YAML aliases are
refused outright, since a few hundred bytes of nested aliases expand to megabytes.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from aiohttp import web

from .status import ApiError, bad_request

#: Deepest nesting of objects and arrays a body may have. A Workspace is about four
#: levels deep; a patch or event stays far below this.
MAX_DEPTH = 64

JSON = "application/json"
YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml"})
BODY_TYPES = frozenset({JSON, *YAML_TYPES})

_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKET = re.compile(rb"[\[\]{}]")


def media_type(request: web.Request) -> str:
    """The body's media type; a request without Content-Type is taken as JSON."""
    raw = request.headers.get("Content-Type", JSON)
    return raw.split(";", 1)[0].strip().lower() or JSON


def unsupported_media(media: str, accepted: str) -> ApiError:
    return ApiError(
        415,
        f'the body of the request was in an unknown format "{short(media)}" - accepted '
        f"media types include: {accepted}",
        reason="UnsupportedMediaType",
    )


def require_body_type(request: web.Request) -> str:
    """A 415 unless the body is JSON or YAML, as kube-apiserver answers."""
    media = media_type(request)
    if media not in BODY_TYPES:
        raise unsupported_media(media, ", ".join(sorted(BODY_TYPES)))
    return media


def short(value: object, limit: int = 64) -> str:
    """At most ``limit`` characters of a value for an error message: refusals must not
    echo a megabyte the client sent."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def too_deep() -> ApiError:
    return bad_request(
        f"the request body is nested too deeply: at most {MAX_DEPTH} levels of objects "
        "and arrays are allowed"
    )


def within_depth(raw: bytes) -> bool:
    """True when ``raw`` cannot nest deeper than ``MAX_DEPTH``: each level needs an
    opening bracket, so a text with at most that many (counted in C, those inside
    strings too) is within the limit without the scan below, which was ~5 % of a status
    write's CPU (docs/adr/0007-api-write-path-performance.md)."""
    return len(raw) <= MAX_DEPTH or raw.count(b"{") + raw.count(b"[") <= MAX_DEPTH


def json_depth(raw: bytes) -> int:
    """Maximum bracket nesting of a JSON text, strings skipped; no recursion."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_JSON_STRING.sub(b"", raw)):
        if match.group() in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader without aliases and with a nesting limit, enforced while composing
    (the composer is the recursive part of PyYAML)."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases are not allowed", event.start_mark
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _TooDeep()
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _TooDeep(Exception):
    pass


def _load_yaml(text: str) -> Any:
    loader = _StrictLoader(text)
    try:
        docs = []
        while loader.check_data():  # type: ignore[no-untyped-call]
            doc = loader.get_data()
            if doc is not None:
                docs.append(doc)
    except _TooDeep:
        raise too_deep() from None
    except yaml.YAMLError as exc:
        mark_ = getattr(exc, "problem_mark", None)
        where = f" at line {mark_.line + 1}, column {mark_.column + 1}" if mark_ else ""
        problem = getattr(exc, "problem", None)
        detail = f": {problem}" if problem == "YAML aliases are not allowed" else ""
        raise bad_request(f"the request body is not valid YAML{where}{detail}") from None
    finally:
        loader.dispose()
    if len(docs) != 1:
        raise bad_request("the request body must hold exactly one YAML document")
    return docs[0]


def parse_document(raw: bytes, media: str) -> Any:
    """Decode a JSON or YAML body; a syntax error is a 400 that says where."""
    if not raw.strip():
        raise bad_request("the request body is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("the request body is not valid UTF-8") from None
    if media in YAML_TYPES:
        return _load_yaml(text)
    if not within_depth(raw) and json_depth(raw) > MAX_DEPTH:
        raise too_deep()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise bad_request(
            f"the request body is not valid JSON: {exc.msg} at line {exc.lineno}, "
            f"column {exc.colno}"
        ) from None
    except RecursionError:
        raise too_deep() from None
