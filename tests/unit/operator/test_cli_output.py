"""CLI rendering with plain dicts and a fixed clock."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from codehub.crd_like.client.api import ApiConnectionError, ApiError
from codehub.operator.cli import output as out
from codehub.vocabulary.timestamps import format_rfc3339

NOW = datetime(2026, 11, 27, 0, 0, 0, tzinfo=UTC)


def ws(name: str = "w1", ns: str = "alice", **status: object) -> dict[str, object]:
    return {
        "apiVersion": "codehub.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": "u-1",
            "resourceVersion": "42",
            "creationTimestamp": "2026-11-26T23:55:00Z",
        },
        "spec": {"desired_state": "RUNNING", "image_ref": "img:1"},
        "status": status,
    }


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (59, "59s"),
        (119, "119s"),
        (200, "3m20s"),
        (600, "10m"),
        (4 * 3600 + 300, "4h5m"),
        (20 * 3600, "20h"),
        (3 * 86400 + 3600, "3d1h"),
        (30 * 86400, "30d"),
        (800 * 86400, "2y70d"),
    ],
)
def test_age_is_kubectl_human_duration(seconds: int, text: str) -> None:
    created = format_rfc3339(NOW - timedelta(seconds=seconds))
    assert out.age(created, NOW) == text
    assert out.age(None, NOW) == "<none>"


def test_table_columns_and_alignment() -> None:
    items = [
        ws("alpha", observed_status="RUNNING", display="RUNNING", operation="NONE"),
        ws("b", observed_status="PENDING", operation="PROVISIONING"),
    ]
    text = out.render_table(items, NOW)
    lines = text.splitlines()
    assert lines[0].split() == ["NAME", "DESIRED", "OBSERVED", "OPERATION", "DISPLAY", "AGE"]
    assert lines[1].split() == ["alpha", "RUNNING", "RUNNING", "NONE", "RUNNING", "5m"]
    assert lines[2].split() == ["b", "RUNNING", "PENDING", "PROVISIONING", "PENDING", "5m"]
    assert lines[0].index("DESIRED") == lines[1].index("RUNNING")


def test_table_unobserved_and_archived_display() -> None:
    fresh = out.workspace_row(ws("n"), NOW)
    assert fresh[2:5] == ["<none>", "<none>", "<none>"]
    archived = out.workspace_row(ws("a", observed_status="PENDING", archive_key="k"), NOW)
    assert archived[4] == "ARCHIVED"


def test_wide_and_all_namespaces() -> None:
    obj = ws(
        observed_status="ERROR",
        display="ERROR",
        operation="STARTING",
        op_id="op-9",
        error_count=3,
        error_info={"reason": "RetryExceeded"},
    )
    hdr = out.headers(wide=True, all_namespaces=True)
    row = out.workspace_row(obj, NOW, wide=True, all_namespaces=True)
    assert hdr[0] == "NAMESPACE"
    assert dict(zip(hdr, row, strict=True)) == {
        "NAMESPACE": "alice",
        "NAME": "w1",
        "DESIRED": "RUNNING",
        "OBSERVED": "ERROR",
        "OPERATION": "STARTING",
        "DISPLAY": "ERROR",
        "AGE": "5m",
        "IMAGE": "img:1",
        "OP_ID": "op-9",
        "ERRORS": "3",
        "REASON": "RetryExceeded",
        "LAST-ACTIVITY": "<none>",
        "CONNS": "<none>",
        "IDLE-ACTION": "<none>",
    }


def test_yaml_and_json_lists() -> None:
    items = [ws("a"), ws("b")]
    as_yaml = yaml.safe_load(out.render_list(items, "yaml", "7"))
    assert as_yaml["kind"] == "List"
    assert [i["metadata"]["name"] for i in as_yaml["items"]] == ["a", "b"]
    as_json = json.loads(out.render_object(items[0], "json"))
    assert as_json["metadata"]["name"] == "a"


def test_describe_shows_spec_status_error_and_events() -> None:
    obj = ws(
        observed_status="ERROR",
        display="ERROR",
        operation="NONE",
        op_id="op-1",
        error_count=1,
        error_info={"reason": "DataLost", "message": "checksum\nmismatch", "is_terminal": True},
    )
    events = [
        {
            "type": "Normal",
            "reason": "Starting",
            "message": "claimed STARTING",
            "lastTimestamp": "2026-11-26T23:58:00Z",
            "source": {"component": "codehub-operator"},
        },
        {
            "type": "Warning",
            "reason": "Failed",
            "message": "restore failed",
            "count": 3,
            "lastTimestamp": "2026-11-26T23:59:00Z",
        },
    ]
    text = out.describe(obj, events, NOW)
    assert "Name:" in text
    assert "desired_state:" in text
    assert "Error:" in text
    assert "DataLost" in text
    assert "Events:" in text
    lines = text.splitlines()
    ev_lines = lines[lines.index("Events:") + 1 :]
    assert ev_lines[0].split() == ["TYPE", "REASON", "AGE", "FROM", "MESSAGE"]
    assert "Starting" in ev_lines[1]
    assert "(x3)" in ev_lines[2]


def test_describe_without_events_or_status() -> None:
    obj = ws()
    obj["status"] = {}
    text = out.describe(obj, [], NOW)
    assert "<not observed yet>" in text
    assert text.rstrip().endswith("Events:                 <none>")


def test_error_rendering_is_one_line_with_causes() -> None:
    err = ApiError(
        422,
        "Invalid",
        'Workspace.codehub.io "w" is invalid',
        {"causes": [{"field": "spec.desired_state", "message": 'Unsupported value: "X"'}]},
    )
    text = out.format_api_error(err)
    assert text.startswith("Error from server (Invalid): ")
    assert "spec.desired_state: Unsupported value" in text
    assert "\n" not in text
    conflict = out.format_api_error(ApiError(409, "Conflict", "the object\nhas been modified"))
    assert conflict == "Error from server (Conflict): the object has been modified"
    limit = out.format_api_error(
        ApiError(
            429,
            "workspace_limit_exceeded",
            "too many",
            {"limit_type": "per_user", "current": 2, "max": 2},
        )
    )
    assert "per_user: 2/2" in limit
    conn = out.format_api_error(ApiConnectionError("cannot connect to https://h:1: refused"))
    assert conn.startswith("Unable to connect to the server:")


def test_cause_already_in_message_not_repeated() -> None:
    err = ApiError(
        422,
        "Invalid",
        "spec.desired_state: bad",
        {"causes": [{"field": "spec.desired_state", "message": "bad"}]},
    )
    assert out.format_api_error(err) == "Error from server (Invalid): spec.desired_state: bad"


def test_progress_prints_only_changes_when_not_a_tty() -> None:
    stream = io.StringIO()
    bar = out.Progress(stream, "waiting for w1 display=RUNNING")
    a = ws(observed_status="STANDBY", operation="STARTING")
    bar.update(out.progress_text(a), 1)
    bar.update(out.progress_text(a), 2)
    bar.update(out.progress_text(ws(observed_status="RUNNING", display="RUNNING")), 3)
    bar.finish()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert "operation=STARTING" in lines[0]
    assert "display=RUNNING" in lines[1]
    assert out.progress_text(None) == "deleted"
