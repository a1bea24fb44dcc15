"""Failure paths of reconcile() on the real adapters: a corrupted archive in S3 is
DataLost (never retried, nothing overwritten, no half-restored volume left), and after
the archive is repaired an administrator's recovery converges with the data intact."""

from __future__ import annotations

import hashlib

from real_stack import (
    FILES,
    IMAGE,
    NS,
    Real,
    checksums,
    container_exists,
    set_desired,
    settle,
    status,
    volume_exists,
    write_files,
)


async def test_corrupted_archive_is_data_lost_then_recovered(real: Real) -> None:
    obj = await real.client.create(
        NS,
        {
            "apiVersion": "codehub.io/v1alpha1",
            "kind": "Workspace",
            "metadata": {"name": "rot", "namespace": NS},
            "spec": {"desired_state": "RUNNING", "image_ref": IMAGE},
        },
    )
    uid = obj["metadata"]["uid"]
    assert (await settle(real, "rot")).detail == "converged"
    write_files(real, uid)
    expected = {path: hashlib.sha256(data).hexdigest() for path, data in FILES.items()}

    await set_desired(real, "rot", "PENDING")
    assert (await settle(real, "rot")).detail == "converged"
    key = (await status(real, "rot"))["archive_key"]
    access = real.objects.access
    original = access.get_bytes(key)
    assert original is not None
    access.put_bytes(key, bytes(reversed(original)))

    await set_desired(real, "rot", "RUNNING")
    outcome = await settle(real, "rot")
    assert outcome.result == "terminal"
    assert outcome.reason == "DataLost"
    st = await status(real, "rot")
    assert st["error_info"]["operation"] == "RESTORING"
    assert st["error_info"]["context"]["code"] == "CHECKSUM_MISMATCH"
    assert st["observed_status"] == "ERROR"
    assert st["archive_key"] == key
    assert access.get_bytes(key) == bytes(reversed(original))  # nothing overwritten
    assert not volume_exists(real, uid)  # no half-restored home that looks like STANDBY
    assert not container_exists(real, uid)

    access.put_bytes(key, original)
    await real.client.patch_merge(
        NS,
        "rot",
        {"status": {"error_info": None, "error_count": 0, "operation": "NONE"}},
        status=True,
    )
    assert (await settle(real, "rot")).detail == "converged"
    assert (await status(real, "rot"))["display"] == "RUNNING"
    assert checksums(real, uid) == expected
