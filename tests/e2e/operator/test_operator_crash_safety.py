"""A coordinator SIGKILLed in the middle of ARCHIVING or RESTORING: the next one finishes
the same operation (same op_id, same object path) and the data survives byte for byte."""

from __future__ import annotations

import asyncio
import hashlib
import time

import pytest
from operator_e2e import LONG, CoordinatorProcess, History, Stack, status, uid_of

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FILES = (
    "set -e; cd /home/coder; mkdir -p d/e; "
    "dd if=/dev/urandom of=d/e/random.bin bs=1024 count=2048 2>/dev/null; "
    "echo hello > d/hello.txt; ln -s e/random.bin d/link"
)
SUMS = "cd /home/coder && find . -type f -exec sha256sum {} + | sort && find . -type l | sort"


async def _wait_log(coord: CoordinatorProcess, needle: str) -> None:
    deadline = time.monotonic() + LONG
    while needle not in coord.log_text():
        assert coord.alive(), coord.log_text()[-3000:]
        assert time.monotonic() < deadline, f"{needle!r} not logged:\n{coord.log_text()[-3000:]}"
        await asyncio.sleep(0.2)


async def test_kill_during_archiving_then_restart_completes_same_op(
    stack: Stack, history: History
) -> None:
    first = stack.start_coordinator("first", env={"CODEHUB_TEST_PAUSE_ACTUATORS": "archive=30"})
    stack.wait_leader(first)
    name = "crash-archive"
    await stack.create(name, "RUNNING")
    obj = await stack.wait_display(name, "RUNNING")
    uid = uid_of(obj)
    stack.exec(uid, FILES)
    before = stack.exec(uid, SUMS)

    await stack.set_desired(name, "PENDING")
    # The archive is uploaded; the coordinator pauses before recording archive_key.
    await _wait_log(first, "pausing archive")
    obj = await stack.get(name)
    assert status(obj)["operation"] == "ARCHIVING"
    op_id = status(obj)["op_id"]
    assert not status(obj).get("archive_key")
    first.kill()

    second = stack.start_coordinator("second")
    stack.wait_leader(second)
    obj = await stack.wait_display(name, "ARCHIVED")
    key = status(obj)["archive_key"]
    assert key == f"archives/{uid}/{op_id}/home.tar.gz"
    archiving = {i for op, i in history.op_ids[name] if op == "ARCHIVING"}
    assert archiving == {op_id}
    objects = stack.objects(f"archives/{uid}/")
    assert set(objects) == {key, key + ".meta"}, "a second archive path was written"
    assert objects[key + ".meta"].decode().strip() == (
        "sha256:" + hashlib.sha256(objects[key]).hexdigest()
    )
    assert not stack.volume_exists(uid)

    await stack.set_desired(name, "RUNNING")
    await stack.wait_display(name, "RUNNING")
    assert stack.exec(uid, SUMS) == before


async def test_kill_during_restoring_then_restart_completes_same_op(
    stack: Stack, history: History
) -> None:
    first = stack.start_coordinator("first", env={"CODEHUB_TEST_PAUSE_ACTUATORS": "restore=30"})
    stack.wait_leader(first)
    name = "crash-restore"
    await stack.create(name, "RUNNING")
    obj = await stack.wait_display(name, "RUNNING")
    uid = uid_of(obj)
    stack.exec(uid, FILES)
    before = stack.exec(uid, SUMS)
    await stack.set_desired(name, "PENDING")
    obj = await stack.wait_display(name, "ARCHIVED")
    key = status(obj)["archive_key"]

    await stack.set_desired(name, "RUNNING")
    await _wait_log(first, "pausing restore")
    obj = await stack.get(name)
    assert status(obj)["operation"] == "RESTORING"
    op_id = status(obj)["op_id"]
    first.kill()

    second = stack.start_coordinator("second")
    stack.wait_leader(second)
    obj = await stack.wait_display(name, "RUNNING")
    restoring = {i for op, i in history.op_ids[name] if op == "RESTORING"}
    assert restoring == {op_id}, "the restore was claimed again under a new op_id"
    assert status(obj)["archive_key"] == key
    assert stack.exec(uid, SUMS) == before
    assert set(stack.objects(f"archives/{uid}/")) == {key, key + ".meta"}
