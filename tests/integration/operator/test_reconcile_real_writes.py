"""The completion's single write on the real stack (the API server over a PostgresStore,
Docker, SeaweedFS S3; docs/state-machine.md#completion-and-the-next-claim): apply ->
RUNNING is three status writes, and a wish changed during an operation moves that write
aside, so the next step follows the new wish, not the copy the operation was claimed on."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

from real_stack import (
    IMAGE,
    NS,
    Real,
    container_exists,
    set_desired,
    settle,
    status,
    volume_exists,
)
from support.counting import CountingClient

from codehub.operator.gate import ReconcileGate


class BeforeDelete:
    """The real instance controller; ``before`` runs once, ahead of the first delete."""

    def __init__(self, inner: Any, before: Callable[[], Awaitable[None]]) -> None:
        self.inner = inner
        self.before: Callable[[], Awaitable[None]] | None = before

    async def delete(self, uid: str) -> None:
        if self.before is not None:
            before, self.before = self.before, None
            await before()
        await self.inner.delete(uid)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)


async def create(real: Real, name: str, desired: str = "RUNNING") -> dict[str, Any]:
    return await real.client.create(
        NS,
        {
            "apiVersion": "codehub.io/v1alpha1",
            "kind": "Workspace",
            "metadata": {"name": name, "namespace": NS, "finalizers": ["codehub.io/finalizer"]},
            "spec": {"desired_state": desired, "image_ref": IMAGE},
        },
    )


async def test_apply_to_running_is_three_status_writes(real: Real) -> None:
    counting = CountingClient(real.client)
    gate = ReconcileGate(dataclasses.replace(real.ctx, api=counting))
    created = await create(real, "three")
    assert (await gate.reconcile_now(created)).detail == "converged"
    st = await status(real, "three")
    assert (st["display"], st["operation"]) == ("RUNNING", "NONE")
    assert str(st["endpoint"]).startswith("http://127.0.0.1:")
    # claim PROVISIONING; PROVISIONING done + observed STANDBY + STARTING claimed;
    # STARTING done + observed RUNNING
    assert counting.calls["patch_json"] == 3, counting.calls
    assert counting.calls["post_event"] == 1  # PROVISIONING and STARTING completed, in one
    assert await real.ctx.instances.is_running(created["metadata"]["uid"])


async def test_a_wish_changed_during_stopping_archives_nothing(real: Real) -> None:
    """Desired PENDING plans STOPPING then ARCHIVING; the user settles for STANDBY while
    the container is being removed. The completion's compare-and-set fails on the
    version the user's change wrote, the completion is written alone, and planning on
    the fresh copy finds nothing to do: no archive uploaded, the volume kept."""
    uid = (await create(real, "mind"))["metadata"]["uid"]
    assert (await settle(real, "mind")).detail == "converged"
    await set_desired(real, "mind", "PENDING")

    async def settle_for_standby() -> None:
        await set_desired(real, "mind", "STANDBY")

    instances = BeforeDelete(real.ctx.instances, settle_for_standby)
    gate = ReconcileGate(dataclasses.replace(real.ctx, instances=instances))
    outcome = await gate.reconcile_now(await real.client.get(NS, "mind"))
    assert outcome.detail == "converged"
    assert instances.before is None  # the change was made during STOPPING
    st = await status(real, "mind")
    assert (st["display"], st["operation"], st.get("archive_key")) == ("STANDBY", "NONE", None)
    assert not container_exists(real, uid)
    assert volume_exists(real, uid)
    assert await real.objects.list(f"archives/{uid}/") == []
