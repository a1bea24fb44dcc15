"""The official ``kubernetes`` Python client (dynamic client) as a second real client of
the server over HTTPS (docs/api.md): server-side apply with managedFields, conflicts and
force, dry run, deletecollection with selectors and finalizers, SelfSubjectAccessReview,
and the all-namespaces SSE stream.
"""

from __future__ import annotations

import json
import ssl
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client as k8s  # noqa: E402
from kubernetes import dynamic  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

API_VERSION = "codehub.io/v1alpha1"


def _dynamic(api_server: Any, user: str) -> dynamic.DynamicClient:
    cfg = k8s.Configuration()
    cfg.host = api_server.url
    cfg.ssl_ca_cert = api_server.ca_file
    cfg.api_key = {"authorization": f"Bearer {api_server.tokens[user]}"}
    return dynamic.DynamicClient(k8s.ApiClient(cfg))


@pytest.fixture(scope="module")
def bob(api_server: Any) -> dynamic.DynamicClient:
    return _dynamic(api_server, "bob")


@pytest.fixture
def workspaces(bob: dynamic.DynamicClient) -> Iterator[Any]:
    res = bob.resources.get(api_version=API_VERSION, kind="Workspace")
    yield res
    res.delete(namespace="bob", label_selector="suite=pyclient")


def _body(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "Workspace",
        "metadata": {"name": name, "labels": {"suite": "pyclient"}},
        "spec": {"desired_state": "PENDING", **spec},
    }


def _name() -> str:
    return f"py-{uuid.uuid4().hex[:8]}"


def _managers(obj: Any) -> set[tuple[str, str]]:
    return {(e["manager"], e["operation"]) for e in obj.to_dict()["metadata"]["managedFields"]}


def test_server_side_apply_conflict_and_force(workspaces: Any) -> None:
    name = _name()
    created = workspaces.server_side_apply(
        body=_body(name, display_name="one"), namespace="bob", field_manager="gitops"
    )
    assert _managers(created) == {("gitops", "Apply")}
    workspaces.patch(
        body={"spec": {"display_name": "hand"}},
        name=name,
        namespace="bob",
        content_type="application/merge-patch+json",
        field_manager="editor",
    )
    before = workspaces.get(name=name, namespace="bob").metadata.resourceVersion
    with pytest.raises(ApiException) as err:
        workspaces.server_side_apply(
            body=_body(name, display_name="two"), namespace="bob", field_manager="gitops"
        )
    assert err.value.status == 409
    status = json.loads(err.value.body)
    assert status["details"]["causes"] == [
        {
            "reason": "FieldManagerConflict",
            "message": f'conflict with "editor" using {API_VERSION}',
            "field": ".spec.display_name",
        }
    ]
    assert workspaces.get(name=name, namespace="bob").metadata.resourceVersion == before
    forced = workspaces.server_side_apply(
        body=_body(name, display_name="two"),
        namespace="bob",
        field_manager="gitops",
        force_conflicts=True,
    )
    assert forced.spec.display_name == "two"
    assert ("editor", "Update") not in _managers(forced)


def test_dry_run_changes_nothing(workspaces: Any) -> None:
    name = _name()
    workspaces.create(body=_body(name), namespace="bob")
    before = workspaces.get(name=name, namespace="bob").metadata.resourceVersion
    out = workspaces.patch(
        body={"spec": {"memo": "dry"}},
        name=name,
        namespace="bob",
        content_type="application/merge-patch+json",
        dry_run="All",
    )
    assert out.spec.memo == "dry"
    after = workspaces.get(name=name, namespace="bob")
    assert after.metadata.resourceVersion == before
    assert after.spec.get("memo") is None


def test_delete_collection_with_selector_and_finalizer(workspaces: Any) -> None:
    keep, gone, held = _name(), _name(), _name()
    workspaces.create(body=_body(keep), namespace="bob")
    for n in (gone, held):
        body = _body(n)
        body["metadata"]["labels"]["batch"] = "x"
        if n == held:
            body["metadata"]["finalizers"] = ["example.com/hold"]
        workspaces.create(body=body, namespace="bob")
    nothing = workspaces.delete(namespace="bob", label_selector="batch=nobody")
    assert (nothing.kind, nothing["items"]) == ("WorkspaceList", [])
    deleted = workspaces.delete(namespace="bob", label_selector="batch=x")
    assert sorted(o["metadata"]["name"] for o in deleted["items"]) == sorted([gone, held])
    left = {o.metadata.name: o for o in workspaces.get(namespace="bob").items}
    assert keep in left
    assert gone not in left
    assert left[held].metadata.deletionTimestamp
    workspaces.patch(
        body={"metadata": {"finalizers": None}},
        name=held,
        namespace="bob",
        content_type="application/merge-patch+json",
    )
    with pytest.raises(ApiException) as err:
        workspaces.delete(namespace="bob", label_selector="===")
    assert err.value.status == 400


@pytest.mark.parametrize(
    ("user", "namespace", "verb", "allowed"),
    [("bob", "bob", "create", True), ("bob", "alice", "get", False), ("admin", "", "list", True)],
)
def test_self_subject_access_review(
    api_server: Any, user: str, namespace: str, verb: str, allowed: bool
) -> None:
    res = _dynamic(api_server, user).resources.get(
        api_version="authorization.k8s.io/v1", kind="SelfSubjectAccessReview"
    )
    review = res.create(
        body={
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {
                    "namespace": namespace,
                    "verb": verb,
                    "group": "codehub.io",
                    "resource": "workspaces",
                }
            },
        }
    )
    assert review.status.allowed is allowed


def _first_states(api_server: Any, user: str, count: int) -> list[dict[str, Any]]:
    ctx = ssl.create_default_context(cafile=api_server.ca_file)
    req = urllib.request.Request(
        f"{api_server.url}/api/v1/workspaces/events",
        headers={"Authorization": f"Bearer {api_server.tokens[user]}"},
    )
    states: list[dict[str, Any]] = []
    with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
        while len(states) < count:
            line = resp.readline().decode()
            if line.startswith("data: ") and '"workspace"' in line:
                states.append(json.loads(line[6:]))
    return states


def test_all_namespaces_sse_for_an_administrator(api_server: Any, workspaces: Any) -> None:
    alice = _dynamic(api_server, "alice").resources.get(api_version=API_VERSION, kind="Workspace")
    mine, theirs = _name(), _name()
    workspaces.create(body=_body(mine), namespace="bob")
    alice.create(body=_body(theirs), namespace="alice")
    try:
        everywhere = _dynamic(api_server, "admin").resources.get(
            api_version=API_VERSION, kind="Workspace"
        )
        total = len(everywhere.get().items)  # the initial burst: one state per workspace
        seen = {(s["namespace"], s["workspace"]) for s in _first_states(api_server, "admin", total)}
        assert {("bob", mine), ("alice", theirs)} <= seen
        own = _first_states(api_server, "bob", len(workspaces.get(namespace="bob").items))
        assert {s["namespace"] for s in own} == {"bob"}
    finally:
        alice.delete(namespace="alice", label_selector="suite=pyclient")
