"""The demo workspace of ``dev up``: created from examples/workspace.yaml, followed until it
runs, then the lines that tell a newcomer how to use the stack."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from codehub.crd_like.client.api import ApiClient, ApiError
from codehub.crd_like.client.manifests import load_manifests
from codehub.crd_like.identity import DESIRED_SOURCE_ANNOTATION
from codehub.operator.cli.dev.state import DEMO_NAMESPACE, DevStackError, Paths, say
from codehub.operator.cli.open import signin_link, workspace_url
from codehub.vocabulary.timestamps import parse_rfc3339

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "workspace.yaml"
DEMO_TIMEOUT = 300.0
#: Seconds between two reads of the demo while ``follow`` waits.
POLL = 0.5
#: How often ``follow`` starts the demo again after something else put it to sleep.
WAKES = 3

Obj = dict[str, Any]


@dataclass(frozen=True)
class Freshness:
    """When a status read back is current. A coordinator this ``dev up`` (re)started has
    not observed anything yet: until it writes an ``observed_at`` after ``since``, the
    status is what the previous one saw (RUNNING before ``dev down`` removed the container).
    An unchanged status gets a new ``observed_at`` only once the old one is half the
    stale threshold old (docs/observation.md), so once ``confirm_after`` seconds (two
    health monitor passes) have gone without a write, the status stands as current."""

    since: datetime | None = None
    confirm_after: float = 0.0
    started: float = 0.0

    def current(self, status: Obj) -> bool:
        if self.since is None or time.monotonic() - self.started > self.confirm_after:
            return True
        observed_at = parse_rfc3339(status.get("observed_at"))
        return observed_at is not None and observed_at > self.since


async def apply_demo(server: str, token: str, ca_file: str) -> tuple[str, str]:
    """Create the example workspace unless it exists, and start it if it sleeps (a stack
    brought up again days later finds it in STANDBY or ARCHIVED, put there by its idle
    TTLs); (namespace, name)."""
    manifest = load_manifests([str(EXAMPLE)])[0]
    ns = manifest.namespace or DEMO_NAMESPACE
    async with ApiClient(server, token, ca_file=ca_file) as api:
        try:
            obj = await api.get(ns, manifest.name)
        except ApiError as exc:
            if not exc.not_found:
                raise
            await api.create(ns, manifest.obj)
            say(f"    created workspace {ns}/{manifest.name} from {EXAMPLE.name}")
        else:
            say(f"    workspace {ns}/{manifest.name} already exists")
            await wake_if_asleep(api, ns, manifest.name, obj)
    return ns, manifest.name


async def wake_if_asleep(api: ApiClient, ns: str, name: str, obj: Obj) -> None:
    """Set desired_state RUNNING unless it is. The server records the change as the
    user's, so the idle TTL counts its idle time from now."""
    desired = (obj.get("spec") or {}).get("desired_state")
    if desired == "RUNNING":
        return
    source = ((obj.get("metadata") or {}).get("annotations") or {}).get(DESIRED_SOURCE_ANNOTATION)
    why = f", set by {source}" if source else ""
    say(f"    desired_state is {desired}{why}: starting it")
    await api.patch_merge(ns, name, {"spec": {"desired_state": "RUNNING"}})


async def follow(
    server: str, token: str, ca_file: str, ns: str, name: str, fresh: Freshness
) -> Obj:
    """Print each change of operation/observed status until a current status shows
    display RUNNING (or ERROR)."""
    start = time.monotonic()
    last: tuple[Any, ...] | None = None
    wakes = WAKES
    async with ApiClient(server, token, ca_file=ca_file) as api:
        while True:
            obj = await api.get(ns, name)
            if (obj.get("spec") or {}).get("desired_state") != "RUNNING":
                # The idle TTL of a workspace idle since the last session may act before
                # it runs again; the newcomer asked for a running demo, so start it again,
                # but do not fight whoever keeps stopping it.
                if not wakes:
                    raise DevStackError(
                        f"the demo workspace was put to sleep {WAKES + 1} times while"
                        f" starting; see `codehub describe ws {name}`"
                    )
                wakes -= 1
                await wake_if_asleep(api, ns, name, obj)
                continue
            status = obj.get("status") or {}
            now = (
                (obj.get("spec") or {}).get("desired_state"),
                status.get("operation") or "NONE",
                status.get("observed_status") or "PENDING",
                status.get("display") or "PENDING",
                fresh.current(status),
            )
            if now != last:
                say(
                    f"    [{time.monotonic() - start:5.1f}s] desired={now[0]} operation={now[1]}"
                    f" observed={now[2]} display={now[3]}"
                    + ("" if now[4] else " (not yet observed by this coordinator)")
                )
                last = now
            if now[4] and now[3] == "RUNNING" and now[1] == "NONE":
                return obj
            if now[4] and now[3] == "ERROR":
                info = status.get("error_info") or {}
                raise DevStackError(
                    f"the demo workspace failed: {info.get('reason')}: {info.get('message')}"
                )
            if time.monotonic() - start > DEMO_TIMEOUT:
                raise DevStackError(f"the demo workspace is not RUNNING after {DEMO_TIMEOUT:.0f}s")
            await asyncio.sleep(POLL)


async def demo_link(server: str, token: str, ca_file: str, ns: str, name: str) -> str | None:
    """A single-use sign-in link to the demo workspace; None (and a note) if refused."""
    async with ApiClient(server, token, ca_file=ca_file) as api:
        try:
            return await signin_link(api, ns, name)
        except ApiError as exc:
            say(f"    no sign-in link: {exc}")
            return None


def usage(
    paths: Paths,
    server: str,
    coord: str,
    ns: str,
    name: str,
    detach: bool,
    link: str | None = None,
) -> None:
    env = paths.cli_env
    kc = paths.kubeconfig(DEMO_NAMESPACE)
    akc = paths.kubeconfig("admin")
    say(
        f"""
codehub dev stack is up. The demo workspace {ns}/{name} is RUNNING.

  Open it in a browser (the certificate is self-signed: accept the browser's warning):
    {workspace_url(server, ns, name)}
    sign-in link (works once, within a minute): {link or "-"}
    a fresh link any time:  codehub open {name} --browser

  Use the CLI as user `dev`:
    source {env}
    codehub get ws
    codehub describe ws {name}
    codehub stop {name}        # RUNNING -> STANDBY (container gone, volume kept)
    codehub archive {name}     # -> ARCHIVED (volume packed into the object store)
    codehub start {name}       # restore and start again
    codehub wait ws {name} --for=display=RUNNING --timeout=300

  kubectl:  kubectl --kubeconfig {kc} get ws
            kubectl --kubeconfig {akc} get ws -A     # administrator
  Metrics:  {server}/metrics   (bearer token of `operator` or `admin`, in {paths.tokens})
            {coord}/metrics   (no token: aggregates only)
  Health:   {coord}/healthz  (leadership and components)
  Logs:     {paths.logs}/
  Stop:     codehub dev down
"""
    )
    if detach:
        say("Detached: the server and coordinator keep running in the background.")
