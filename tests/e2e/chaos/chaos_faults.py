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

from operator_e2e import LONG, TEST_LABEL, USER, Stack, status
from support.private_services import stop_seaweed

#: What each desired state is displayed as once reached.
DISPLAY = {"RUNNING": "RUNNING", "STANDBY": "STANDBY", "PENDING": "ARCHIVED"}

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


def kill_server_process(stack: Stack) -> bool:
    proc = stack.server.proc
    if proc is None or proc.poll() is not None:
        return False
    proc.kill()
    proc.wait(10)
    return True


async def kill_server(chaos: Chaos) -> str:
    if not await asyncio.to_thread(kill_server_process, chaos.stack):
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


async def ensure_running(chaos: Chaos) -> str:
    """A workspace that runs (asked to, if none is), for faults that need one."""
    running = [n for n in chaos.names if chaos.desired[n] == "RUNNING"]
    name = chaos.rng.choice(running or chaos.names)
    if not running:
        chaos.desired[name] = "RUNNING"
        with contextlib.suppress(Exception):
            await chaos.stack.set_desired(name, "RUNNING")
            chaos.ledger.changes += 1
    await _back_running(chaos, name)
    return name


async def mid_operation(chaos: Chaos, states: list[str], keep: str = "") -> None:
    """Most of the time, ask one workspace (not ``keep``) for another state just before
    a fault, so the fault lands in the middle of an operation (an archive or restore for
    S3)."""
    others = [n for n in chaos.names if n != keep]
    if chaos.rng.random() < 0.25 or not others:
        return
    name = chaos.rng.choice(others)
    choices = [s for s in states if s != chaos.desired[name]] or states
    chaos.desired[name] = chaos.rng.choice(choices)
    with contextlib.suppress(Exception):
        await chaos.stack.set_desired(name, chaos.desired[name])
        chaos.ledger.changes += 1
    await asyncio.sleep(chaos.rng.uniform(0.0, 1.5))


def _same_address(chaos: Chaos, variable: str, now: str) -> None:
    """Every process was configured with the first address; a service that came back
    elsewhere (its port taken meanwhile by another process) would fail the soak for a
    reason of the machine's, so say so plainly."""
    was = chaos.services.env[variable]
    chaos.ledger.check("service back on its address", now == was, f"{variable}: {was} -> {now}")


async def restart_postgres(chaos: Chaos) -> str:
    await mid_operation(chaos, ["RUNNING", "STANDBY", "PENDING"])
    pg = chaos.services.postgres
    what = await asyncio.to_thread(_restart, chaos, "PostgreSQL", pg.down, pg.up)
    _same_address(chaos, "CODEHUB_DATABASE_URL", pg.url(pg.port()))
    return what


async def restart_s3(chaos: Chaos) -> str:
    await mid_operation(chaos, ["RUNNING", "PENDING"])
    weed = chaos.services.seaweed
    what = await asyncio.to_thread(_restart, chaos, "S3", lambda: stop_seaweed(weed), weed.up)
    _same_address(chaos, "CODEHUB_S3_ENDPOINT", weed.endpoint(weed.ports()))
    return what


async def restart_docker(chaos: Chaos) -> str:
    """The engine stops its containers (restart policy "no": they stay stopped); the
    operator must bring each workspace back to its desired state."""
    engine = chaos.services.docker
    if engine is None:
        return f"engine restart skipped: {chaos.services.docker_skip}"
    kept = await ensure_running(chaos)
    await mid_operation(chaos, ["RUNNING", "STANDBY", "PENDING"], keep=kept)
    running = await asyncio.to_thread(_running_workspaces, chaos.stack)
    what = await asyncio.to_thread(_restart, chaos, "Docker engine", engine.down, engine.up)
    chaos.ledger.faults["workspace containers stopped by engine restarts"] += running
    for name in chaos.names:  # stopped containers must not stay stopped
        if chaos.desired[name] == "RUNNING":
            ok = await _back_running(chaos, name)
            chaos.ledger.check("running again after engine restart", ok, name)
    return what


async def _back_running(chaos: Chaos, name: str) -> bool:
    """RUNNING with no operation *and* its container running (the status may still say
    RUNNING before the operator has observed the stopped container)."""
    deadline = time.monotonic() + LONG
    while time.monotonic() < deadline:
        await converge(chaos, name, "RUNNING")
        if await asyncio.to_thread(_running_workspaces, chaos.stack, name) == 1:
            return True
        await asyncio.sleep(0.5)
    return False


def _running_workspaces(stack: Stack, name: str | None = None) -> int:
    case = stack.scope_labels[TEST_LABEL]
    labels = [f"{TEST_LABEL}={case}", "codehub.io/role=workspace"]
    if name is not None:
        labels.append(f"codehub.io/name={name}")
    return len(stack.docker.containers.list(filters={"label": labels, "status": "running"}))


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
        code = (info.get("context") or {}).get("code") or info.get("message", "?")[:40]
        reason = f"{info.get('reason', '?')} ({code}) in {st.get('operation')}"
        body = {"metadata": {"annotations": {"codehub.io/recover": str(time.time())}}}
        try:
            async with chaos.stack.api("admin") as api:
                await api.patch_merge(USER, name, body)
        except Exception:
            continue
        chaos.ledger.recoveries[reason] += 1


async def converge(chaos: Chaos, name: str, desired: str) -> None:
    """Wait for the display of ``desired`` with no operation, recovering ERROR as an
    administrator. A desired-state write the API refused during an outage (a 503 with
    Retry-After: nothing changed) is sent again, as its user would retry it: the ledger
    holds what was asked, the store what was accepted."""
    chaos.desired[name] = desired
    display = DISPLAY[desired]
    deadline = time.monotonic() + LONG
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            obj = await chaos.stack.get(name)
            st = status(obj)
            if st.get("display") == display and st.get("operation", "NONE") == "NONE":
                return
            if (obj.get("spec") or {}).get("desired_state") != desired:
                await chaos.stack.set_desired(name, desired)
        await recover_errors(chaos)
        await asyncio.sleep(0.5)
    await chaos.stack.wait_display(name, display, limit=1.0)  # fails with the logs
