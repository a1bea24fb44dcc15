"""A Docker engine of the test's own, beside the shared one, that a test may restart.

Two engines on one machine coexist when they share nothing: this one has its own
``--data-root``, ``--exec-root`` (so its own containerd), ``--pidfile`` and unix socket,
and its own bridge, created here with ``ip link`` on a /24 no route uses, passed as
``--bridge``. It never touches iptables or IP forwarding (``--iptables=false
--ip-masq=false --ip-forward=false``): the shared engine's rules stay as they are, and
published ports (127.0.0.1 only, as codehub publishes them) go through the userland
proxy. Its containers therefore have no outbound network, which neither workspaces in
tests nor storage jobs (``network_mode=none``) need. Needs root; ``unavailable()`` says
why not otherwise.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from support.private_services import dev_services


def unavailable() -> str | None:
    """Why a private engine cannot run here, or None."""
    if os.geteuid() != 0:
        return "a private Docker engine needs root (its own bridge and containerd)"
    for tool in ("dockerd", "containerd", "ip"):
        if shutil.which(tool) is None:
            return f"no {tool} on PATH"
    return None


def _free_subnet(rng: random.Random) -> ipaddress.IPv4Network:
    routes = subprocess.run(
        ["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True, check=True
    ).stdout
    used = []
    for word in routes.split():
        with contextlib.suppress(ValueError):
            used.append(ipaddress.ip_network(word, strict=False))
    for _ in range(200):
        net = ipaddress.ip_network(f"10.{rng.randrange(200, 250)}.{rng.randrange(256)}.0/24")
        if not any(net.overlaps(u) for u in used if u.version == 4 and u.prefixlen > 0):
            return net
    raise RuntimeError("no free 10.x.y.0/24 for a private bridge")


class PrivateDocker:
    """``up()`` starts (or restarts) the engine and returns its ``DOCKER_HOST``;
    ``down()`` stops it as a host shutdown would (SIGTERM: containers stopped, data
    kept); ``close()`` stops it and removes its bridge and data."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "docker"
        self.sock = self.dir / "docker.sock"
        self.pidfile = self.dir / "docker.pid"
        self.logfile = self.dir / "dockerd.log"
        self.host = f"unix://{self.sock}"
        self.bridge = "chx" + uuid.uuid4().hex[:10]
        self.subnet: ipaddress.IPv4Network | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def _bridge_up(self) -> None:
        if self.subnet is not None:
            return
        subnet = _free_subnet(random.Random())
        gateway = f"{next(subnet.hosts())}/{subnet.prefixlen}"
        subprocess.run(["ip", "link", "add", self.bridge, "type", "bridge"], check=True)
        self.subnet = subnet
        subprocess.run(["ip", "addr", "add", gateway, "dev", self.bridge], check=True)
        subprocess.run(["ip", "link", "set", self.bridge, "up"], check=True)

    def up(self, timeout: float = 90.0) -> str:
        if self.proc is not None and self.proc.poll() is None:
            return self.host
        self._bridge_up()
        self.dir.mkdir(parents=True, exist_ok=True)
        for leftover in (self.sock, self.pidfile):
            leftover.unlink(missing_ok=True)
        cmd = [
            "dockerd",
            f"--data-root={self.dir / 'data'}",
            f"--exec-root={self.dir / 'exec'}",
            f"--host={self.host}",
            f"--pidfile={self.pidfile}",
            f"--bridge={self.bridge}",
            "--iptables=false",
            "--ip-masq=false",
            "--ip-forward=false",
            "--ip6tables=false",
        ]
        services = dev_services()
        self.proc = services.spawn(cmd, self.logfile)
        services.wait_for(
            lambda: services.docker_ping(self.host),
            "private dockerd",
            timeout,
            logfile=self.logfile,
            proc=self.proc,
        )
        return self.host

    def down(self, timeout: float = 90.0) -> None:
        """SIGTERM by the PID we started; the engine stops its containers first."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)

    def restart(self) -> float:
        """Stop and start again; returns how long the engine did not answer (s)."""
        began = time.monotonic()
        self.down()
        self.up()
        self.restarts += 1
        return time.monotonic() - began

    def load_images(self, source: Any, refs: Iterable[str]) -> None:
        """Copy images from another engine (``source``: a DockerClient) into this one."""
        import docker

        target = docker.DockerClient(base_url=self.host, timeout=120)
        try:
            for ref in refs:
                data = b"".join(source.images.get(ref).save(named=True))
                target.images.load(data)
        finally:
            target.close()

    def close(self) -> None:
        self.down()
        if self.subnet is not None:
            subprocess.run(["ip", "link", "del", self.bridge], check=False)
            self.subnet = None
        # Leftover mounts would make rmtree fail half-way; the engine unmounts on exit.
        shutil.rmtree(self.dir, ignore_errors=True)
