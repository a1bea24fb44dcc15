"""The API server's CPU per request, by kind of request, with watchers open.

Starts the API server as a subprocess (HTTPS, as in production, the operator's finalizer
put on at create as `bench/scale.py` runs it) on a throwaway database of the PostgreSQL
named by CODEHUB_DATABASE_URL (``eval "$(scripts/dev-services up)"``), opens ``--watchers``
watches of every workspace (kopf's and the coordinator's informer's, in the product),
then sends, phase after phase, the requests a workspace costs the server on its way to
RUNNING (docs/adr/0011-ten-thousand-workspaces.md): the create, core/v1 Events, the
coordinator's fenced status writes (JSON Patch with ``test`` operations on ``/status``),
a fenced write refused (422: the coordinator's view was behind), and GETs. For each
phase it prints the server's CPU per request (from ``/proc``, which hardly depends on
the machine's load, unlike rates), and at the end the weighted sum per workspace with
the mix of the scale benchmark. Nothing is asserted: compare two trees by running this
alternately with ``PYTHONPATH`` pointing at each (the server subprocess inherits it).

    .venv/bin/python bench/server_request_cost.py --workspaces 1000 --watchers 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, cpu_seconds
from watch_latency import Server, run_with_server

API = "/apis/codehub.io/v1alpha1"
JSON_PATCH = "application/json-patch+json"
#: Requests per workspace of each phase in a converging 3,000-workspace run of
#: bench/scale.py (server metrics, 2026-11-27, after one OperationCompleted Event per
#: PENDING -> RUNNING): 1 create, 1 Event, 3 status writes, 0.5 refused fenced writes,
#: 0.5 GETs.
MIX = {"create": 1.0, "event": 1.0, "status": 3.0, "refused": 0.5, "get": 0.5}


def ns_of(i: int, namespaces: int) -> str:
    return f"u{i % namespaces:03d}"


def workspace(i: int, namespaces: int) -> dict[str, Any]:
    return {
        "apiVersion": "codehub.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": f"ws-{i:05d}", "namespace": ns_of(i, namespaces)},
        "spec": {"desired_state": "RUNNING", "image_ref": "bench:latest", "standby_ttl_seconds": 0},
    }


def event(obj: dict[str, Any], reason: str) -> dict[str, Any]:
    meta = obj["metadata"]
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta['name']}.{uuid.uuid4().hex[:16]}",
            "namespace": meta["namespace"],
        },
        "involvedObject": {
            "apiVersion": "codehub.io/v1alpha1",
            "kind": "Workspace",
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "reason": reason,
        "message": f"operation {reason} of {meta['name']} completed",
        "type": "Normal",
        "source": {"component": "codehub-operator"},
        "reportingComponent": "codehub-operator",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "eventTime": None,
        "count": 1,
    }


def status_ops(step: int, obj: dict[str, Any]) -> list[dict[str, Any]]:
    """The coordinator's three fenced writes: claim, completion, observation."""
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    op_id = f"op-{obj['metadata']['name']}"
    if step == 0:
        return [
            {
                "op": "test",
                "path": "/metadata/resourceVersion",
                "value": obj["metadata"]["resourceVersion"],
            },
            {
                "op": "add",
                "path": "/status",
                "value": {
                    "observed_status": "PENDING",
                    "operation": "STARTING",
                    "op_id": op_id,
                    "op_started_at": now,
                    "observed_at": now,
                    "error_count": 0,
                },
            },
        ]
    fence = [
        {"op": "test", "path": "/status/op_id", "value": op_id},
        {"op": "test", "path": "/status/operation", "value": "STARTING"},
    ]
    if step == 1:
        changes = {"observed_status": "RUNNING", "operation": "NONE", "observed_at": now}
    else:
        fence = [{"op": "test", "path": "/status/op_id", "value": op_id}]
        changes = {
            "endpoint": "http://127.0.0.1:9/",
            "observed_at": now,
            "idle_action": "standby",
            "idle_action_at": now,
        }
    return fence + [{"op": "add", "path": f"/status/{k}", "value": v} for k, v in changes.items()]


class Client:
    def __init__(self, session: aiohttp.ClientSession, server: Server, concurrency: int) -> None:
        self.session = session
        self.server = server
        self.ssl = server.ssl()
        self.sem = asyncio.Semaphore(concurrency)

    async def call(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> tuple[int, Any]:
        async with self.sem:
            data = None if body is None else json.dumps(body)
            headers = {"Content-Type": content_type} if data is not None else {}
            async with self.session.request(
                method, self.server.url + path, data=data, headers=headers, ssl=self.ssl
            ) as r:
                return r.status, await r.json()


async def watch(client: Client, rv: str, seen: list[int]) -> None:
    """A plain watch of every workspace with bookmarks, as kopf and the informer open."""
    url = f"{client.server.url}{API}/workspaces?watch=true&allowWatchBookmarks=true"
    async with client.session.get(
        f"{url}&resourceVersion={rv}&timeoutSeconds=3600", ssl=client.ssl
    ) as r:
        async for _line in r.content:
            seen[0] += 1


def profile_name(phase: str) -> str:
    return phase.split(" (")[0].replace(" ", "_").replace("/", "") + ".txt"


def start_profiler(server: Server, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy of the server, only samples holding the GIL (Python running), raw format."""
    if server.proc is None:
        return None
    cmd = [str(REPO / ".venv/bin/py-spy"), "record", "--gil", "-r", "250", "-f", "raw"]
    cmd += ["-p", str(server.proc.pid), "-o", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profiler(spy: subprocess.Popen[bytes]) -> None:
    spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
    spy.wait(30)


async def phase(
    name: str,
    server: Server,
    n: int,
    run: Callable[[int], Awaitable[None]],
    profile: str = "",
    per: int = 1,
) -> float:
    """Run ``run(0..n-1)`` concurrently; the server's CPU per request (``per`` each)."""
    spy = start_profiler(server, Path(profile) / profile_name(name)) if profile else None
    if spy is not None:
        await asyncio.sleep(1.0)  # py-spy attached
    cpu0 = cpu_seconds(server.proc.pid) if server.proc else 0.0
    t0 = time.perf_counter()
    await asyncio.gather(*(run(i) for i in range(n)))
    wall = time.perf_counter() - t0
    await asyncio.sleep(0.3)  # the watch fan-out of the last writes
    cpu = ((cpu_seconds(server.proc.pid) if server.proc else 0.0) - cpu0) / (n * per) * 1000
    if spy is not None:
        stop_profiler(spy)
    print(
        f"  {name:<34} {n * per:6d} requests  {n * per / wall:6.0f}/s  "
        f"server CPU {cpu:5.2f} ms/request"
    )
    return cpu


async def run(args: argparse.Namespace, server: Server) -> None:
    n, nss = args.workspaces, args.namespaces
    headers = {"Authorization": f"Bearer {server.token}"}
    async with aiohttp.ClientSession(
        headers=headers, connector=aiohttp.TCPConnector(limit=0)
    ) as session:
        c = Client(session, server, args.concurrency)
        status, listed = await c.call("GET", f"{API}/workspaces?limit=1")
        assert status == 200, listed
        seen = [0]
        watchers = [
            asyncio.create_task(watch(c, listed["metadata"]["resourceVersion"], seen))
            for _ in range(args.watchers)
        ]
        await asyncio.sleep(0.5)
        objs: dict[int, dict[str, Any]] = {}
        cost: dict[str, float] = {}

        async def create(i: int) -> None:
            body = workspace(i, nss)
            code, objs[i] = await c.call(
                "POST", f"{API}/namespaces/{body['metadata']['namespace']}/workspaces", body
            )
            assert code == 201, objs[i]

        async def post_event(i: int) -> None:
            obj = objs[i // 2]
            ns = obj["metadata"]["namespace"]
            reason = "OperationCompleted" if i % 2 else "OperationStarted"
            code, out = await c.call("POST", f"/api/v1/namespaces/{ns}/events", event(obj, reason))
            assert code == 201, out

        def item(obj: dict[str, Any]) -> str:
            m = obj["metadata"]
            return f"{API}/namespaces/{m['namespace']}/workspaces/{m['name']}"

        async def write_status(i: int) -> None:
            for step in range(3):
                obj = objs[i]
                code, out = await c.call(
                    "PATCH", item(obj) + "/status", status_ops(step, obj), JSON_PATCH
                )
                assert code == 200, out
                objs[i] = out

        async def refused(i: int) -> None:
            obj = objs[i]
            ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": "1"}]
            ops.append(
                {"op": "add", "path": "/status/observed_at", "value": "2026-01-01T00:00:00Z"}
            )
            code, out = await c.call("PATCH", item(obj) + "/status", ops, JSON_PATCH)
            assert code == 422, out

        async def get(i: int) -> None:
            code, out = await c.call("GET", item(objs[i]))
            assert code == 200, out

        print(f"{n} workspaces in {nss} namespaces, {args.watchers} watchers, ", end="")
        print(f"concurrency {args.concurrency}:")
        prof = args.profile
        cost["create"] = await phase("create workspace", server, n, create, prof)
        cost["event"] = await phase("create core/v1 Event", server, 2 * n, post_event, prof)
        cost["status"] = await phase("fenced status write", server, n, write_status, prof, per=3)
        m = max(1, int(n * MIX["refused"]))
        cost["refused"] = await phase("fenced status write refused (422)", server, m, refused, prof)
        cost["get"] = await phase("get workspace", server, m, get, prof)
        cpu0 = cpu_seconds(server.proc.pid) if server.proc else 0.0
        await asyncio.sleep(2)
        idle = ((cpu_seconds(server.proc.pid) if server.proc else 0.0) - cpu0) / 2 * 100
        total = sum(MIX[k] * cost[k] for k in MIX)
        print(
            f"per workspace (mix {', '.join(f'{k} {v:g}' for k, v in MIX.items())}): "
            f"server CPU {total:.2f} ms; idle server {idle:.1f} % of a core; "
            f"watch lines received {seen[0]}; load average {os.getloadavg()[0]:.1f}"
        )
        for w in watchers:
            w.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--workspaces", type=int, default=1000)
    parser.add_argument("--namespaces", type=int, default=20)
    parser.add_argument("--watchers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument(
        "--profile", default="", help="a directory: py-spy (--gil) of the server, a file per phase"
    )
    args = parser.parse_args()
    os.environ["CODEHUB_FINALIZER_ON_CREATE"] = "1"  # as bench/scale.py runs the server
    return run_with_server(run, args)


if __name__ == "__main__":
    sys.exit(main())
