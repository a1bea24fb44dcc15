"""reconcile() on the real stack: the API server over a PostgresStore, the Docker engine
and SeaweedFS S3 through the real adapters. One full cycle, byte-exact:
create -> RUNNING -> STANDBY -> archived (PENDING + archive) -> RUNNING -> deleted."""

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

from codehub.adapters import naming


async def test_full_cycle_on_docker_and_s3(real: Real) -> None:
    obj = await real.client.create(
        NS,
        {
            "apiVersion": "codehub.io/v1alpha1",
            "kind": "Workspace",
            "metadata": {"name": "cycle", "namespace": NS, "finalizers": ["codehub.io/finalizer"]},
            "spec": {"desired_state": "RUNNING", "image_ref": IMAGE},
        },
    )
    uid = obj["metadata"]["uid"]

    assert (await settle(real, "cycle")).detail == "converged"
    st = await status(real, "cycle")
    assert st["display"] == "RUNNING"
    assert await real.ctx.instances.is_running(uid)
    write_files(real, uid)
    expected = {path: hashlib.sha256(data).hexdigest() for path, data in FILES.items()}
    assert checksums(real, uid) == expected

    await set_desired(real, "cycle", "STANDBY")
    assert (await settle(real, "cycle")).detail == "converged"
    assert (await status(real, "cycle"))["display"] == "STANDBY"
    assert not container_exists(real, uid)
    assert volume_exists(real, uid)

    await set_desired(real, "cycle", "PENDING")
    assert (await settle(real, "cycle")).detail == "converged"
    st = await status(real, "cycle")
    assert st["display"] == "ARCHIVED"
    key = st["archive_key"]
    assert key.startswith(f"archives/{uid}/")
    assert await real.objects.exists(key)
    assert await real.objects.exists(naming.meta_key(key))
    assert not volume_exists(real, uid)

    await set_desired(real, "cycle", "RUNNING")
    assert (await settle(real, "cycle")).detail == "converged"
    st = await status(real, "cycle")
    assert st["display"] == "RUNNING"
    assert checksums(real, uid) == expected

    await real.client.delete(NS, "cycle")
    outcome = await settle(real, "cycle")
    assert outcome.deleted
    assert not container_exists(real, uid)
    assert not volume_exists(real, uid)
    assert await real.objects.exists(key)  # archives are left for the GC
