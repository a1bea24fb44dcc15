"""What the kopf e2e tests share: kopf's login against a test API server, kopf run in a
thread of its own (as a deployment runs it in a process), and a bounded wait."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import kopf


def add_login(registry: kopf.OperatorRegistry, server: Any) -> None:
    """kopf connects as the operator identity, over the server's TLS."""

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(
            server=server.url,
            token=server.tokens["operator"],
            ca_path=server.ca_file,
            scheme="Bearer",
        )


class OperatorThread:
    def __init__(self, registry: kopf.OperatorRegistry) -> None:
        self.stop_flag = threading.Event()
        self.ready_flag = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(registry,), daemon=True)

    def _run(self, registry: kopf.OperatorRegistry) -> None:
        try:
            asyncio.run(
                kopf.operator(
                    registry=registry,
                    standalone=True,
                    clusterwide=True,
                    stop_flag=self.stop_flag,
                    ready_flag=self.ready_flag,
                )
            )
        except BaseException as exc:
            self.error = exc

    def start(self) -> None:
        self.thread.start()
        assert self.ready_flag.wait(60), "kopf did not become ready"

    def stop(self) -> None:
        self.stop_flag.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "kopf did not stop"


async def eventually(check: Callable[[], Any], what: str, limit: float = 30.0) -> Any:
    deadline = time.monotonic() + limit
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
