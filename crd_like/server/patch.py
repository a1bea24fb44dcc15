"""RFC 7386 JSON merge patch and RFC 6902 JSON Patch, with Kubernetes error semantics.

Written here rather than borrowed so the failure of each operation maps exactly to what
kopf and kubectl expect: a failed ``test`` (kopf guards finalizer removal with a test on
``/metadata/resourceVersion``) and a path that does not exist are both 422.
"""

from __future__ import annotations

from typing import Any

from codehub.crd_like.store.semantics import clone


class PatchError(Exception):
    """The patch cannot be applied (HTTP 422); ``path`` names the JSON pointer."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class PatchFormatError(Exception):
    """The patch document itself is malformed (HTTP 400)."""


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return clone(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _split(pointer: Any) -> list[str]:
    if not isinstance(pointer, str):
        raise PatchFormatError("a JSON Patch path must be a string")
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchFormatError(f"invalid JSON pointer {pointer!r}: must start with '/'")
    return [_unescape(t) for t in pointer[1:].split("/")]


def _index(container: list[Any], token: str, path: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise PatchError(f"invalid array index {token!r} in {path}", path)
    idx = int(token)
    limit = len(container) if allow_end else len(container) - 1
    if idx > limit:
        raise PatchError(f"array index {idx} out of range in {path}", path)
    return idx


def _parent(doc: Any, tokens: list[str], path: str) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise PatchError(f"path {path} does not exist", path)
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, path, allow_end=False)]
        else:
            raise PatchError(f"path {path} does not exist", path)
    return node


def _get(doc: Any, path: str) -> Any:
    tokens = _split(path)
    if not tokens:
        return doc
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"path {path} does not exist", path)
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, path, allow_end=False)]
    raise PatchError(f"path {path} does not exist", path)


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _split(path)
    if not tokens:
        return value
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, path, allow_end=True), value)
    else:
        raise PatchError(f"path {path} does not exist", path)
    return doc


def _remove(doc: Any, path: str) -> tuple[Any, Any]:
    tokens = _split(path)
    if not tokens:
        raise PatchError("cannot remove the whole document", path)
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"path {path} does not exist", path)
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, last, path, allow_end=False))
    raise PatchError(f"path {path} does not exist", path)


def json_patch(target: Any, ops: Any) -> Any:
    """Apply the operations to a deep copy of ``target``; all or nothing. Values are
    copied too: a mutator may run twice with the same patch (``Store.update``)."""
    if not isinstance(ops, list):
        raise PatchFormatError("a JSON Patch must be a JSON array of operations")
    doc = clone(target)
    for i, op in enumerate(ops):
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchFormatError(f"operation {i} needs 'op' and 'path'")
        kind, path = op["op"], op["path"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchFormatError(f"operation {i} ({kind}) needs 'value'")
        if kind in ("move", "copy") and "from" not in op:
            raise PatchFormatError(f"operation {i} ({kind}) needs 'from'")
        if kind == "add":
            doc = _add(doc, path, clone(op["value"]))
        elif kind == "remove":
            doc, _ = _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)
            doc, _ = _remove(doc, path) if _split(path) else (doc, None)
            doc = _add(doc, path, clone(op["value"]))
        elif kind == "move":
            source = op["from"]
            if isinstance(source, str) and path.startswith(source + "/"):
                raise PatchError(f"cannot move {source} into its own child {path}", path)
            doc, value = _remove(doc, source)
            doc = _add(doc, path, value)
        elif kind == "copy":
            doc = _add(doc, path, clone(_get(doc, op["from"])))
        elif kind == "test":
            actual = _get(doc, path)
            if not _equal(actual, op["value"]):
                raise PatchError(
                    f"test failed: value at {path} is {actual!r}, not {op['value']!r}", path
                )
        else:
            raise PatchFormatError(f"unknown JSON Patch operation {kind!r}")
    return doc


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)
