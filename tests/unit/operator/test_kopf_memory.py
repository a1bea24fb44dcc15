"""kopf's last-handled essence kept in memory (``kopf_memory.TermDiffBaseStorage``): the
same essence kopf's stock storage computes, nothing written to the object, entries
dropped when the workspace is being deleted (docs/adr/0014-kopf-writes.md)."""

from __future__ import annotations

import copy
from typing import Any

import kopf

from codehub.operator.handlers import ANNOTATION_PREFIX, FINALIZER
from codehub.operator.kopf_memory import KeyCachingProgressStorage, TermDiffBaseStorage


def workspace(uid: str = "u1", desired: str = "RUNNING", **meta: Any) -> dict[str, Any]:
    return {
        "apiVersion": "codehub.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {
            "name": "w",
            "namespace": "alice",
            "uid": uid,
            "resourceVersion": "7",
            "generation": 2,
            "finalizers": [FINALIZER],
            "labels": {"team": "a"},
            "annotations": {
                "codehub.io/desired-state-source": "ttl",
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                f"{ANNOTATION_PREFIX}/create": '{"retries":1}',
                f"{ANNOTATION_PREFIX}/last-handled-configuration": '{"spec":{}}',
            },
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
            **meta,
        },
        "spec": {"desired_state": desired, "image_ref": "img", "resources": {"cpu": "1"}},
        "status": {"operation": "NONE", "observed_status": "RUNNING", "display": "RUNNING"},
    }


def kopf_essence(raw: dict[str, Any]) -> Any:
    """What kopf computes with its stock annotation storage (both storages' cleaning)."""
    stock = kopf.AnnotationsDiffBaseStorage(prefix=ANNOTATION_PREFIX)
    progress = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    return progress.clear(essence=stock.build(body=kopf.Body(raw)))


def test_the_essence_is_kopfs_own() -> None:
    storage = TermDiffBaseStorage()
    progress = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    raw = workspace()
    ours = progress.clear(essence=storage.build(body=kopf.Body(raw)))
    assert ours == kopf_essence(raw)
    assert ours == {
        "metadata": {
            "labels": {"team": "a"},
            "annotations": {"codehub.io/desired-state-source": "ttl"},
        },
        "spec": {"desired_state": "RUNNING", "image_ref": "img", "resources": {"cpu": "1"}},
    }
    bare = {"metadata": {"uid": "u"}, "spec": {"desired_state": "STANDBY"}}
    assert storage.build(body=kopf.Body(bare)) == kopf_essence(bare)


def test_the_essence_is_a_copy() -> None:
    raw = workspace()
    essence = TermDiffBaseStorage().build(body=kopf.Body(raw))
    essence["spec"]["resources"]["cpu"] = "2"  # type: ignore[index]
    assert raw["spec"]["resources"]["cpu"] == "1"


def test_field_filters_get_kopfs_way() -> None:
    raw = workspace()
    essence = TermDiffBaseStorage().build(body=kopf.Body(raw), extra_fields=["status.display"])
    assert essence["status"] == {"display": "RUNNING"}  # type: ignore[typeddict-item]


def test_store_writes_nothing_and_fetch_answers_per_uid() -> None:
    storage = TermDiffBaseStorage()
    body = kopf.Body(workspace())
    assert storage.fetch(body=body) is None  # never handled in this term: kopf's "create"
    essence = storage.build(body=body)
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=essence)
    assert not patch  # kopf has nothing to PATCH
    assert storage.fetch(body=body) == essence
    assert storage.fetch(body=kopf.Body(workspace(uid="u2"))) is None
    changed = kopf.Body(workspace(desired="STANDBY"))
    assert storage.fetch(body=changed) == essence  # the base its diff is computed from
    assert len(storage) == 1


def test_a_deleting_workspace_is_forgotten() -> None:
    storage = TermDiffBaseStorage()
    body = kopf.Body(workspace())
    storage.store(body=body, patch=kopf.Patch(), essence=storage.build(body=body))
    deleting = workspace(deletionTimestamp="2026-01-01T00:00:00Z")
    assert storage.fetch(body=kopf.Body(deleting)) is not None
    assert len(storage) == 0
    # the delete handler's completion stores the essence again: not kept
    storage.store(body=kopf.Body(deleting), patch=kopf.Patch(), essence=storage.build(body=body))
    assert len(storage) == 0
    assert storage.fetch(body=kopf.Body(copy.deepcopy(deleting))) is None


def test_unchanged_tells_status_only_changes() -> None:
    storage = TermDiffBaseStorage()
    raw = workspace()
    assert not storage.unchanged(raw)  # nothing handled yet
    storage.store(
        body=kopf.Body(raw), patch=kopf.Patch(), essence=storage.build(body=kopf.Body(raw))
    )
    status_only = copy.deepcopy(raw)
    status_only["status"]["display"] = "STOPPING"
    status_only["metadata"]["resourceVersion"] = "8"
    status_only["metadata"]["managedFields"] = []
    assert storage.unchanged(status_only)
    for part, value in (("spec", {"desired_state": "STANDBY"}), ("extra", 1)):
        changed = copy.deepcopy(raw)
        changed[part] = value
        assert not storage.unchanged(changed)
    for key, meta_value in (("labels", {"team": "b"}), ("annotations", {})):
        changed = copy.deepcopy(raw)
        changed["metadata"][key] = meta_value
        assert not storage.unchanged(changed)
    assert not storage.unchanged(workspace(uid="u2"))


def test_adopt_only_parts_with_the_handled_essence() -> None:
    storage = TermDiffBaseStorage()
    progress = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    raw = workspace()
    essence = progress.clear(essence=storage.build(body=kopf.Body(raw)))
    storage.store(body=kopf.Body(raw), patch=kopf.Patch(), essence=essence)
    purged = copy.deepcopy(raw)  # kopf's progress annotation gone: the same essence
    del purged["metadata"]["annotations"][f"{ANNOTATION_PREFIX}/create"]
    assert not storage.unchanged(purged)
    storage.adopt(purged, progress)
    assert storage.unchanged(purged)
    changed = copy.deepcopy(purged)
    changed["spec"]["desired_state"] = "STANDBY"
    storage.adopt(changed, progress)  # an update kopf did not handle (yet): not adopted
    assert not storage.unchanged(changed)
    assert storage.unchanged(purged)


def test_progress_keys_are_kopfs_own() -> None:
    cached = KeyCachingProgressStorage(prefix=ANNOTATION_PREFIX)
    stock = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    body = kopf.Body(workspace())
    for key in ("create", "update", "delete", "resume", "x" * 80, "a/b<c>"):
        assert list(cached.make_keys(key, body=body)) == list(stock.make_keys(key, body=body))
        assert list(cached.make_keys(key)) == list(stock.make_keys(key))
    replica = kopf.Body(
        {
            "kind": "ReplicaSet",
            "metadata": {"ownerReferences": [{"kind": "Deployment"}], "annotations": {}},
        }
    )
    assert list(cached.make_keys("create", body=replica)) == list(
        stock.make_keys("create", body=replica)
    )
    assert list(cached.make_keys("create", body=replica)) != list(cached.make_keys("create"))


def test_bodies_are_read_under_kopfs_view() -> None:
    from codehub.operator.kopf_memory import _raw

    raw = workspace()
    assert _raw(kopf.Body(raw)) is raw
    spec = kopf.Body(raw).spec  # a view below the root is read through the view
    assert _raw(spec) is spec  # type: ignore[arg-type]
