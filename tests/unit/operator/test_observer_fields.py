"""What a completion's write records of the observation (``observer.fields``), and which
operations announce their start with an Event (``kube_events.announces_start``); pure
(docs/observation.md, docs/events.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from codehub.operator.kube_events import announces_start
from codehub.operator.observer import fields
from codehub.operator.planning import InstanceState, Operation
from codehub.operator.reconcile_view import Facts

NOW = datetime(2026, 11, 27, 12, 0, 0, 123456, tzinfo=UTC)
URL = "http://127.0.0.1:40001"
KEY = "archives/u1/op/home.tar.gz"
RUN = Facts(InstanceState.RUNNING, True, URL)
VOLUME = Facts(InstanceState.ABSENT, True)
NOTHING = Facts(InstanceState.ABSENT, False)
ORPHAN = Facts(InstanceState.STOPPED, False)  # a container without its volume


def completed(**status: Any) -> dict[str, Any]:
    """A workspace as its completion leaves it: operation NONE, error cleared."""
    base = {"operation": "NONE", "op_id": None, "error_info": None, "previous_status": None}
    return {"metadata": {"uid": "u1", "resourceVersion": "7"}, "status": {**base, **status}}


@pytest.mark.parametrize(
    ("status", "facts", "observed", "display", "endpoint"),
    [
        # PROVISIONING done: a new volume, nothing observed before
        ({}, VOLUME, "STANDBY", "STANDBY", None),
        # STARTING done: running, the endpoint recorded
        ({"observed_status": "STANDBY"}, RUN, "RUNNING", "RUNNING", URL),
        # STOPPING done: the endpoint goes with the container
        ({"observed_status": "RUNNING", "endpoint": URL}, VOLUME, "STANDBY", "STANDBY", None),
        # ARCHIVING done: nothing left but the archive
        ({"observed_status": "STANDBY", "archive_key": KEY}, NOTHING, "PENDING", "ARCHIVED", None),
        # RESTORING done: the volume is back, the archive still named
        ({"observed_status": "PENDING", "archive_key": KEY}, VOLUME, "STANDBY", "STANDBY", None),
        # a stopped container beside its volume: STANDBY, no endpoint
        (
            {"observed_status": "STANDBY"},
            Facts(InstanceState.STOPPED, True),
            "STANDBY",
            "STANDBY",
            None,
        ),
    ],
)
def test_fields_of_a_completion(
    status: dict[str, Any], facts: Facts, observed: str, display: str, endpoint: str | None
) -> None:
    assert fields(completed(**status), facts, NOW) == {
        "observed_status": observed,
        "display": display,
        "endpoint": endpoint,
        "observed_at": "2026-11-27T12:00:00.123456Z",
    }


@pytest.mark.parametrize(
    ("status", "facts"),
    [
        # rule 2: a container without its volume (ARCHIVING's volume gone, container back)
        ({"observed_status": "STANDBY", "archive_key": KEY}, ORPHAN),
        # rule 6: data held before, nothing left, no archive
        ({"observed_status": "STANDBY"}, NOTHING),
    ],
)
def test_an_unexplained_error_is_not_for_a_completion_to_write(
    status: dict[str, Any], facts: Facts
) -> None:
    assert fields(completed(**status), facts, NOW) is None


def test_a_terminal_error_is_written_as_error_whatever_the_facts() -> None:
    obj = completed(observed_status="RUNNING", error_info={"is_terminal": True})
    seen = fields(obj, RUN, NOW)
    assert seen is not None
    assert (seen["observed_status"], seen["display"], seen["endpoint"]) == ("ERROR", "ERROR", None)


@pytest.mark.parametrize(
    ("op", "announced"),
    [
        (Operation.PROVISIONING, False),
        (Operation.STARTING, False),
        (Operation.STOPPING, False),
        (Operation.ARCHIVING, True),
        (Operation.RESTORING, True),
        (Operation.DELETING, True),
        (Operation.NONE, False),
    ],
)
def test_which_operations_announce_their_start(op: Operation, announced: bool) -> None:
    assert announces_start(op) is announced
