"""Private service instances a test may stop and start at will (never the shared dev
services other processes use), and the API server in a thread of its own.

The services are the very classes of ``scripts/dev-services`` pointed at a private
directory, so they start exactly as the shared ones do (same binaries, same flags). A
private Docker engine is in ``support.private_docker``.
"""

from __future__ import annotations

import asyncio
import importlib.machinery
import importlib.util
import signal
import socket
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

from codehub.crd_like.config import ApiConfig
from codehub.crd_like.server.app import serve

REPO = Path(__file__).resolve().parents[2]


def dev_services() -> ModuleType:
    """``scripts/dev-services`` as a module (it has no ``.py`` suffix)."""
    name = "codehub_dev_services"
    if name in sys.modules:
        return sys.modules[name]
    loader = importlib.machinery.SourceFileLoader(name, str(REPO / "scripts" / "dev-services"))
    spec = importlib.util.spec_from_loader(name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


def private_postgres(root: Path) -> Any:
    """A PostgreSQL of its own under ``root``: ``.up()`` returns its URL, ``.down()``
    stops it (fast shutdown); ``.up()`` again restarts it on the same port and data."""
    return dev_services().Postgres(root)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerThread:
    """``serve`` (plain HTTP on 127.0.0.1) in a thread with its own event loop, as a
    separate server would be."""

    def __init__(self, config: ApiConfig, port: int | None = None) -> None:
        self.config = config
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self.stop: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._main, name="api-server", daemon=True)

    def _main(self) -> None:
        async def run() -> None:
            self.stop = asyncio.Event()
            await serve(self.config, "127.0.0.1", self.port, True, self.stop)

        try:
            self.loop.run_until_complete(run())
        except BaseException as exc:  # reported by close()
            self.error = exc

    def start(self) -> None:
        self.thread.start()

    def close(self, patience: float = 60.0) -> None:
        if self.stop is not None:
            self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(patience)


def private_seaweed(root: Path) -> Any:
    """A SeaweedFS S3 of its own under ``root``: ``.up()`` returns its ``CODEHUB_S3_*``
    settings (bucket ``codehub`` made), ``.down()`` stops it; ``.up()`` again restarts it
    on the same ports and data."""
    return dev_services().Seaweed(root)


def stop_seaweed(seaweed: Any, patience: float = 5.0) -> None:
    """Stop a private SeaweedFS as ``.down()`` does, but SIGKILL it after ``patience``
    seconds rather than 30: its shutdown often waits that long, and a test restarting it
    wants an outage of seconds (a kill is a fault of its own kind, too)."""
    services = dev_services()
    pid = services.read_pid(seaweed.pidfile)
    if pid:
        services.stop_pid(pid, "weed", signal.SIGTERM, patience)
    seaweed.pidfile.unlink(missing_ok=True)
