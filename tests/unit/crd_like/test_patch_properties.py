"""Property tests of the server's patches (crd_like/server/patch.py) against references.

* JSON merge patch (RFC 7396) against the RFC's own pseudo-code, written out below.
* JSON Patch (RFC 6902) against the ``jsonpatch`` package: on every generated document
  and operation list both succeed with the same result, or both refuse. Operations are
  aimed at pointers that exist in the document (and at some that do not), so most of
  them apply. Integers are drawn from 2..99, so Python's ``True == 1`` cannot make the
  reference's ``test`` disagree with the server's JSON-typed comparison.
* Neither patch ever changes its input.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import jsonpointer
from hypothesis import given, settings
from hypothesis import strategies as st

from codehub.crd_like.server.patch import PatchError, PatchFormatError, json_patch, merge_patch

KEYS = st.sampled_from(["a", "b", "c", "spec", "x/y", "m~n", "0", "1", ""])
SCALARS = st.none() | st.booleans() | st.integers(2, 99) | st.text(max_size=4)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=12,
)
DOCS = st.dictionaries(KEYS, JSON, max_size=4)


def rfc7396(target: Any, patch: Any) -> Any:
    """MergePatch(Target, Patch), RFC 7396 section 2, on copies."""
    if isinstance(patch, dict):
        result = copy.deepcopy(target) if isinstance(target, dict) else {}
        for name, value in patch.items():
            if value is None:
                result.pop(name, None)
            else:
                result[name] = rfc7396(result.get(name), value)
        return result
    return copy.deepcopy(patch)


@settings(max_examples=400, deadline=None)
@given(target=JSON, patch=JSON)
def test_merge_patch_is_rfc7396(target: Any, patch: Any) -> None:
    before_target, before_patch = copy.deepcopy(target), copy.deepcopy(patch)
    assert merge_patch(target, patch) == rfc7396(target, patch)
    assert target == before_target
    assert patch == before_patch


def pointers(doc: Any, prefix: str = "") -> list[str]:
    """Every JSON pointer in ``doc`` (the root included)."""
    found = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            token = key.replace("~", "~0").replace("/", "~1")
            found += pointers(value, f"{prefix}/{token}")
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            found += pointers(value, f"{prefix}/{i}")
        found.append(f"{prefix}/-")
    return found


@st.composite
def patches(draw: st.DrawFn, doc: Any) -> list[dict[str, Any]]:
    # The root ("") is left out: replacing or moving a whole Kubernetes object is not a
    # patch anyone sends, and the server refuses it on purpose.
    existing = pointers(doc)[1:] or ["/a"]
    path = st.sampled_from(existing) | st.sampled_from(
        ["/nope", "/a/0", "/a/-", "/b/01", "/spec/c", "/x~1y", "/m~0n"]
    )
    ops: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["add", "remove", "replace", "move", "copy", "test"]))
        op: dict[str, Any] = {"op": kind, "path": draw(path)}
        if kind in ("add", "replace", "test"):
            if kind == "test" and draw(st.booleans()):
                try:
                    op["value"] = jsonpointer.resolve_pointer(doc, op["path"])
                except jsonpointer.JsonPointerException:
                    op["value"] = draw(JSON)
            else:
                op["value"] = draw(JSON)
        if kind in ("move", "copy"):
            op["from"] = draw(path)
        ops.append(op)
    return ops


@st.composite
def doc_and_patch(draw: st.DrawFn) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    doc = draw(DOCS)
    return doc, draw(patches(doc))


def reference(doc: Any, ops: list[dict[str, Any]]) -> tuple[bool, Any]:
    try:
        return True, jsonpatch.apply_patch(doc, ops, in_place=False)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, TypeError):
        return False, None


@settings(max_examples=400, deadline=None)
@given(case=doc_and_patch())
def test_json_patch_matches_jsonpatch(case: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    doc, ops = case
    before = copy.deepcopy(doc)
    ok, expected = reference(doc, ops)
    refused: Exception | None = None
    result: Any = None
    try:
        result = json_patch(doc, ops)
    except (PatchError, PatchFormatError) as exc:
        refused = exc
    if refused is not None:
        assert not ok, f"server refused ({refused}) what RFC 6902 applies: {expected!r}"
    else:
        assert ok, f"server applied what RFC 6902 refuses; got {result!r}"
        assert result == expected
    assert doc == before


@settings(max_examples=200, deadline=None)
@given(doc=DOCS, value=JSON)
def test_add_then_remove_is_identity(doc: dict[str, Any], value: Any) -> None:
    key = "fresh"
    assert json_patch(
        doc, [{"op": "add", "path": f"/{key}", "value": value}, {"op": "remove", "path": f"/{key}"}]
    ) == {k: v for k, v in doc.items() if k != key}
