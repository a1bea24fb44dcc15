"""Administrator recovery done by the server (docs/errors.md): the pure parts."""

from __future__ import annotations

from typing import Any

import pytest

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
    out = recovered_status(status)
    assert out["observed_status"] == "RUNNING"
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
