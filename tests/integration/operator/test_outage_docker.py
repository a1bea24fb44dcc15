"""The Docker engine unreachable (the operator pointed at a dead DOCKER_HOST socket): a
pass of the HealthMonitor fails as a whole and writes nothing (a workspace is never
declared lost because the engine cannot be asked); an idle, converged workspace only
waits; a change of desired state is never claimed without an observation, but each
attempt counts against the Unreachable retry budget, backs off, and ends in a clear,
terminal ERROR (docs/errors.md) that the HealthMonitor shows without the engine. The
volume and its data stay; with the engine back an administrator's recovery lets the
change converge with the files intact."""

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


async def attempts(real: Real, name: str, n: int) -> list[tuple[Any, dict[str, Any]]]:
    """Up to ``n`` reconcile calls as kopf would make them on retries, each with the
    status it left."""
    import asyncio

    out = []
    for _ in range(n):
        outcome = await real.gate.reconcile_now(await real.client.get(NS, name))
        st = await status(real, name)
        out.append((outcome, st))
        if outcome.result != "retry":
            break
        await asyncio.sleep(outcome.delay)
    return out


def dead_engine(real: Real, tmp_path: Path) -> Real:
    """The same stack with the Docker adapters aimed at a socket nobody listens on (and
    a short retry backoff: 0.2, 0.4, 0.8 s)."""
    base: DockerConfig = real.ctx.instances.config  # type: ignore[attr-defined]
    dead = dataclasses.replace(base, docker_host=f"unix://{tmp_path}/no-docker.sock")
    storage = real.ctx.storage
    ctx = dataclasses.replace(
        real.ctx,
        settings=dataclasses.replace(real.ctx.settings, reconciler_retry_backoff=0.2),
        instances=DockerInstanceController(dead),
        storage=VolumeS3StorageProvider(dead, storage.s3.config),  # type: ignore[attr-defined]
    )
    out = Real(real.client, ctx, real.objects, real.docker)
    out.gate = ReconcileGate(ctx)
    return out


def claimed_properly(st: dict[str, Any]) -> bool:
    """No operation without its claim."""
    return (st.get("operation") or "NONE") == "NONE" or bool(st.get("op_id"))


async def test_engine_down_pending_work_ends_in_error_idle_waits_data_kept(
    real: Real, tmp_path: Path
) -> None:
    """Long because the story (healthy, engine gone, ERROR, engine back, recovery) is
    the point."""
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
        # idle and converged: the engine being down is no error of this workspace
        idle = await attempts(down, "nodocker", 3)
        assert [(o.result, o.detail) for o, _ in idle] == [("retry", "observe")] * 3
        assert not any(st.get("error_info") for _, st in idle)

        await set_desired(real, "nodocker", "STANDBY")
        tries = await attempts(down, "nodocker", 8)
        with pytest.raises(Exception, match=r"(?i)docker engine"):
            await HealthMonitor(down.ctx, down.gate).pass_once()
        after_pass = await status(real, "nodocker")
    finally:
        await down.ctx.instances.close()
        await down.ctx.storage.close()
    # Nothing can be observed, so nothing is claimed; each attempt is counted, backs
    # off (growing delays), and the budget's end is a terminal RetryExceeded.
    assert [o.result for o, _ in tries] == ["retry"] * 3 + ["terminal"]
    assert [st["error_count"] for _, st in tries] == [1, 2, 3, 4]
    delays = [o.delay for o, _ in tries[:3]]
    assert delays[0] < delays[1] < delays[2]
    assert all(claimed_properly(st) for _, st in tries)
    assert all((st["operation"], st.get("op_id")) == ("NONE", None) for _, st in tries)
    assert [st["error_info"]["reason"] for _, st in tries] == ["Unreachable"] * 3 + [
        "RetryExceeded"
    ]
    err = after_pass["error_info"]
    assert err["is_terminal"] is True
    assert err["operation"] == "STOPPING"
    assert "container engine unreachable" in err["message"]
    assert str(tmp_path) not in err["message"]  # no socket path, nothing secret
    assert after_pass["previous_status"] == "RUNNING"
    assert after_pass["observed_status"] == "ERROR"  # rule 1, no engine needed
    # never DataLost because the engine could not be asked; ERROR only once terminal
    assert [st["observed_status"] for _, st in tries[:3]] == ["RUNNING"] * 3
    print(f"\nterminal error_info: {err}")
    assert all(st["error_info"]["context"]["last_reason"] == "Unreachable" for _, st in tries)
    assert volume_exists(real, uid)

    # The engine is back: the error waits for an administrator; the recovery lets the
    # same change converge, the files are intact.
    held = await settle(real, "nodocker")
    assert (held.result, held.detail) == ("terminal", "held")
    await real.client.patch_merge(
        NS, "nodocker", {"metadata": {"annotations": {"codehub.io/recover": "now"}}}
    )
    assert (await settle(real, "nodocker")).detail == "converged"
    st = await status(real, "nodocker")
    assert (st["observed_status"], st.get("error_info")) == ("STANDBY", None)
    await set_desired(real, "nodocker", "RUNNING")
    assert (await settle(real, "nodocker")).detail == "converged"
    assert checksums(real, uid) == expected
