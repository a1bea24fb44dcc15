"""An in-memory InstanceController for unit tests and the scale benchmark.

Same contract as the Docker controller (idempotent start/delete, recreate of a stopped
container, VOLUME_NOT_FOUND without a home volume, one "engine call" per listing), plus
knobs real engines do not offer: injected failures, latency, and helpers that change
state behind the operator's back. With ``serve_http=True`` each running instance gets a
real HTTP server on 127.0.0.1 (``/healthz``, ``/`` and a WebSocket echo at ``/ws``) so
proxy tests can run without Docker.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from codehub.adapters import naming
from codehub.adapters.errors import ActionFailedError, ErrorCode
from codehub.adapters.interfaces import InstanceController, InstanceInfo, InstanceSpec

VolumeCheck = Callable[[str], bool | Awaitable[bool]]
#: A test hook: awaited with the call's positional arguments.
Hook = Callable[..., Awaitable[None]]


def install_hook(
    fake: object, method: str, before: Hook | None = None, after: Hook | None = None
) -> None:
    """Run ``before`` / ``after`` around every call of ``fake.method`` (both fakes use it).

    ``before`` may raise (an injected failure) or block (a hang, a gate); ``after`` runs
    only when the call succeeded (e.g. something else vanishes with it).
    """
    original = getattr(type(fake), method, None)
    if original is None or not inspect.iscoroutinefunction(original):
        raise ValueError(f"{type(fake).__name__} has no async method {method}")
    bound = original.__get__(fake)

    async def hooked(*args: object, **kwargs: object) -> object:
        if before is not None:
            await before(*args)
        result = await bound(*args, **kwargs)
        if after is not None:
            await after(*args)
        return result

    setattr(fake, method, hooked)


def remove_hook(fake: object, method: str) -> None:
    vars(fake).pop(method, None)


#: Image references the fake treats as missing from every registry.
MISSING_IMAGE_MARKER = "does-not-exist"


@dataclass
class FakeContainer:
    uid: str
    container_id: str
    image_ref: str
    labels: dict[str, str]
    cpu: str | None
    memory: str | None
    running: bool = False
    port: int | None = None
    runner: web.AppRunner | None = field(default=None, repr=False)


class FakeInstanceController(InstanceController):
    """In-memory workspace containers.

    Volumes: pass ``volume_exists`` (sync or async callable, e.g. bound to a fake storage
    provider) or manage ``self.volumes`` with :meth:`add_volume`/:meth:`remove_volume`.
    ``engine_calls`` counts one call per public method invocation (start counts one per
    engine step it would take: inspect, remove, volume check, create+start).
    """

    def __init__(
        self,
        *,
        volume_exists: VolumeCheck | None = None,
        latency: float = 0.0,
        serve_http: bool = False,
        missing_images: set[str] | None = None,
    ) -> None:
        self.containers: dict[str, FakeContainer] = {}
        self.volumes: set[str] = set()
        self._volume_exists = volume_exists
        self.latency = latency
        self.serve_http = serve_http
        self.missing_images: set[str] = set(missing_images or ())
        self.engine_calls = 0
        self.calls: dict[str, int] = defaultdict(int)
        self._failures: dict[str, deque[BaseException]] = defaultdict(deque)
        self._ids = itertools.count(1)
        self._fake_ports = itertools.count(40000)
        self._locks: dict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    # --- test knobs ----------------------------------------------------------------------

    def fail_next(self, method: str, exc: BaseException, times: int = 1) -> None:
        """Make the next ``times`` calls of ``method`` raise ``exc`` (before any effect)."""
        if not hasattr(InstanceController, method):
            raise ValueError(f"not an InstanceController method: {method}")
        for _ in range(times):
            self._failures[method].append(exc)

    def hook(self, method: str, *, before: Hook | None = None, after: Hook | None = None) -> None:
        """Run ``before``/``after`` around each call of ``method`` (see ``install_hook``)."""
        install_hook(self, method, before, after)

    def unhook(self, method: str) -> None:
        remove_hook(self, method)

    def set_latency(self, seconds: float) -> None:
        """Every later call sleeps this long first (real time)."""
        self.latency = seconds

    def add_volume(self, uid: str) -> None:
        self.volumes.add(uid)

    def remove_volume(self, uid: str) -> None:
        self.volumes.discard(uid)

    async def stop_behind_back(self, uid: str) -> None:
        """The container exits (crash, OOM, manual ``docker kill``) but stays around."""
        container = self.containers.get(uid)
        if container is not None:
            container.running = False
            await self._stop_server(container)

    async def remove_behind_back(self, uid: str) -> None:
        """The container vanishes without the operator asking (manual ``docker rm``)."""
        container = self.containers.pop(uid, None)
        if container is not None:
            await self._stop_server(container)

    def create_without_start(self, uid: str, image_ref: str) -> str:
        """Leave a container as a crash between create and start would (state "created")."""
        container = FakeContainer(
            uid=uid,
            container_id=f"fake-{next(self._ids)}",
            image_ref=image_ref,
            labels=naming.workspace_labels(uid),
            cpu=None,
            memory=None,
        )
        self.containers[uid] = container
        return container.container_id

    def container_id_sync(self, uid: str) -> str | None:
        container = self.containers.get(uid)
        return container.container_id if container else None

    async def container_id(self, uid: str) -> str | None:
        return self.container_id_sync(uid)

    # --- internals -----------------------------------------------------------------------

    async def _enter(self, method: str, engine_calls: int = 1) -> None:
        self.calls[method] += 1
        self.engine_calls += engine_calls
        if self.latency:
            await asyncio.sleep(self.latency)
        queue = self._failures.get(method)
        if queue:
            raise queue.popleft()

    async def _has_volume(self, uid: str) -> bool:
        if self._volume_exists is None:
            return uid in self.volumes
        result = self._volume_exists(uid)
        if inspect.isawaitable(result):
            return bool(await result)
        return bool(result)

    async def _serve(self, container: FakeContainer) -> None:
        app = web.Application()

        async def healthz(request: web.Request) -> web.Response:
            return web.Response(text="ok\n")

        async def index(request: web.Request) -> web.Response:
            return web.Response(text=f"workspace {container.uid}\n")

        async def echo(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await ws.send_str(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await ws.send_bytes(msg.data)
            return ws

        app.router.add_get("/healthz", healthz)
        app.router.add_get("/ws", echo)
        app.router.add_get("/{tail:.*}", index)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        container.port = int(runner.addresses[0][1])
        container.runner = runner

    async def _stop_server(self, container: FakeContainer) -> None:
        if container.runner is not None:
            runner, container.runner = container.runner, None
            await runner.cleanup()

    # --- InstanceController --------------------------------------------------------------

    async def start(self, spec: InstanceSpec) -> None:
        await self._enter("start")
        async with self._locks[spec.uid]:
            existing = self.containers.get(spec.uid)
            if existing is not None:
                if existing.running and existing.image_ref == spec.image_ref:
                    return
                self.engine_calls += 1
                await self._stop_server(existing)
                del self.containers[spec.uid]
            self.engine_calls += 1
            if not await self._has_volume(spec.uid):
                raise ActionFailedError(
                    f"home volume {naming.volume_name(spec.uid)} does not exist; "
                    "provision it before starting",
                    code=ErrorCode.VOLUME_NOT_FOUND,
                    context={"volume": naming.volume_name(spec.uid)},
                )
            if spec.image_ref in self.missing_images or MISSING_IMAGE_MARKER in spec.image_ref:
                raise ActionFailedError(
                    f"create container {naming.container_name(spec.uid)}: "
                    f"image not available ({spec.image_ref})",
                    code=ErrorCode.IMAGE_PULL_FAILED,
                )
            self.engine_calls += 2
            labels: dict[str, str] = dict(spec.labels)
            labels.update(naming.workspace_labels(spec.uid))
            labels[naming.LABEL_ROLE] = "workspace"
            container = FakeContainer(
                uid=spec.uid,
                container_id=f"fake-{next(self._ids)}",
                image_ref=spec.image_ref,
                labels=labels,
                cpu=spec.resources.cpu,
                memory=spec.resources.memory,
                running=True,
            )
            if self.serve_http:
                await self._serve(container)
            else:
                container.port = next(self._fake_ports)
            self.containers[spec.uid] = container

    async def delete(self, uid: str) -> None:
        await self._enter("delete")
        async with self._locks[uid]:
            container = self.containers.pop(uid, None)
            if container is not None:
                await self._stop_server(container)

    async def is_running(self, uid: str) -> bool:
        await self._enter("is_running")
        container = self.containers.get(uid)
        return bool(container and container.running)

    async def inspect(self, uid: str) -> InstanceInfo | None:
        await self._enter("inspect")
        container = self.containers.get(uid)
        if container is None:
            return None
        return self._info(uid, container)

    def _info(self, uid: str, c: FakeContainer) -> InstanceInfo:
        upstream = f"http://127.0.0.1:{c.port}" if c.running and c.port else None
        return InstanceInfo(uid=uid, running=c.running, upstream=upstream)

    async def upstream(self, uid: str) -> str | None:
        await self._enter("upstream")
        container = self.containers.get(uid)
        if container is None or not container.running or container.port is None:
            return None
        return f"http://127.0.0.1:{container.port}"

    async def list_instances(self) -> dict[str, InstanceInfo]:
        await self._enter("list_instances")
        return {uid: self._info(uid, c) for uid, c in self.containers.items()}

    async def close(self) -> None:
        for container in list(self.containers.values()):
            await self._stop_server(container)


__all__ = [
    "MISSING_IMAGE_MARKER",
    "FakeContainer",
    "FakeInstanceController",
    "Hook",
    "VolumeCheck",
    "install_hook",
    "remove_hook",
]
