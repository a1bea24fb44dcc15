"""How many reconciles may talk to the API server at once (docs/operator.md).

kopf runs one handler task per workspace and every one of them reconciles in that task;
with thousands of creates, thousands of reconciles each making about a dozen requests
would be in flight together, and past what the API server answers within the client's
timeout the timeouts turn into retries and the useful rate collapses
(docs/adr/0011-ten-thousand-workspaces.md). ``ReconcileSlots`` lets at most
``RECONCILE_CONCURRENCY`` of them run; the others wait here, in the coordinator, in
arrival order.

A slot bounds the API-heavy part only. The data transfers of ARCHIVING and RESTORING
(``StorageProvider.archive`` / ``restore``, minutes each) run outside it: a reconcile
hands its slot back for the transfer and takes one again for the writes after it. So a
handful of long transfers never starves deletions or quick operations of slots, and
the transfers themselves are bounded by the workspaces asking for them, as before.
``outside_bound`` is that hand-back; ``TransfersOutsideBound`` applies it to a storage
adapter, so the reconciler does not need to know about slots.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextvars import ContextVar

from codehub.adapters.interfaces import ForwardingStorage, ProgressCallback


class ReconcileSlots:
    """A semaphore with counts: ``in_use`` slots held, ``waiting`` tasks queued."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the reconcile concurrency must be at least 1")
        self.limit = limit
        self._sem = asyncio.Semaphore(limit)
        self.in_use = 0
        self.waiting = 0
        #: The most slots held at once since start (a test's and a benchmark's witness).
        self.peak = 0

    async def _acquire(self) -> None:
        self.waiting += 1
        try:
            await self._sem.acquire()
        finally:
            self.waiting -= 1
        self.in_use += 1
        self.peak = max(self.peak, self.in_use)

    def _release(self) -> None:
        self.in_use -= 1
        self._sem.release()

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """Hold a slot for the body (the current task's lease, see ``outside_bound``);
        waiting is cancellable and a cancelled or failed body gives the slot back."""
        lease = _Lease(self)
        await lease.take()
        token = _LEASE.set(lease)
        try:
            yield
        finally:
            _LEASE.reset(token)
            lease.give_back()


class _Lease:
    """One reconcile's claim on a slot; handed back and taken again around transfers."""

    def __init__(self, slots: ReconcileSlots) -> None:
        self.slots = slots
        self.held = False

    async def take(self) -> None:
        await self.slots._acquire()
        self.held = True

    def give_back(self) -> None:
        if self.held:
            self.held = False
            self.slots._release()


_LEASE: ContextVar[_Lease | None] = ContextVar("codehub_reconcile_lease", default=None)


@contextlib.asynccontextmanager
async def outside_bound() -> AsyncIterator[None]:
    """Run the body without the current reconcile's slot, and take one again afterwards
    (also after an error: the failure is then written under the bound). Not after a
    cancellation: a cancelled task must not wait. That includes a transfer cut short by
    its operation's timeout (``asyncio.timeout`` cancels it), whose Timeout error is then
    written without a slot: one write, and rare. Outside a reconcile that holds a slot,
    it does nothing."""
    lease = _LEASE.get()
    if lease is None or not lease.held:
        yield
        return
    lease.give_back()
    try:
        yield
    except asyncio.CancelledError:
        raise  # the reconcile is over: nothing to take a slot for
    except BaseException:
        await lease.take()
        raise
    await lease.take()


class TransfersOutsideBound(ForwardingStorage):
    """``storage`` with its archive and restore run ``outside_bound``; every other call
    (quick engine calls) stays inside the caller's slot."""

    async def restore(
        self, uid: str, archive_key: str, *, on_progress: ProgressCallback | None = None
    ) -> None:
        async with outside_bound():
            await self.inner.restore(uid, archive_key, on_progress=on_progress)

    async def archive(
        self, uid: str, op_id: str, *, on_progress: ProgressCallback | None = None
    ) -> str:
        async with outside_bound():
            return await self.inner.archive(uid, op_id, on_progress=on_progress)
