#!/usr/bin/env python3
# ruff: noqa: ASYNC110, ASYNC210, ASYNC220, ASYNC221 - a serial benchmark; blocking is the point
"""Lifecycle latency against the raw engine work, in the same run (docs/architecture.md).

Three transitions, each timed for codehub and for the same engine work done directly
with the Docker SDK, interleaved per round so machine load hits both sides alike:

- apply -> RUNNING: create a Workspace (desired RUNNING) through the API and follow it on
  a watch until ``display=RUNNING`` with no operation (API write, kopf event, claim,
  provision, start + /healthz, completion, observation) against raw ``volumes.create`` +
  ``containers.run`` with a published port + polling /healthz until it answers;
- RUNNING -> STANDBY: patch desired STANDBY until ``display=STANDBY`` against raw
  ``container.remove(force=True)`` (what STOPPING does: kill and remove);
- STANDBY -> RUNNING: patch desired RUNNING until ``display=RUNNING`` against raw
  ``containers.run`` on the existing volume + /healthz.

Prints medians, the ratios and the goal (<= 1.3x); asserts nothing. ``--keep-log`` copies
the coordinator's log (millisecond timestamps of claim, completion, observation) for a
timeline. Services come from scripts/dev-services; the coordinator is a subprocess.

    .venv/bin/python bench/lifecycle_latency.py --rounds 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from _common import REPO, free_port, service_env
from scale import local_server, log

IMAGE = "codehub/workspace-test:local"
#: Wall-clock time each workspace's create was answered, and the create -> claim gaps.
CREATED_AT: dict[str, float] = {}
GAPS: list[float] = []
COORDINATOR_CODE = (
    "import json, sys\n"
    "from codehub.operator.coordinator import run_coordinator\n"
    "from codehub.operator.settings import Settings\n"
    "run_coordinator(Settings.from_env(), '127.0.0.1', int(sys.argv[1]),"
    " scope_labels=json.loads(sys.argv[2]))\n"
)


def docker(env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        ["docker", *args], env=env, capture_output=True, text=True, check=True
    ).stdout
    return out.strip()


def wait_http(url: str, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer")
        time.sleep(0.02)


TRANSITIONS = ("apply -> RUNNING", "RUNNING -> STANDBY", "STANDBY -> RUNNING")
GOAL = 1.3


class Raw:
    """The same engine work as codehub, straight through the Docker SDK."""

    def __init__(self, docker_host: str, labels: dict[str, str]) -> None:
        import docker as sdk

        self.client = sdk.DockerClient(base_url=docker_host)
        self.labels = labels

    def run(self, name: str) -> None:
        container = self.client.containers.run(
            IMAGE,
            name=name,
            detach=True,
            labels=self.labels,
            user="1000",
            environment={"HOME": "/home/coder"},
            ports={"8080/tcp": ("127.0.0.1", None)},
            volumes={name: {"bind": "/home/coder", "mode": "rw"}},
        )
        container.reload()
        port = container.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
        wait_http(f"http://127.0.0.1:{port}/healthz")

    def apply(self, name: str) -> float:
        t0 = time.monotonic()
        self.client.volumes.create(name, labels=self.labels)
        self.run(name)
        return time.monotonic() - t0

    def stop(self, name: str) -> float:
        t0 = time.monotonic()
        self.client.api.remove_container(name, force=True)
        return time.monotonic() - t0

    def wake(self, name: str) -> float:
        t0 = time.monotonic()
        self.run(name)
        return time.monotonic() - t0

    def cleanup(self, names: list[str]) -> None:
        for name in names:
            with contextlib.suppress(Exception):
                self.client.api.remove_container(name, force=True)
            with contextlib.suppress(Exception):
                self.client.api.remove_volume(name, force=True)
        self.client.close()


async def wait_for(api: Any, ns: str, name: str, rv: str, display: str) -> None:
    """Follow ``name`` on a watch from ``rv`` until ``display`` with no operation."""
    while True:
        watch = api.watch(
            ns, resource_version=rv, field_selector=f"metadata.name={name}", timeout_seconds=300
        )
        async for _type, obj in watch:
            st = obj.get("status") or {}
            if st.get("display") == display and (st.get("operation") or "NONE") == "NONE":
                return
            if st.get("display") == "ERROR":
                raise RuntimeError(f"{name}: {st.get('error_info')}")
            rv = obj["metadata"]["resourceVersion"]


async def codehub_apply(api: Any, ns: str, name: str) -> float:
    body = {
        "apiVersion": "codehub.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"desired_state": "RUNNING", "image_ref": IMAGE},
    }
    t0 = time.monotonic()
    created = await api.create(ns, body)
    CREATED_AT[name] = time.time()
    await wait_for(api, ns, name, created["metadata"]["resourceVersion"], "RUNNING")
    return time.monotonic() - t0


def claim_gaps(logf: Path) -> list[float]:
    """Seconds from the API's answer to a create to the coordinator's PROVISIONING claim,
    from the log's millisecond timestamps (same clock, same machine)."""
    gaps = []
    for line in logf.read_text(errors="replace").splitlines():
        if ": claimed PROVISIONING" not in line:
            continue
        name = line.split("bench/", 1)[-1].split(":", 1)[0]
        if name in CREATED_AT and name != "warmup":
            stamp = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
            gaps.append(stamp.timestamp() - CREATED_AT[name])
    return gaps


async def codehub_desired(api: Any, ns: str, name: str, desired: str) -> float:
    t0 = time.monotonic()
    patched = await api.patch_merge(ns, name, {"spec": {"desired_state": desired}})
    await wait_for(api, ns, name, patched["metadata"]["resourceVersion"], desired)
    return time.monotonic() - t0


async def start_coordinator(server: Any, labels: dict[str, str]) -> tuple[Any, Path]:
    port = free_port()
    cenv = {
        **server.env_for_clients(),
        "CODEHUB_TOKEN": server.tokens["operator"],
        "CODEHUB_NODE_ID": "bench",
        "PYTHONUNBUFFERED": "1",
    }
    logf = Path(server.state_dir) / "coordinator.log"
    coord = subprocess.Popen(
        [sys.executable, "-c", COORDINATOR_CODE, str(port), json.dumps(labels)],
        env=cenv,
        stdout=logf.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz") as r:
                if json.loads(r.read())["leader"]:
                    break
        except (urllib.error.URLError, OSError):
            pass
        if coord.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("coordinator did not lead: " + logf.read_text()[-2000:])
        await asyncio.sleep(0.2)
    await asyncio.sleep(3)  # kopf connected and watching
    return coord, logf


async def one_round(api: Any, raw: Raw, name: str, raw_name: str) -> dict[str, tuple[float, float]]:
    """codehub and raw times of each transition for one workspace."""
    out: dict[str, tuple[float, float]] = {}
    ours = await codehub_apply(api, "bench", name)
    out[TRANSITIONS[0]] = (ours, await asyncio.to_thread(raw.apply, raw_name))
    ours = await codehub_desired(api, "bench", name, "STANDBY")
    out[TRANSITIONS[1]] = (ours, await asyncio.to_thread(raw.stop, raw_name))
    ours = await codehub_desired(api, "bench", name, "RUNNING")
    out[TRANSITIONS[2]] = (ours, await asyncio.to_thread(raw.wake, raw_name))
    return out


async def bench(args: argparse.Namespace) -> dict[str, list[tuple[float, float]]]:
    from codehub.crd_like.client.api import ApiClient

    env = service_env()
    subprocess.run(
        [str(REPO / "scripts" / "build-test-images")],
        env={**os.environ, **env},
        check=True,
        stdout=subprocess.DEVNULL,
    )
    bench_id = uuid.uuid4().hex[:8]
    labels = {"codehub.io/bench": bench_id}
    limits = {
        "MAX_RUNNING_PER_USER": "1000",
        "MAX_RUNNING_GLOBAL": "1000",
        # As deployed with the operator: new workspaces carry its finalizer (docs/api.md).
        "CODEHUB_FINALIZER_ON_CREATE": "1",
    }
    raw = Raw(env["DOCKER_HOST"], labels)
    raw_names: list[str] = []
    results: dict[str, list[tuple[float, float]]] = {t: [] for t in TRANSITIONS}
    with local_server(env, extra_env=limits, users=("bench",)) as server:
        coord, logf = await start_coordinator(server, labels)
        names = ["warmup", *(f"ws-{i:03d}" for i in range(args.rounds))]
        try:
            async with ApiClient(server.url, server.tokens["bench"], ca_file=server.ca_file) as api:
                for i, name in enumerate(names):
                    raw_names.append(f"bench-raw-{bench_id}-{name}")
                    times = await one_round(api, raw, name, raw_names[-1])
                    if i == 0:
                        continue  # warm-up: first container start, first kopf handler run
                    for t, pair in times.items():
                        results[t].append(pair)
                    log(
                        f"round {i}/{args.rounds}: "
                        + "  ".join(f"{t}: {o:.2f}s/{r:.2f}s" for t, (o, r) in times.items())
                    )
                for name in names:
                    await api.delete("bench", name)
                deadline = time.monotonic() + 300
                while (await api.list("bench"))["items"] and time.monotonic() < deadline:
                    await asyncio.sleep(1)
        finally:
            GAPS.extend(claim_gaps(logf))
            coord.terminate()
            try:
                coord.wait(60)
            except subprocess.TimeoutExpired:
                coord.kill()
            if args.keep_log:
                shutil.copy(logf, args.keep_log)
            raw.cleanup(raw_names)
            cleanup_labelled(env["DOCKER_HOST"], bench_id)
    return results


def cleanup_labelled(docker_host: str, bench_id: str) -> None:
    denv = {**os.environ, "DOCKER_HOST": docker_host}
    flt = f"label=codehub.io/bench={bench_id}"
    for kind in ("container", "volume"):
        ids = docker(
            denv, kind, "ls", "-q", *(("-a",) if kind == "container" else ()), "--filter", flt
        ).split()
        if ids:
            subprocess.run(["docker", kind, "rm", "-f", *ids], env=denv, capture_output=True)


def report(results: dict[str, list[tuple[float, float]]], rounds: int) -> None:
    def q(xs: list[float], p: float) -> float:
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(p * len(xs)))]

    print()
    print(f"lifecycle latency, {rounds} workspaces, image {IMAGE} (goal: ratio <= {GOAL}x)")
    for t, pairs in results.items():
        ours = [o for o, _ in pairs]
        raw = [r for _, r in pairs]
        mo, mr = statistics.median(ours), statistics.median(raw)
        ratio = mo / mr if mr > 0 else float("inf")
        verdict = "meets" if ratio <= GOAL else "MISSES"
        print(f"  {t}")
        print(f"    codehub median {mo:.3f}s  p90 {q(ours, 0.9):.3f}s  min {min(ours):.3f}s")
        print(f"    raw     median {mr:.3f}s  p90 {q(raw, 0.9):.3f}s  min {min(raw):.3f}s")
        print(
            f"    ratio {ratio:.2f}x ({verdict} the {GOAL}x goal), "
            f"control-plane overhead {mo - mr:+.3f}s"
        )
    if GAPS:
        print(
            f"  create answered -> PROVISIONING claimed: median "
            f"{statistics.median(GAPS) * 1000:.0f}"
            f" ms, min {min(GAPS) * 1000:.0f} ms, max {max(GAPS) * 1000:.0f} ms"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--keep-log", help="copy the coordinator's log here")
    args = p.parse_args()
    import logging
    import signal

    # SIGTERM unwinds like Ctrl-C, so the server subprocess and the database are cleaned up.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    logging.basicConfig(level=logging.WARNING)
    report(asyncio.run(bench(args)), args.rounds)


if __name__ == "__main__":
    main()
