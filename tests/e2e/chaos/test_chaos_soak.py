"""Chaos soak: random desired-state changes on workspaces holding data while faults are
injected, with the invariants checked throughout and at the end.

The stack runs on services of its own (tests/e2e/chaos/conftest.py): a private
PostgreSQL, a private SeaweedFS S3 and, where the machine allows it (root), a private
Docker engine beside the shared one; restarting them disturbs no other test.

Faults (tests/e2e/chaos/chaos_faults.py, chaos_proxy.py):
- SIGKILL of the leader coordinator (two run; a new one replaces the killed one);
- SIGKILL of the API server with watchers mid-watch (restarted on the same port);
- SIGKILL of the API server mid-proxy: a WebSocket open and a 64 MiB download half-read
  through ``/w/{ns}/{name}/``; both must look broken to the client (never a complete-
  looking wrong body), the restarted replica serves the workspace again and the killed
  replica's open connections expire (``status.open_connections`` back to 0);
- ``docker kill`` of a running storage job container;
- restarts of PostgreSQL, of the S3 server and of the Docker engine (its workspace
  containers stop with it, restart policy "no"; they must come back).
Every kind happens at least once in every run, however short, at seeded times; kinds
are also drawn at random between them. The
engine's outage (a few seconds) is kept short of the ``Unreachable`` retry budget; a
workspace that still ends in ERROR (an S3 restart takes longer than its budget) is
recovered the way an administrator does (``codehub.io/recover``, docs/errors.md), and
recoveries are counted with their reason in the summary. The seed replays the choices,
not the timing: what a fault meets depends on how fast the machine is.

Invariants, sampled after every step and at the end:
- never two workspace containers, nor two job containers, for one workspace;
- ``op_id`` is set whenever ``operation`` is not NONE (every watched state);
- a watcher resuming by resourceVersion sees strictly increasing revisions, each once;
- the archive a workspace's status names always exists in the bucket;
- after an engine restart every workspace meant to run runs again;
- at the end every workspace converges to its last desired state, and its files are
  sha256-exact.

``CODEHUB_CHAOS_SECONDS`` (default 180) bounds the soak; ``CODEHUB_CHAOS_SEED`` replays one.
The printed summary gives the seed, the faults injected per kind, the outages' lengths,
the recoveries and the checks made; any violation fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from chaos_faults import (
    DISPLAY,
    INJECTED,
    Chaos,
    Ledger,
    converge,
    kill_job,
    kill_leader,
    kill_server,
    recover_errors,
    restart_docker,
    restart_postgres,
    restart_s3,
)
from chaos_proxy import kill_server_mid_proxy
from operator_e2e import TEST_LABEL, USER, Stack, status, uid_of

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SECONDS = float(os.environ.get("CODEHUB_CHAOS_SECONDS", "180"))
SEED = int(os.environ.get("CODEHUB_CHAOS_SEED", str(random.SystemRandom().randrange(1 << 30))))
WORKSPACES = 3
FILE = "chaos.bin"
#: The last run's summary (tests/artifacts/ is ignored by git; .ci/run prints it).
SUMMARY = Path(__file__).resolve().parents[2] / "artifacts" / "chaos-soak-summary.txt"

Fault = Callable[[Chaos], Awaitable[str]]
FAULTS: dict[str, tuple[str, Fault]] = {
    "leader": ("SIGKILL leader coordinator", kill_leader),
    "server": ("SIGKILL API server mid-watch", kill_server),
    "proxy": ("SIGKILL API server mid-proxy", kill_server_mid_proxy),
    "job": ("docker kill job container", kill_job),
    "postgres": ("restart PostgreSQL", restart_postgres),
    "s3": ("restart S3 server", restart_s3),
    "docker": ("restart Docker engine", restart_docker),
}
#: Every kind happens at least once in every run, at seeded times, between random draws.
SCHEDULED = sorted(FAULTS)


def schedule(rng: random.Random) -> list[tuple[float, str]]:
    """Seeded times for the scheduled faults, spread between 10 % and 80 % of the soak."""
    kinds = rng.sample(SCHEDULED, len(SCHEDULED))
    slot = 0.7 * SECONDS / len(kinds)
    return [(0.1 * SECONDS + slot * (i + rng.random()), k) for i, k in enumerate(kinds)]


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


async def sample(chaos: Chaos) -> None:
    stack, ledger = chaos.stack, chaos.ledger
    try:
        containers, jobs = await asyncio.to_thread(engine_counts, stack)
    except Exception:
        pass  # the engine is being restarted
    else:
        ledger.check(
            "one container per workspace", max(containers.values(), default=0) <= 1, str(containers)
        )
        ledger.check("one job per workspace", max(jobs.values(), default=0) <= 1, str(jobs))
    for name in chaos.names:
        try:
            obj = await stack.get(name)
        except Exception:
            continue  # the API server or PostgreSQL is being restarted
        key = status(obj).get("archive_key")
        if key:
            ok = await asyncio.to_thread(_exists, stack, key)
            ledger.check("needed archive present", ok, f"{name}: {key}")
    await recover_errors(chaos)


def _exists(stack: Stack, key: str) -> bool:
    try:
        stack.s3.stat_object(stack.bucket, key)
        return True
    except Exception:
        return False


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


async def inject(chaos: Chaos, kind: str) -> None:
    label, fault = FAULTS[kind]
    what = await fault(chaos)
    chaos.ledger.faults[label if what.startswith(INJECTED) else f"skipped: {what}"] += 1


def report(ledger: Ledger, elapsed: float, services: str) -> str:
    lines = [
        f"chaos soak: seed {SEED}, {elapsed:.0f} s, {ledger.changes} desired-state changes, "
        f"{len(ledger.watched)} watched events, watch resumes after {dict(ledger.resumes)}",
        f"  services: {services}",
        "  faults injected:",
        *(f"    {name:<50} {n:>5}" for name, n in sorted(ledger.faults.items())),
        f"  outages: {', '.join(ledger.outages) or 'none'}",
        "  ERROR recovered as an administrator (reason/code in operation):",
        *(f"    {name:<50} {n:>5}" for name, n in sorted(ledger.recoveries.items())),
        "  checks made:",
        *(f"    {name:<50} {n:>5}" for name, n in sorted(ledger.checks.items())),
        f"  violations: {len(ledger.violations)}",
        *(f"    {v}" for v in ledger.violations[:20]),
    ]
    return "\n".join(lines)


async def test_chaos_soak(stack: Stack, chaos_services: Any) -> None:
    """Long because the soak is one loop with its checks; the steps are helpers above."""
    rng = random.Random(SEED)
    print(f"\nchaos soak seed {SEED} (replay: CODEHUB_CHAOS_SEED={SEED})")
    engine = chaos_services.docker
    services = "private PostgreSQL, private S3, " + (
        f"private Docker engine (bridge {engine.bridge})"
        if engine
        else f"shared Docker engine, not restarted: {chaos_services.docker_skip}"
    )
    stack.wait_leader(stack.start_coordinator("chaos-a"))
    stack.start_coordinator("chaos-b")
    names = [f"chaos-{i}" for i in range(WORKSPACES)]
    data = await prepare(stack, names)
    async with stack.api("admin") as api:
        since = str((await api.list(USER))["metadata"]["resourceVersion"])
    ledger = Ledger()
    chaos = Chaos(stack, chaos_services, ledger, rng, names, dict.fromkeys(names, "RUNNING"))
    planned = schedule(rng)
    watcher = asyncio.create_task(watch_resuming(stack, ledger, since))
    start = time.monotonic()
    try:
        while time.monotonic() - start < SECONDS or planned:
            if planned and planned[0][0] <= time.monotonic() - start:
                await inject(chaos, planned.pop(0)[1])
            elif rng.random() < 0.2:
                await inject(chaos, rng.choice(sorted(FAULTS)))
            else:
                name = rng.choice(names)
                chaos.desired[name] = rng.choice(sorted(DISPLAY))
                with contextlib.suppress(Exception):
                    await stack.set_desired(name, chaos.desired[name])
                    ledger.changes += 1
            await sample(chaos)
            await asyncio.sleep(rng.uniform(0.5, 4.0))

        # Quiet period: the last desired states must be reached, the data intact.
        if not any(c.alive() and c.is_leader() for c in stack.coordinators):
            stack.start_coordinator("chaos-final")
        for name in names:
            with contextlib.suppress(Exception):
                await stack.set_desired(name, chaos.desired[name])
        for name in names:
            await converge(chaos, name, chaos.desired[name])
            ledger.check("converged to last desired", True, name)
        await sample(chaos)
        for name in names:
            await stack.set_desired(name, "RUNNING")
        for name in names:
            await converge(chaos, name, "RUNNING")
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
        summary = report(ledger, time.monotonic() - start, services)
        print(summary)
        # Kept as an artifact: CI's log shows a passing test's output only as a dot.
        SUMMARY.parent.mkdir(exist_ok=True)
        SUMMARY.write_text(summary + "\n")
    assert not ledger.violations, summary
