"""S3 unreachable or refusing our credentials while a workspace is archived: the archive
is retried and ends in ERROR with a clear reason, the home volume is kept (its data is the
only copy), the previous archive key is not replaced; with S3 back an administrator's
reset archives and restores the files intact."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from real_stack import (
    FILES,
    IMAGE,
    NS,
    Real,
    checksums,
    set_desired,
    settle,
    status,
    volume_exists,
    write_files,
)

from codehub.adapters.volume_s3_storage import VolumeS3StorageProvider
from codehub.operator.gate import ReconcileGate


def broken_s3(real: Real, how: str) -> Real:
    storage = real.ctx.storage
    good = storage.s3.config  # type: ignore[attr-defined]
    if how == "credentials":
        bad = dataclasses.replace(good, secret_key="not-the-secret-" + "x" * 16)
    else:  # nothing listens on port 9 of the loopback
        bad = dataclasses.replace(good, endpoint="http://127.0.0.1:9")
    ctx = dataclasses.replace(
        real.ctx,
        storage=VolumeS3StorageProvider(storage.config, bad),  # type: ignore[attr-defined]
    )
    out = Real(real.client, ctx, real.objects, real.docker)
    out.gate = ReconcileGate(ctx)
    return out


@pytest.mark.parametrize("how", ["credentials", "down"])
async def test_archive_retries_to_error_and_keeps_the_volume(real: Real, how: str) -> None:
    name = f"nos3-{how}"
    obj = await real.client.create(
        NS,
        {
            "apiVersion": "codehub.io/v1alpha1",
            "kind": "Workspace",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"desired_state": "RUNNING", "image_ref": IMAGE},
        },
    )
    uid = obj["metadata"]["uid"]
    assert (await settle(real, name)).detail == "converged"
    write_files(real, uid)
    expected = {path: hashlib.sha256(data).hexdigest() for path, data in FILES.items()}
    before = await status(real, name)

    broken = broken_s3(real, how)
    try:
        await set_desired(real, name, "PENDING")
        outcome = await settle(broken, name)
    finally:
        await broken.ctx.storage.close()
    st = await status(real, name)
    print(f"\nS3 {how}: {outcome.reason}: {st['error_info']['message']}")
    assert outcome.result == "terminal"
    assert st["observed_status"] == "ERROR"
    assert st["error_info"]["operation"] == "ARCHIVING"
    assert "not-the-secret" not in st["error_info"]["message"]
    assert st.get("archive_key") == before.get("archive_key")
    assert volume_exists(real, uid)

    await real.client.patch_merge(
        NS,
        name,
        {"status": {"error_info": None, "error_count": 0, "operation": "NONE"}},
        status=True,
    )
    assert (await settle(real, name)).detail == "converged"
    archived = await status(real, name)
    assert archived["archive_key"]
    await set_desired(real, name, "RUNNING")
    assert (await settle(real, name)).detail == "converged"
    assert checksums(real, uid) == expected
