"""Administrator recovery done by the server (docs/errors.md): the pure parts."""

from __future__ import annotations

from typing import Any

import pytest
from support.api import IDENTITIES, ApiFactory, ApiHarness
from support.api import Identity as TokenIdentity

from codehub.crd_like.client.api import ApiError as ClientApiError
from codehub.crd_like.server.auth import ADMIN_GROUP, OPERATOR_GROUP, Identity
from codehub.crd_like.server.recovery import (
    RECOVER_ANNOTATION,
    RECOVERED_AT_ANNOTATION,
    consume,
    recovered_status,
    refuse_unless_admin,
    requested,
    strip,
)
from codehub.crd_like.server.status import ApiError

ERROR_STATUS: dict[str, Any] = {
    "observed_status": "ERROR",
    "display": "ERROR",
    "previous_status": "STANDBY",
    "operation": "STARTING",
    "op_id": "op-1",
    "op_started_at": "2026-01-01T00:00:00Z",
    "error_count": 3,
    "error_info": {"reason": "RetryExceeded", "is_terminal": True, "operation": "STARTING"},
    "archive_key": "archives/u/op-0/home.tar.gz",
    "observed_at": "2026-01-01T00:01:00Z",
}


def test_recovered_status_clears_the_error_and_keeps_op_id() -> None:
    out = recovered_status(ERROR_STATUS)
    assert "error_info" not in out
    assert "op_started_at" not in out
    assert "previous_status" not in out
    assert out["error_count"] == 0
    assert out["operation"] == "NONE"
    assert out["op_id"] == "op-1"
    assert out["observed_status"] == "STANDBY"
    assert out["display"] == "STANDBY"
    assert out["archive_key"] == ERROR_STATUS["archive_key"]
    assert "observed_at" not in out  # unconfirmed until the operator observes it
    assert ERROR_STATUS["error_count"] == 3  # the input is not changed


@pytest.mark.parametrize(
    ("previous", "observed", "display"),
    [
        ("PENDING", "PENDING", "ARCHIVED"),  # with an archive_key: ARCHIVED
        ("RUNNING", "RUNNING", "RUNNING"),
        (None, None, None),  # nothing known before the error: cleared, the operator observes
        ("ERROR", None, None),
    ],
)
def test_observed_status_returns_to_the_one_before_the_error(
    previous: str | None, observed: str | None, display: str | None
) -> None:
    status = {**ERROR_STATUS, "previous_status": previous}
    out = recovered_status(status)
    assert out.get("observed_status") == observed
    assert out.get("display") == display


def test_a_status_that_is_not_error_keeps_its_observation() -> None:
    status = {
        "observed_status": "RUNNING",
        "display": "RUNNING",
        "operation": "STOPPING",
        "error_count": 1,
        "error_info": {"reason": "Unreachable"},
    }
    status["observed_at"] = "2026-01-01T00:00:00Z"
    out = recovered_status(status)
    assert out["observed_status"] == "RUNNING"
    assert out["observed_at"] == "2026-01-01T00:00:00Z"
    assert out["operation"] == "NONE"
    assert "error_info" not in out


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"metadata": {"annotations": {RECOVER_ANNOTATION: "1"}}}, True),
        ({"metadata": {"annotations": {RECOVER_ANNOTATION: ""}}}, True),  # any value
        ({"metadata": {"annotations": {RECOVER_ANNOTATION: None}}}, False),  # removal
        ({"metadata": {"annotations": {"other": "1"}}}, False),
        ({"spec": {"desired_state": "RUNNING"}}, False),
        ([{"op": "add", "path": "/metadata/annotations/codehub.io~1recover", "value": "1"}], True),
        (
            [
                {
                    "op": "replace",
                    "path": "/metadata/annotations",
                    "value": {RECOVER_ANNOTATION: "x"},
                }
            ],
            True,
        ),
        (
            [
                {
                    "op": "add",
                    "path": "/metadata",
                    "value": {"annotations": {RECOVER_ANNOTATION: "x"}},
                }
            ],
            True,
        ),
        ([{"op": "remove", "path": "/metadata/annotations/codehub.io~1recover"}], False),
        ([{"op": "add", "path": "/spec/desired_state", "value": "RUNNING"}], False),
        ("not a document", False),
    ],
)
def test_requested(doc: Any, expected: bool) -> None:
    assert requested(doc) is expected


@pytest.mark.parametrize(
    ("groups", "allowed"),
    [
        ((ADMIN_GROUP,), True),
        ((), False),  # a plain user, even in their own namespace
        ((OPERATOR_GROUP,), False),  # the operator writes status, it does not recover
    ],
)
def test_only_administrators_may_recover(groups: tuple[str, ...], allowed: bool) -> None:
    who = Identity("someone", "u-1", frozenset(groups))
    if allowed:
        refuse_unless_admin(who, "workspaces", "codehub.io", "w")
        return
    with pytest.raises(ApiError) as caught:
        refuse_unless_admin(who, "workspaces", "codehub.io", "w")
    assert caught.value.code == 403
    assert "someone" in caught.value.message


def test_consume_replaces_the_request_by_the_time_of_recovery() -> None:
    obj = {"metadata": {"annotations": {RECOVER_ANNOTATION: "1", "keep": "me"}}}
    out = consume(obj, "2026-01-01T00:00:00Z")
    assert out["metadata"]["annotations"] == {
        "keep": "me",
        RECOVERED_AT_ANNOTATION: "2026-01-01T00:00:00Z",
    }


def test_strip() -> None:
    obj: dict[str, Any] = {"metadata": {"annotations": {RECOVER_ANNOTATION: "1"}}}
    assert strip(obj) is True
    assert "annotations" not in obj["metadata"]
    assert strip(obj) is False


def test_the_cli_asks_with_the_servers_annotation() -> None:
    from codehub.operator.cli.lifecycle import RECOVER_ANNOTATION as CLI_ANNOTATION

    assert CLI_ANNOTATION == RECOVER_ANNOTATION


# -- through the API (in-process server over the memory store) ---------------------------


def manifest(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "codehub.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name},
        "spec": {"desired_state": "RUNNING"},
    }


async def broken(api: ApiHarness, name: str = "w") -> dict[str, Any]:
    await api.client("alice").create("alice", manifest(name))
    obj: dict[str, Any] = await api.client("operator").patch_merge(
        "alice", name, {"status": ERROR_STATUS}, status=True
    )
    return obj


ASK = {"metadata": {"annotations": {RECOVER_ANNOTATION: "1"}}}


async def test_an_administrator_recovers_in_one_request(make_api: ApiFactory) -> None:
    api = await make_api()
    await broken(api)
    answer = await api.client("admin").patch_merge("alice", "w", ASK)
    stored = await api.client("alice").get("alice", "w")
    for obj in (answer, stored):
        st = obj["status"]
        assert "error_info" not in st
        assert st["error_count"] == 0
        assert st["operation"] == "NONE"
        assert st["op_id"] == "op-1"
        assert st["observed_status"] == "STANDBY"
        notes = obj["metadata"]["annotations"]
        assert RECOVER_ANNOTATION not in notes
        assert RECOVERED_AT_ANNOTATION in notes
    assert stored["spec"]["desired_state"] == "RUNNING"


#: The operator's identity without the administrator group: it writes status, it does
#: not recover.
OPERATOR_ONLY = TokenIdentity("op-only-t", "operator-only", "u-op", (OPERATOR_GROUP,))


@pytest.mark.parametrize("who", ["alice", "operator-only"])
async def test_anyone_else_gets_403_and_nothing_changes(make_api: ApiFactory, who: str) -> None:
    api = await make_api(identities={**IDENTITIES, "operator-only": OPERATOR_ONLY})
    before = await broken(api)
    with pytest.raises(ClientApiError) as caught:
        await api.client(who).patch_merge("alice", "w", ASK)
    assert caught.value.forbidden
    after = await api.client("alice").get("alice", "w")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["status"]["observed_status"] == "ERROR"


async def test_json_patch_and_kubectl_style_requests_work_too(make_api: ApiFactory) -> None:
    api = await make_api()
    await broken(api)
    ops = [{"op": "add", "path": "/metadata/annotations", "value": {RECOVER_ANNOTATION: "x"}}]
    obj = await api.client("admin").patch_json("alice", "w", ops)
    assert obj["status"]["error_count"] == 0
    assert RECOVER_ANNOTATION not in obj["metadata"]["annotations"]


async def test_dry_run_changes_nothing(make_api: ApiFactory) -> None:
    api = await make_api()
    before = await broken(api)
    resp = await api.http.patch(
        "/apis/codehub.io/v1alpha1/namespaces/alice/workspaces/w?dryRun=All",
        json=ASK,
        headers={**api.headers("admin"), "Content-Type": "application/merge-patch+json"},
    )
    assert resp.status == 200
    after = await api.client("alice").get("alice", "w")
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]


async def test_the_annotation_is_never_stored_on_create(make_api: ApiFactory) -> None:
    api = await make_api()
    body = manifest("w")
    body["metadata"]["annotations"] = {RECOVER_ANNOTATION: "1", "keep": "me"}
    created = await api.client("alice").create("alice", body)
    assert created["metadata"]["annotations"] == {"keep": "me"}
