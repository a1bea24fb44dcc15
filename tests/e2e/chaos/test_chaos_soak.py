"""Chaos soak: random desired-state changes on workspaces holding data while faults are
injected, with the invariants checked throughout and at the end.

Faults: SIGKILL of the leader coordinator (two run; a new one replaces the killed one),
SIGKILL of the API server with watchers mid-watch (restarted on the same port), SIGKILL
(``docker kill``) of a running storage job container. Restarts of PostgreSQL, S3 and the
Docker engine are not injected here: the stack uses the shared dev services (see
tests/e2e/outages/ and tests/integration/operator/test_outage_*.py for those outages).

Invariants, sampled after every step and at the end:
- never two workspace containers, nor two job containers, for one workspace;
- ``op_id`` is set whenever ``operation`` is not NONE (every watched state);
- a watcher resuming by resourceVersion sees strictly increasing revisions, each once;
- the archive a workspace's status names always exists in the bucket;
- at the end every workspace converges to its last desired state, and its files are
  sha256-exact.

``CODEHUB_CHAOS_SECONDS`` (default 180) bounds the soak; ``CODEHUB_CHAOS_SEED`` replays one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
from operator_e2e import TEST_LABEL, USER, Stack, status, uid_of

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SECONDS = float(os.environ.get("CODEHUB_CHAOS_SECONDS", "180"))
SEED = int(os.environ.get("CODEHUB_CHAOS_SEED", str(random.SystemRandom().randrange(1 << 30))))
WORKSPACES = 3
DISPLAY = {"RUNNING": "RUNNING", "STANDBY": "STANDBY", "PENDING": "ARCHIVED"}
FILE = "chaos.bin"


@dataclass
class Ledger:
    faults: Counter[str] = field(default_factory=Counter)
    checks: Counter[str] = field(default_factory=Counter)
    changes: int = 0
    watched: list[tuple[int, str]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    resumes: Counter[str] = field(default_factory=Counter)

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks[name] += 1
        if not ok:
            self.violations.append(f"{name}: {detail}")


async def watch_resuming(stack: Stack, ledger: Ledger, since: str) -> None:
    """Follow the user's workspaces by resourceVersion, resuming after every break."""
    rv = since
    while True:
        try:
            async with stack.api("admin") as api:
                watch = api.watch(USER, resource_version=rv)
                async for _type, obj in watch:
                    meta = obj.get("metadata") or {}
                    if obj.get("kind", "Workspace") != "Workspace" or "name" not in meta:
                        continue
                    new = int(meta["resourceVersion"])
                    ledger.watched.append((new, meta["name"]))
                    rv = str(new)
                    st = status(obj)
                    if st.get("operation", "NONE") != "NONE":
                        ledger.check("op_id with operation", bool(st.get("op_id")), str(st))
                rv = watch.resource_version or rv
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            ledger.resumes[type(exc).__name__] += 1
            await asyncio.sleep(0.3)


def engine_counts(stack: Stack) -> tuple[Counter[str], Counter[str]]:
    case = stack.scope_labels[TEST_LABEL]
    containers: Counter[str] = Counter()
    jobs: Counter[str] = Counter()
    for c in stack.docker.containers.list(all=True, filters={"label": f"{TEST_LABEL}={case}"}):
        labels = c.labels
        uid = labels.get("codehub.io/workspace-id", "")
        if labels.get("codehub.io/role") == "job":
            if c.status in ("running", "created", "restarting"):
                jobs[uid] += 1
        elif labels.get("codehub.io/role") == "workspace":
            containers[uid] += 1
    return containers, jobs


async def sample(stack: Stack, ledger: Ledger, names: list[str]) -> None:
    containers, jobs = await asyncio.to_thread(engine_counts, stack)
    ledger.check(
        "one container per workspace", max(containers.values(), default=0) <= 1, str(containers)
    )
    ledger.check("one job per workspace", max(jobs.values(), default=0) <= 1, str(jobs))
    for name in names:
        try:
            obj = await stack.get(name)
        except Exception:
            continue  # the API server is being restarted
        key = status(obj).get("archive_key")
        if key:
            ok = await asyncio.to_thread(_exists, stack, key)
            ledger.check("needed archive present", ok, f"{name}: {key}")


def _exists(stack: Stack, key: str) -> bool:
    try:
        stack.s3.stat_object(stack.bucket, key)
        return True
    except Exception:
        return False


def kill_leader(stack: Stack, rng: random.Random) -> str:
    alive = [c for c in stack.coordinators if c.alive()]
    leaders = [c for c in alive if c.is_leader()]
    if not leaders:
        return "no leader to kill"
    leaders[0].kill()
    stack.start_coordinator(f"chaos-{len(stack.coordinators)}")
    return f"SIGKILL leader {leaders[0].node_id}"


def kill_server(stack: Stack, rng: random.Random) -> str:
    proc = stack.server.proc
    if proc is None or proc.poll() is not None:
        return "server not running"
    proc.kill()
    proc.wait(10)
    stack.server.start()
    return "SIGKILL API server (restarted)"


def kill_job(stack: Stack, rng: random.Random) -> str:
    """Wait a little for a running storage job (the loop has just asked for an archive
    or a restore) and ``docker kill`` it."""
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


FAULTS = {"leader": kill_leader, "server": kill_server, "job": kill_job}
FAULT_NAMES = {
    "leader": "SIGKILL leader coordinator",
    "server": "SIGKILL API server mid-watch",
    "job": "docker kill job container",
}


async def prepare(stack: Stack, names: list[str]) -> dict[str, tuple[str, str]]:
    """Create the workspaces RUNNING and write a random file in each: name -> (uid, sha)."""
    data: dict[str, tuple[str, str]] = {}
    for name in names:
        await stack.create(name, "RUNNING")
    for name in names:
        obj = await stack.wait_display(name, "RUNNING")
        uid = uid_of(obj)
        out = await asyncio.to_thread(
            stack.exec, uid, f"head -c 300000 /dev/urandom > {FILE} && sha256sum {FILE}"
        )
        data[name] = (uid, out.split()[0])
    return data


def report(ledger: Ledger, elapsed: float) -> str:
    lines = [
        f"chaos soak: seed {SEED}, {elapsed:.0f} s, {ledger.changes} desired-state changes, "
        f"{len(ledger.watched)} watched events, watch resumes after {dict(ledger.resumes)}",
        "  faults injected:",
        *(f"    {name:<28} {n:>5}" for name, n in sorted(ledger.faults.items())),
        "  checks made:",
        *(f"    {name:<28} {n:>5}" for name, n in sorted(ledger.checks.items())),
        "  not injected: restarts of PostgreSQL, S3 and the Docker engine (the stack uses the"
        " shared dev services; see tests/e2e/outages and tests/integration/operator/test_outage_*)",
        f"  violations: {len(ledger.violations)}",
        *(f"    {v}" for v in ledger.violations[:20]),
    ]
    return "\n".join(lines)


async def test_chaos_soak(stack: Stack) -> None:
    """Long because the soak is one loop with its checks; the steps are helpers above."""
    rng = random.Random(SEED)
    print(f"\nchaos soak seed {SEED} (replay: CODEHUB_CHAOS_SEED={SEED})")
    stack.wait_leader(stack.start_coordinator("chaos-a"))
    stack.start_coordinator("chaos-b")
    names = [f"chaos-{i}" for i in range(WORKSPACES)]
    data = await prepare(stack, names)
    async with stack.api("admin") as api:
        since = str((await api.list(USER))["metadata"]["resourceVersion"])
    ledger = Ledger()
    watcher = asyncio.create_task(watch_resuming(stack, ledger, since))
    desired = dict.fromkeys(names, "RUNNING")
    start = time.monotonic()
    try:
        while time.monotonic() - start < SECONDS:
            if rng.random() < 0.3:
                kind = rng.choice(sorted(FAULTS))
                if kind == "job":  # make a job happen: archive or restore a workspace
                    name = rng.choice(names)
                    desired[name] = "PENDING" if desired[name] != "PENDING" else "RUNNING"
                    with contextlib.suppress(Exception):
                        await stack.set_desired(name, desired[name])
                        ledger.changes += 1
                what = await asyncio.to_thread(FAULTS[kind], stack, rng)
                injected = what.startswith(("SIGKILL", "docker kill"))
                ledger.faults[FAULT_NAMES[kind] if injected else f"skipped: {what}"] += 1
            else:
                name = rng.choice(names)
                desired[name] = rng.choice(sorted(DISPLAY))
                with contextlib.suppress(Exception):
                    await stack.set_desired(name, desired[name])
                    ledger.changes += 1
            await sample(stack, ledger, names)
            await asyncio.sleep(rng.uniform(1.0, 6.0))

        # Quiet period: the last desired states must be reached, the data intact.
        if not any(c.alive() and c.is_leader() for c in stack.coordinators):
            stack.start_coordinator("chaos-final")
        for name in names:
            with contextlib.suppress(Exception):
                await stack.set_desired(name, desired[name])
        for name in names:
            await stack.wait_display(name, DISPLAY[desired[name]])
            ledger.check("converged to last desired", True, name)
        await sample(stack, ledger, names)
        for name in names:
            await stack.set_desired(name, "RUNNING")
        for name in names:
            await stack.wait_display(name, "RUNNING")
            uid, sha = data[name]
            got = (await asyncio.to_thread(stack.exec, uid, f"sha256sum {FILE}")).split()[0]
            ledger.check("files sha256-exact", got == sha, f"{name}: {got} != {sha}")
        await asyncio.sleep(2.0)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        revisions = [rv for rv, _ in ledger.watched]
        ledger.check(
            "watch revisions increasing, once",
            revisions == sorted(set(revisions)),
            "repeated or out of order",
        )
        print(report(ledger, time.monotonic() - start))
    assert not ledger.violations, report(ledger, time.monotonic() - start)
