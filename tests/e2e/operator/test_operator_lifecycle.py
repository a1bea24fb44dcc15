"""The whole ordered state machine on the real stack, with a byte-exact data check."""

from __future__ import annotations

import base64
import hashlib
import os

import pytest
from operator_e2e import CoordinatorProcess, History, Stack, status, uid_of

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

#: Files the test writes; the restore must give back exactly these bytes and modes.
SMALL = os.urandom(40_000)
TEXT = "héllo wörld\n" * 50

MANIFEST = (
    "cd /home/coder && "
    "find . -type f -exec sha256sum {} + | sort && "
    "find . -type f -exec stat -c '%n %a %s %Y' {} + | sort && "
    "find . ! -type f -exec stat -c '%n %a %F' {} + | sort && "
    'find . -type l | sort | while read -r l; do echo "$l -> $(readlink "$l")"; done'
)


def write_files(stack: Stack, uid: str) -> None:
    small = base64.b64encode(SMALL).decode()
    text = base64.b64encode(TEXT.encode()).decode()
    stack.exec(
        uid,
        "set -e; cd /home/coder; mkdir -p project/src deep/a/b/c; "
        f"echo {small} | base64 -d > project/blob.bin; "
        f"echo {text} | base64 -d > 'project/src/hé llo.txt'; "
        "printf '#!/bin/sh\\necho hi\\n' > project/run.sh; chmod 750 project/run.sh; "
        "dd if=/dev/urandom of=deep/a/b/c/big.bin bs=1024 count=3072 2>/dev/null; "
        "ln -s src/'hé llo.txt' project/link; : > project/empty; chmod 600 project/empty",
    )


def read_back(stack: Stack, uid: str) -> tuple[bytes, bytes]:
    blob = stack.exec(uid, "base64 /home/coder/project/blob.bin | tr -d '\\n'")
    text = stack.exec(uid, "base64 '/home/coder/project/src/hé llo.txt' | tr -d '\\n'")
    return base64.b64decode(blob), base64.b64decode(text)


async def test_full_lifecycle_keeps_data_byte_exact(
    stack: Stack, coordinator: CoordinatorProcess, history: History
) -> None:
    name = "life"
    # create (RUNNING)
    stack.cli("apply", "-f", str(_manifest(stack, name)))
    obj = await stack.wait_display(name, "RUNNING")
    uid = uid_of(obj)
    assert history.operations(name) == ["PROVISIONING", "STARTING"]
    container = stack.container(uid)
    assert container is not None
    assert container.status == "running"
    assert stack.volume_exists(uid)

    write_files(stack, uid)
    manifest_before = stack.exec(uid, MANIFEST)
    assert "big.bin" in manifest_before
    assert read_back(stack, uid) == (SMALL, TEXT.encode())

    # stop -> STANDBY: container gone, volume kept
    stack.cli("stop", name)
    obj = await stack.wait_display(name, "STANDBY")
    assert stack.container(uid) is None
    assert stack.volume_exists(uid)
    assert history.operations(name)[-1] == "STOPPING"

    # archive -> ARCHIVED: volume gone, archive and .meta in the bucket, checksum valid
    stack.cli("archive", name)
    obj = await stack.wait_display(name, "ARCHIVED")
    st = status(obj)
    assert st["observed_status"] == "PENDING"
    assert history.operations(name)[-1] == "ARCHIVING"
    archive_op = [op_id for op, op_id in history.op_ids[name] if op == "ARCHIVING"]
    assert len(set(archive_op)) == 1
    key = st["archive_key"]
    assert key == f"archives/{uid}/{archive_op[0]}/home.tar.gz"
    assert not stack.volume_exists(uid)
    assert stack.container(uid) is None
    objects = stack.objects(f"archives/{uid}/")
    assert set(objects) == {key, key + ".meta"}
    assert objects[key + ".meta"].decode().strip() == (
        "sha256:" + hashlib.sha256(objects[key]).hexdigest()
    )

    # desired RUNNING -> RESTORING, STANDBY, STARTING, RUNNING
    stack.cli("start", name)
    obj = await stack.wait_display(name, "RUNNING")
    assert history.operations(name)[-2:] == ["RESTORING", "STARTING"]
    observed = history.observed(name)
    assert observed[-3:] == ["PENDING", "STANDBY", "RUNNING"]
    assert status(obj)["archive_key"] == key

    # files identical
    assert stack.exec(uid, MANIFEST) == manifest_before
    assert read_back(stack, uid) == (SMALL, TEXT.encode())

    # delete: container, volume, resource gone; the archive stays for GC
    stack.cli("delete", "ws", name)
    await stack.wait_gone(name)
    assert stack.container(uid) is None
    assert not stack.volume_exists(uid)
    assert set(stack.objects(f"archives/{uid}/")) == {key, key + ".meta"}
    assert "DELETING" in history.operations(name)

    events = await stack.events(name)
    reasons = [e.get("reason") for e in events]
    assert "OperationStarted" in reasons
    assert "OperationCompleted" in reasons


async def test_running_to_pending_stops_then_archives_and_late_desired_change_applies(
    stack: Stack, history: History
) -> None:
    # The restore pauses a few seconds so the change below lands during RESTORING.
    coord = stack.start_coordinator("solo", env={"CODEHUB_TEST_PAUSE_ACTUATORS": "restore=4"})
    stack.wait_leader(coord)
    name = "chain"
    await stack.create(name, "RUNNING")
    obj = await stack.wait_display(name, "RUNNING")
    uid = uid_of(obj)
    stack.exec(uid, "echo keep > /home/coder/keep.txt")

    # RUNNING -> desired PENDING: STOPPING then ARCHIVING, one step at a time.
    await stack.set_desired(name, "PENDING")
    await stack.wait_display(name, "ARCHIVED")
    ops = history.operations(name)
    assert ops[-2:] == ["STOPPING", "ARCHIVING"]

    # A change made while an operation runs is accepted and applied afterwards.
    await stack.set_desired(name, "RUNNING")
    await stack.wait_for(
        name, lambda o: status(o).get("operation") == "RESTORING", "RESTORING", 120
    )
    await stack.set_desired(name, "STANDBY")  # accepted (no 409) mid-operation
    obj = await stack.wait_display(name, "STANDBY")
    assert obj["spec"]["desired_state"] == "STANDBY"
    assert history.operations(name)[-1] == "RESTORING"
    assert "STARTING" not in history.operations(name)[ops.__len__() :]
    assert stack.container(uid) is None
    assert stack.volume_exists(uid)

    await stack.set_desired(name, "RUNNING")
    await stack.wait_display(name, "RUNNING")
    assert stack.exec(uid, "cat /home/coder/keep.txt").strip() == "keep"


def _manifest(stack: Stack, name: str) -> object:
    path = stack.state / f"{name}.yaml"
    path.write_text(
        "apiVersion: codehub.io/v1alpha1\n"
        "kind: Workspace\n"
        f"metadata:\n  name: {name}\n  namespace: alice\n"
        f"spec:\n  desired_state: RUNNING\n  image_ref: {stack.image}\n"
        "  display_name: Lifecycle test\n"
    )
    return path
