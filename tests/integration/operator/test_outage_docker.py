"""The Docker engine unreachable (the operator pointed at a dead DOCKER_HOST socket): a
pass of the HealthMonitor fails as a whole and writes nothing (a workspace is never
declared lost because the engine cannot be asked), a change of desired state is not
started (no operation is claimed without an observation) and is retried, the volume and
its data stay; with the engine back the change converges with the files intact."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

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

from codehub.adapters.config import DockerConfig
from codehub.adapters.docker_instance import DockerInstanceController
from codehub.adapters.volume_s3_storage import VolumeS3StorageProvider
from codehub.operator.gate import ReconcileGate
from codehub.operator.health_monitor import HealthMonitor


async def attempts(real: Real, name: str, n: int) -> list[Any]:
    """``n`` reconcile calls as kopf would make them on retries."""
    import asyncio

    out = []
    for _ in range(n):
        outcome = await real.gate.reconcile_now(await real.client.get(NS, name))
        out.append(outcome)
        if outcome.result != "retry":
            break
        await asyncio.sleep(outcome.delay)
    return out


def dead_engine(real: Real, tmp_path: Path) -> Real:
    """The same stack with the Docker adapters aimed at a socket nobody listens on."""
    base: DockerConfig = real.ctx.instances.config  # type: ignore[attr-defined]
    dead = dataclasses.replace(base, docker_host=f"unix://{tmp_path}/no-docker.sock")
    storage = real.ctx.storage
    ctx = dataclasses.replace(
        real.ctx,
        instances=DockerInstanceController(dead),
        storage=VolumeS3StorageProvider(dead, storage.s3.config),  # type: ignore[attr-defined]
    )
    out = Real(real.client, ctx, real.objects, real.docker)
    out.gate = ReconcileGate(ctx)
    return out


async def test_engine_down_claims_nothing_retries_and_keeps_data(
    real: Real, tmp_path: Path
) -> None:
    """Long because the story (healthy, engine gone, engine back) is the point."""
    obj = await real.client.create(
        NS,
        {
            "apiVersion": "codehub.io/v1alpha1",
            "kind": "Workspace",
            "metadata": {"name": "nodocker", "namespace": NS},
            "spec": {"desired_state": "RUNNING", "image_ref": IMAGE},
        },
    )
    uid = obj["metadata"]["uid"]
    assert (await settle(real, "nodocker")).detail == "converged"
    write_files(real, uid)
    expected = {path: hashlib.sha256(data).hexdigest() for path, data in FILES.items()}
    before = await status(real, "nodocker")

    down = dead_engine(real, tmp_path)
    try:
        with pytest.raises(Exception, match=r"(?i)docker engine"):
            await HealthMonitor(down.ctx, down.gate).pass_once()
        observed = await status(real, "nodocker")
        assert observed["observed_status"] == before["observed_status"] == "RUNNING"
        assert not observed.get("error_info")

        await set_desired(real, "nodocker", "STANDBY")
        tries = await attempts(down, "nodocker", 5)
    finally:
        await down.ctx.instances.close()
        await down.ctx.storage.close()
    # Nothing can be observed, so no operation is claimed: the reconciler retries the
    # observation (kopf's backoff) and writes neither an operation nor an error.
    assert [(o.result, o.detail) for o in tries] == [("retry", "observe")] * 5
    st = await status(real, "nodocker")
    assert st["operation"] == "NONE"
    assert not st.get("op_id")
    assert not st.get("error_info")
    assert st["observed_status"] == "RUNNING"
    assert volume_exists(real, uid)

    # The engine is back: the same change converges, the files are intact.
    assert (await settle(real, "nodocker")).detail == "converged"
    assert (await status(real, "nodocker"))["observed_status"] == "STANDBY"
    await set_desired(real, "nodocker", "RUNNING")
    assert (await settle(real, "nodocker")).detail == "converged"
    assert checksums(real, uid) == expected
