"""Failures on the real stack: retries, terminal errors, recovery, things vanishing."""

from __future__ import annotations

import asyncio
import io

import pytest
from operator_e2e import USER, CoordinatorProcess, History, Stack, status, uid_of

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MISSING_IMAGE = "codehub/does-not-exist:never"


def _error(obj: dict) -> dict:
    return dict(status(obj).get("error_info") or {})


async def test_missing_image_retries_then_retry_exceeded_and_recover_converges(
    stack: Stack, coordinator: CoordinatorProcess, history: History
) -> None:
    name = "badimage"
    await stack.create(name, "RUNNING", image=MISSING_IMAGE)
    obj = await stack.wait_error(name)
    info = _error(obj)
    assert info["reason"] == "RetryExceeded"
    assert info["is_terminal"] is True
    assert info["operation"] == "STARTING"
    assert MISSING_IMAGE in info["message"] or "image" in info["message"].lower()
    assert status(obj)["previous_status"] == "STANDBY"
    uid = uid_of(obj)
    assert stack.container(uid) is None
    assert stack.volume_exists(uid)  # ERROR keeps things as they are
    reasons = [e.get("reason") for e in await stack.events(name)]
    assert reasons.count("OperationRetrying") >= 1
    assert "OperationFailed" in reasons
    # The whole STARTING (retries included) kept one op_id.
    starting = {op_id for op, op_id in history.op_ids[name] if op == "STARTING"}
    assert len(starting) == 1

    # Left alone while in ERROR: fixing the spec alone changes nothing...
    async with stack.api() as api:
        await api.patch_merge(USER, name, {"spec": {"image_ref": stack.image}})
    await asyncio.sleep(5)  # several reconcile and observation passes
    obj = await stack.get(name)
    assert status(obj)["observed_status"] == "ERROR"
    assert stack.container(uid) is None

    # ...until an administrator recovers it.
    denied = stack.cli("recover", name, check=False)
    assert denied.returncode != 0
    out = stack.cli("recover", name, user="admin").stdout
    assert "recovered" in out
    obj = await stack.wait_display(name, "RUNNING")
    assert _error(obj) == {}
    assert status(obj)["error_count"] == 0
    container = stack.container(uid)
    assert container is not None
    assert container.status == "running"


async def test_corrupted_archive_is_data_lost_then_recovered_after_repair(
    stack: Stack, coordinator: CoordinatorProcess, history: History
) -> None:
    name = "corrupt"
    await stack.create(name, "RUNNING")
    obj = await stack.wait_display(name, "RUNNING")
    uid = uid_of(obj)
    stack.exec(uid, "echo precious > /home/coder/data.txt")
    await stack.set_desired(name, "PENDING")
    obj = await stack.wait_display(name, "ARCHIVED")
    key = status(obj)["archive_key"]
    original = stack.objects(key)[key]
    meta = stack.objects(key + ".meta")[key + ".meta"]

    garbage = bytes(reversed(original))
    stack.s3.put_object(stack.bucket, key, io.BytesIO(garbage), len(garbage))
    await stack.set_desired(name, "RUNNING")
    obj = await stack.wait_error(name)
    info = _error(obj)
    assert info["reason"] == "DataLost"
    assert info["is_terminal"] is True
    assert info["operation"] == "RESTORING"
    assert "CHECKSUM" in info["message"].upper() or "checksum" in str(info.get("context"))
    # Nothing overwritten: the archive and its checksum are exactly what they were, the
    # key still points at them, and no container was started on a half-restored home.
    objects = stack.objects(f"archives/{uid}/")
    assert objects == {key: garbage, key + ".meta": meta}
    assert status(obj)["archive_key"] == key
    assert stack.container(uid) is None
    assert "STARTING" not in history.operations(name)[-1:]

    # Repair the cause (put the real archive back), then recover: it converges.
    stack.s3.put_object(stack.bucket, key, io.BytesIO(original), len(original))
    stack.cli("recover", name, user="admin")
    await stack.wait_display(name, "RUNNING")
    assert stack.exec(uid, "cat /home/coder/data.txt").strip() == "precious"


async def test_container_removed_behind_the_back_is_started_again(
    stack: Stack, coordinator: CoordinatorProcess, history: History
) -> None:
    name = "vanish"
    await stack.create(name, "RUNNING")
    obj = await stack.wait_display(name, "RUNNING")
    uid = uid_of(obj)
    stack.exec(uid, "echo still-here > /home/coder/f.txt")
    first = stack.container(uid)
    assert first is not None
    seen = len(history.observed(name))
    assert history.observed(name)[-1] == "RUNNING"
    first.remove(force=True)

    await stack.wait_for(
        name,
        lambda o: (
            history.observed(name)[seen:][-2:] == ["STANDBY", "RUNNING"]
            and status(o).get("display") == "RUNNING"
            and status(o).get("operation") == "NONE"
        ),
        "observed STANDBY and then RUNNING again",
    )
    observed = history.observed(name)
    assert observed[-2:] == ["STANDBY", "RUNNING"]
    starts = {op_id for op, op_id in history.op_ids[name] if op == "STARTING"}
    assert len(starts) == 2, "the container was not started again by a new STARTING"
    second = stack.container(uid)
    assert second is not None
    assert second.id != first.id
    assert stack.exec(uid, "cat /home/coder/f.txt").strip() == "still-here"


async def test_volume_removed_behind_the_back_is_data_lost(
    stack: Stack, coordinator: CoordinatorProcess, history: History
) -> None:
    name = "novolume"
    await stack.create(name, "STANDBY")
    obj = await stack.wait_display(name, "STANDBY")
    uid = uid_of(obj)
    assert stack.volume_exists(uid)
    stack.docker.volumes.get(f"ws-{uid}-home").remove(force=True)

    obj = await stack.wait_error(name)
    info = _error(obj)
    assert info["reason"] == "DataLost"
    assert info["is_terminal"] is True
    assert status(obj)["previous_status"] == "STANDBY"
    # Terminal: the operator does not quietly provision an empty home again.
    await asyncio.sleep(5)  # several reconcile and observation passes
    obj = await stack.get(name)
    assert status(obj)["observed_status"] == "ERROR"
    assert not stack.volume_exists(uid)
