"""Just enough Kubernetes protobuf to read a SelfSubjectAccessReview or RulesReview.

kubectl sends built-in kinds (``auth can-i``'s review) as
``application/vnd.kubernetes.protobuf`` and does not retry as JSON on a 415; it does
accept a JSON answer. The envelope is the magic ``k8s\\0`` followed by a
``runtime.Unknown`` (typeMeta, raw), and raw is the review message. Only the fields a
review's decision needs are read; anything malformed is a 400.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .status import bad_request

PROTOBUF = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"
_RESOURCE_FIELDS = {
    1: "namespace",
    2: "verb",
    3: "group",
    4: "version",
    5: "resource",
    6: "subresource",
    7: "name",
}
_NON_RESOURCE_FIELDS = {1: "path", 2: "verb"}


class _Malformed(Exception):
    pass


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise _Malformed("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) pairs of one message; varints as int, the rest as bytes."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield number, value
        elif wire == 2:
            size, pos = _varint(data, pos)
            if pos + size > len(data):
                raise _Malformed("truncated field")
            yield number, data[pos : pos + size]
            pos += size
        elif wire in (1, 5):
            width = 8 if wire == 1 else 4
            if pos + width > len(data):
                raise _Malformed("truncated field")
            yield number, data[pos : pos + width]
            pos += width
        else:
            raise _Malformed(f"unsupported wire type {wire}")


def _strings(data: bytes, names: dict[int, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for number, value in fields(data):
        if number in names and isinstance(value, bytes):
            out[names[number]] = value.decode("utf-8")
    return out


def _review(raw: bytes) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {}, "spec": {}}
    for number, value in fields(raw):
        if number == 1 and isinstance(value, bytes):
            body["metadata"] = _strings(value, {1: "name"})
        elif number == 2 and isinstance(value, bytes):
            for inner, attrs in fields(value):
                if inner == 1 and isinstance(attrs, bytes):
                    body["spec"]["resourceAttributes"] = _strings(attrs, _RESOURCE_FIELDS)
                elif inner == 2 and isinstance(attrs, bytes):
                    body["spec"]["nonResourceAttributes"] = _strings(attrs, _NON_RESOURCE_FIELDS)
    return body


def _rules_review(raw: bytes) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {}, "spec": {}}
    for number, value in fields(raw):
        if number == 2 and isinstance(value, bytes):
            body["spec"] = _strings(value, {1: "namespace"})
    return body


def decode_access_review(data: bytes) -> dict[str, Any]:
    """The review (access or rules) as the JSON-shaped dict the handler reads."""
    if not data.startswith(MAGIC):
        raise bad_request("the protobuf body lacks the k8s envelope")
    try:
        type_meta: dict[str, str] = {}
        raw = b""
        for number, value in fields(data[len(MAGIC) :]):
            if number == 1 and isinstance(value, bytes):
                type_meta = _strings(value, {1: "apiVersion", 2: "kind"})
            elif number == 2 and isinstance(value, bytes):
                raw = value
        if type_meta.get("kind") == "SelfSubjectRulesReview":
            body = _rules_review(raw)
        else:
            body = _review(raw)
    except (_Malformed, UnicodeDecodeError) as exc:
        raise bad_request(f"the protobuf body is malformed: {exc}") from None
    return {**type_meta, **body}
