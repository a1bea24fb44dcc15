"""`codehub get -o wide` and `codehub describe` say why a workspace is kept alive."""

from __future__ import annotations

from datetime import UTC, datetime

from codehub.operator.cli import output as out

NOW = datetime(2026, 11, 27, 9, 0, 0, tzinfo=UTC)


def ws(**status: object) -> dict[str, object]:
    return {
        "metadata": {
            "name": "w",
            "namespace": "alice",
            "creationTimestamp": "2026-11-27T08:00:00Z",
        },
        "spec": {"desired_state": "RUNNING"},
        "status": {"observed_status": "RUNNING", **status},
    }


def wide(obj: dict[str, object]) -> dict[str, str]:
    return dict(zip(out.headers(wide=True), out.workspace_row(obj, NOW, wide=True), strict=True))


def test_wide_shows_activity_connections_and_the_next_idle_action() -> None:
    row = wide(
        ws(
            last_access_at="2026-11-27T08:58:00Z",
            last_activity_source="websocket",
            open_connections=0,
            idle_action="standby",
            idle_action_at="2026-11-27T09:03:00Z",
        )
    )
    assert (row["LAST-ACTIVITY"], row["CONNS"], row["IDLE-ACTION"]) == (
        "websocket 2m",
        "0",
        "standby in 3m",
    )


def test_wide_when_kept_alive_by_a_connection_or_overdue() -> None:
    kept = wide(ws(last_access_at="2026-11-27T08:00:00Z", open_connections=2))
    assert (kept["LAST-ACTIVITY"], kept["CONNS"], kept["IDLE-ACTION"]) == ("60m", "2", "<none>")
    due = wide(ws(idle_action="archive", idle_action_at="2026-11-27T08:59:00Z"))
    assert due["IDLE-ACTION"] == "archive due"


def test_describe_lists_the_activity_fields() -> None:
    text = out.describe(
        ws(
            last_activity_source="http",
            open_connections=1,
            idle_action="standby",
            idle_action_at="2026-11-27T09:03:00Z",
        ),
        [],
        NOW,
    )
    lines = {
        line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip()
        for line in text.splitlines()
        if ":" in line
    }
    assert lines["last_activity_source"] == "http"
    assert lines["open_connections"] == "1"
    assert lines["idle_action"] == "standby"
    assert lines["idle_action_at"] == "2026-11-27T09:03:00Z"
