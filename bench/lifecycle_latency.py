#!/usr/bin/env python3
# ruff: noqa: ASYNC110, ASYNC210, ASYNC220, ASYNC221 - a serial benchmark; blocking is the point
"""apply -> RUNNING latency against the raw engine work, in the same run (docs/architecture.md).

For each of N rounds (interleaved, so machine load hits both sides alike):

- codehub: create a Workspace (desired RUNNING) through the API and follow it on a
  watch until ``display=RUNNING`` with no operation — API write, kopf event, claim,
  provision (volume), start (container + wait for /healthz), observation, status writes;
- raw: ``docker volume create`` + ``docker run -d -p 127.0.0.1::8080 -v ...`` of the same
  image, then poll the published port's /healthz until it answers.

Prints medians and the ratio; asserts nothing. Services come from scripts/dev-services;
the coordinator runs as a subprocess with the default intervals.

    .venv/bin/python bench/lifecycle_latency.py --rounds 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from scale import REPO, free_port, local_server, log, services_env

IMAGE = "codehub/workspace-test:local"
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


def raw_round(env: dict[str, str], name: str, labels: dict[str, str]) -> float:
    label_args = [a for k, v in labels.items() for a in ("--label", f"{k}={v}")]
    t0 = time.monotonic()
    docker(env, "volume", "create", *label_args, name)
    docker(
        env,
        "run",
        "-d",
        "--name",
        name,
        *label_args,
        "--user",
        "1000",
        "-e",
        "HOME=/home/coder",
        "-p",
        "127.0.0.1::8080",
        "-v",
        f"{name}:/home/coder",
        IMAGE,
    )
    port = docker(env, "port", name, "8080/tcp").splitlines()[0].rsplit(":", 1)[1]
    wait_http(f"http://127.0.0.1:{port}/healthz")
    return time.monotonic() - t0


async def codehub_round(api: Any, ns: str, name: str) -> float:
    body = {
        "apiVersion": "codehub.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"desired_state": "RUNNING", "image_ref": IMAGE},
    }
    t0 = time.monotonic()
    created = await api.create(ns, body)
    rv = created["metadata"]["resourceVersion"]
    while True:
        watch = api.watch(
            ns, resource_version=rv, field_selector=f"metadata.name={name}", timeout_seconds=300
        )
        async for _type, obj in watch:
            st = obj.get("status") or {}
            if st.get("display") == "RUNNING" and (st.get("operation") or "NONE") == "NONE":
                return time.monotonic() - t0
            if st.get("display") == "ERROR":
                raise RuntimeError(f"{name}: {st.get('error_info')}")
            rv = obj["metadata"]["resourceVersion"]


async def bench(args: argparse.Namespace) -> None:
    from codehub.crd_like.client.api import ApiClient

    env = services_env()
    subprocess.run(
        [str(REPO / "scripts" / "build-test-images")],
        env={**os.environ, **env},
        check=True,
        stdout=subprocess.DEVNULL,
    )
    denv = {**os.environ, "DOCKER_HOST": env["DOCKER_HOST"]}
    bench_id = uuid.uuid4().hex[:8]
    labels = {"codehub.io/bench": bench_id}
    limits = {"MAX_RUNNING_PER_USER": "1000", "MAX_RUNNING_GLOBAL": "1000"}
    raw_names: list[str] = []
    with local_server(env, extra_env=limits, users=("bench",)) as server:
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
        try:
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

            ours: list[float] = []
            raw: list[float] = []
            async with ApiClient(server.url, server.tokens["bench"], ca_file=server.ca_file) as api:
                # One warm-up of each (first container start, first kopf handler run).
                await codehub_round(api, "bench", "warmup")
                raw_names.append(f"bench-raw-{bench_id}-warmup")
                raw_round(denv, raw_names[-1], labels)
                for i in range(args.rounds):
                    t = await codehub_round(api, "bench", f"ws-{i:03d}")
                    ours.append(t)
                    raw_names.append(f"bench-raw-{bench_id}-{i:03d}")
                    r = await asyncio.to_thread(raw_round, denv, raw_names[-1], labels)
                    raw.append(r)
                    log(f"round {i + 1}/{args.rounds}: codehub {t:.2f}s  raw {r:.2f}s")
                names = ["warmup", *(f"ws-{i:03d}" for i in range(args.rounds))]
                for name in names:
                    await api.delete("bench", name)
                deadline = time.monotonic() + 300
                while (await api.list("bench"))["items"] and time.monotonic() < deadline:
                    await asyncio.sleep(1)
        finally:
            coord.terminate()
            try:
                coord.wait(60)
            except subprocess.TimeoutExpired:
                coord.kill()
            for name in raw_names:
                subprocess.run(["docker", "rm", "-f", name], env=denv, capture_output=True)
                subprocess.run(
                    ["docker", "volume", "rm", "-f", name], env=denv, capture_output=True
                )
            flt = f"label=codehub.io/bench={bench_id}"
            for kind in ("container", "volume"):
                ids = docker(
                    denv,
                    kind,
                    "ls",
                    "-q",
                    *(("-a",) if kind == "container" else ()),
                    "--filter",
                    flt,
                ).split()
                if ids:
                    subprocess.run(
                        ["docker", kind, "rm", "-f", *ids], env=denv, capture_output=True
                    )

    def q(xs: list[float], p: float) -> float:
        xs = sorted(xs)
        return xs[min(len(xs) - 1, int(p * len(xs)))]

    mo, mr = statistics.median(ours), statistics.median(raw)
    print()
    print(f"apply -> RUNNING, {args.rounds} workspaces, image {IMAGE}")
    print(
        f"  codehub (API + kopf + reconciler + observation): median {mo:.3f}s  "
        f"p90 {q(ours, 0.9):.3f}s  min {min(ours):.3f}s"
    )
    print(
        f"  raw docker volume create + run + /healthz:       median {mr:.3f}s  "
        f"p90 {q(raw, 0.9):.3f}s  min {min(raw):.3f}s"
    )
    print(
        f"  ratio codehub/raw (median): {mo / mr:.2f}x   control-plane overhead "
        f"{mo - mr:+.3f}s per workspace"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=20)
    args = p.parse_args()
    import logging
    import signal

    # SIGTERM unwinds like Ctrl-C, so the server subprocess and the database are cleaned up.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
