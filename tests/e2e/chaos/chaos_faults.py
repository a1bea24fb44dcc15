"""The chaos soak's ledger, its faults and the administrator's recovery.

Every fault is ``async (Chaos) -> str``: a text starting with ``SIGKILL``, ``docker
kill`` or ``restart`` says it was injected, anything else why it was skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from operator_e2e import TEST_LABEL, USER, Stack, status

INJECTED = ("SIGKILL", "docker kill", "restart")


@dataclass
class Ledger:
    faults: Counter[str] = field(default_factory=Counter)
    checks: Counter[str] = field(default_factory=Counter)
    recoveries: Counter[str] = field(default_factory=Counter)
    changes: int = 0
    watched: list[tuple[int, str]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    resumes: Counter[str] = field(default_factory=Counter)
    outages: list[str] = field(default_factory=list)

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks[name] += 1
        if not ok:
            self.violations.append(f"{name}: {detail}")


@dataclass
class Chaos:
    stack: Stack
    services: Any  # conftest.ChaosServices
    ledger: Ledger
    rng: random.Random
    names: list[str]
    desired: dict[str, str]


async def kill_leader(chaos: Chaos) -> str:
    stack = chaos.stack
    alive = [c for c in stack.coordinators if c.alive()]
    leaders = [c for c in alive if await asyncio.to_thread(c.is_leader)]
    if not leaders:
        return "no leader to kill"
    await asyncio.to_thread(leaders[0].kill)
    await asyncio.to_thread(stack.start_coordinator, f"chaos-{len(stack.coordinators)}")
    return f"SIGKILL leader {leaders[0].node_id}"


def _kill_server(stack: Stack) -> bool:
    proc = stack.server.proc
    if proc is None or proc.poll() is not None:
        return False
    proc.kill()
    proc.wait(10)
    return True


async def kill_server(chaos: Chaos) -> str:
    if not await asyncio.to_thread(_kill_server, chaos.stack):
        return "server not running"
    await asyncio.to_thread(chaos.stack.server.start)
    return "SIGKILL API server (restarted)"


def _running_job(stack: Stack, rng: random.Random) -> str:
    """Wait a little for a running storage job and ``docker kill`` it."""
    case = stack.scope_labels[TEST_LABEL]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        running = stack.docker.containers.list(
            filters={"label": [f"{TEST_LABEL}={case}", "codehub.io/role=job"]}
        )
        if running:
            victim = rng.choice(running)
            with contextlib.suppress(Exception):
                victim.kill()
            return f"docker kill {victim.name}"
        time.sleep(0.05)
    return "no job running"


async def kill_job(chaos: Chaos) -> str:
    """Make a job happen (archive or restore a workspace), then kill its container."""
    name = chaos.rng.choice(chaos.names)
    chaos.desired[name] = "PENDING" if chaos.desired[name] != "PENDING" else "RUNNING"
    with contextlib.suppress(Exception):
        await chaos.stack.set_desired(name, chaos.desired[name])
        chaos.ledger.changes += 1
    return await asyncio.to_thread(_running_job, chaos.stack, chaos.rng)


def _restart(chaos: Chaos, what: str, down: Any, up: Any) -> str:
    """Stop a service, leave it down a seeded while, start it on the same port and data."""
    pause = chaos.rng.uniform(1.0, 4.0)
    began = time.monotonic()
    down()
    time.sleep(pause)
    up()
    took = time.monotonic() - began
    chaos.ledger.outages.append(f"{what} {took:.1f} s")
    return f"restart {what} (down {took:.1f} s)"


async def restart_postgres(chaos: Chaos) -> str:
    pg = chaos.services.postgres
    return await asyncio.to_thread(_restart, chaos, "PostgreSQL", pg.down, pg.up)


async def restart_s3(chaos: Chaos) -> str:
    weed = chaos.services.seaweed
    return await asyncio.to_thread(_restart, chaos, "S3", weed.down, weed.up)


async def restart_docker(chaos: Chaos) -> str:
    """The engine stops its containers (restart policy "no": they stay stopped); the
    operator must bring each workspace back to its desired state."""
    engine = chaos.services.docker
    if engine is None:
        return f"engine restart skipped: {chaos.services.docker_skip}"
    if chaos.rng.random() < 0.5:  # mid-operation: ask for one first
        name = chaos.rng.choice(chaos.names)
        chaos.desired[name] = chaos.rng.choice(["RUNNING", "STANDBY", "PENDING"])
        with contextlib.suppress(Exception):
            await chaos.stack.set_desired(name, chaos.desired[name])
            chaos.ledger.changes += 1
    return await asyncio.to_thread(_restart, chaos, "Docker engine", engine.down, engine.up)


async def recover_errors(chaos: Chaos) -> None:
    """What an administrator does with a workspace in ERROR (docs/errors.md): set
    ``codehub.io/recover``. Each recovery is counted with the error's reason."""
    for name in chaos.names:
        try:
            obj = await chaos.stack.get(name)
        except Exception:
            continue
        st = status(obj)
        if st.get("display") != "ERROR":
            continue
        info = st.get("error_info") or {}
        reason = f"{info.get('reason', '?')}/{info.get('code', '?')} in {st.get('operation')}"
        body = {"metadata": {"annotations": {"codehub.io/recover": str(time.time())}}}
        try:
            async with chaos.stack.api("admin") as api:
                await api.patch_merge(USER, name, body)
        except Exception:
            continue
        chaos.ledger.recoveries[reason] += 1
