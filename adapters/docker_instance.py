"""The Docker InstanceController: one hardened code-server container per workspace.

Container ``ws-{uid}`` with the home volume ``ws-{uid}-home`` at ``/home/coder``
(docs/naming.md, docs/storage.md), user 1000, no privileges, no Docker socket, restart
policy "no", the app port published on 127.0.0.1 only (the proxy never relies on a bridge
IP being routable).
Every method is idempotent, and ``list_instances`` is a single engine call whatever the
number of workspaces (the HealthMonitor's pass depends on it, docs/observation.md).

Only the low-level ``APIClient`` is used: the high-level models inspect each container
after listing it, which would make a listing cost one call per workspace.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import docker
import docker.errors
import docker.types

from codehub.adapters import naming
from codehub.adapters.config import DockerConfig
from codehub.adapters.docker_client import DockerEngine, label_filter, scoped_labels
from codehub.adapters.errors import (
    ActionFailedError,
    ErrorCode,
    OperationTimeoutError,
)
from codehub.adapters.home_ownership import HomeOwnership
from codehub.adapters.interfaces import InstanceController, InstanceInfo, InstanceSpec
from codehub.adapters.quantities import (  # re-exported: the quantity tests use them here
    cpu_to_nano_cpus,
    memory_to_bytes,
    parse_quantity,
)

log = logging.getLogger(__name__)

__all__ = [
    "DockerInstanceController",
    "cpu_to_nano_cpus",
    "memory_to_bytes",
    "parse_quantity",
]

ROLE_WORKSPACE = "workspace"
_PORT_KEY = f"{naming.APP_PORT}/tcp"
_LOOPBACK = "127.0.0.1"
#: Capabilities a code-server user never needs. The process runs as 1000 without
#: effective capabilities anyway, and ``no-new-privileges`` below keeps set-uid binaries
#: (``sudo``) from gaining any.
CAP_DROP = ["NET_RAW", "MKNOD", "AUDIT_WRITE", "SETFCAP", "SYS_CHROOT"]
#: Set-uid binaries cannot raise privileges (``no-new-privileges``), and a fork bomb in a
#: workspace stops at this many processes instead of exhausting the host's (docs/security.md).
SECURITY_OPT = ["no-new-privileges"]
PIDS_LIMIT = 4096

# --- payload readers ---------------------------------------------------------------------


def _host_port_from_inspect(attrs: Mapping[str, Any]) -> int | None:
    ports = (attrs.get("NetworkSettings") or {}).get("Ports") or {}
    for binding in ports.get(_PORT_KEY) or []:
        if binding.get("HostIp") == _LOOPBACK and binding.get("HostPort"):
            return int(binding["HostPort"])
    return None


def _host_port_from_list(entry: Mapping[str, Any]) -> int | None:
    for port in entry.get("Ports") or []:
        if (
            port.get("PrivatePort") == naming.APP_PORT
            and port.get("Type", "tcp") == "tcp"
            and port.get("IP") == _LOOPBACK
            and port.get("PublicPort")
        ):
            return int(port["PublicPort"])
    return None


def _is_running(attrs: Mapping[str, Any] | None) -> bool:
    """Running and serving: a paused or restarting container does not count."""
    return bool(attrs) and ((attrs or {}).get("State") or {}).get("Status") == "running"


def _upstream_url(port: int | None) -> str | None:
    return f"http://{_LOOPBACK}:{port}" if port else None


#: Seconds of polling /healthz at the base interval before backing off.
_FAST_POLL_WINDOW = 3.0


class DockerInstanceController(InstanceController):
    """Workspace containers on a Docker engine; see the module docstring for the rules."""

    def __init__(
        self,
        config: DockerConfig,
        engine: DockerEngine | None = None,
        *,
        client: docker.DockerClient | None = None,
        pull_missing_images: bool = True,
        poll_interval: float = 0.02,
    ) -> None:
        self.config = config
        self.engine = engine or DockerEngine(config, client)
        self._owns_engine = engine is None
        self.pull_missing_images = pull_missing_images
        self.poll_interval = poll_interval
        self._http: aiohttp.ClientSession | None = None
        self.home = HomeOwnership(config)

    @property
    def engine_calls(self) -> int:
        """HTTP requests sent to the engine so far (for tests and benchmarks)."""
        return self.engine.engine_calls

    # --- helpers -------------------------------------------------------------------------

    async def _inspect(self, uid: str) -> dict[str, Any] | None:
        name = naming.container_name(uid)

        def inspect(client: docker.DockerClient) -> dict[str, Any] | None:
            try:
                result: dict[str, Any] = client.api.inspect_container(name)
                return result
            except docker.errors.NotFound:
                return None

        return await self.engine.run(inspect, action="inspect container", subject=name)

    async def _remove(self, uid: str) -> None:
        """Kill (SIGKILL) and remove in one call; a missing container is success."""
        name = naming.container_name(uid)

        def remove(client: docker.DockerClient) -> None:
            deadline = time.monotonic() + 30
            while True:
                try:
                    client.api.remove_container(name, force=True, v=False)
                    return
                except docker.errors.NotFound:
                    return
                except docker.errors.APIError as exc:
                    # 409 "removal already in progress": someone else is removing it;
                    # wait until it is gone so the caller can rely on "no container".
                    if exc.status_code != 409 or time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)

        await self.engine.run(remove, action="remove container", subject=name)

    async def _volume_exists(self, uid: str) -> bool:
        volume = naming.volume_name(uid)

        def check(client: docker.DockerClient) -> bool:
            try:
                client.api.inspect_volume(volume)
                return True
            except docker.errors.NotFound:
                return False

        return await self.engine.run(check, action="inspect volume", subject=volume)

    async def _image_id(self, spec: InstanceSpec) -> str | None:
        return await self.engine.run(
            lambda c: self.home.image_id(c, spec.image_ref),
            action="inspect image",
            subject=spec.image_ref,
        )

    @staticmethod
    def _require_volume(uid: str, exists: bool) -> None:
        """Refuse to start without the home volume: Docker would create it empty.

        docs/state-machine.md: a workspace starts only on its own (provisioned or
        restored) volume.
        """
        volume = naming.volume_name(uid)
        if not exists:
            raise ActionFailedError(
                f"home volume {volume} does not exist; provision it before starting",
                code=ErrorCode.VOLUME_NOT_FOUND,
                context={"volume": volume},
            )

    def _labels(self, spec: InstanceSpec) -> dict[str, str]:
        return scoped_labels(
            self.config,
            spec.labels,
            naming.workspace_labels(spec.uid),
            {naming.LABEL_ROLE: ROLE_WORKSPACE},
        )

    def _host_config_kwargs(self, spec: InstanceSpec) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "mounts": [
                docker.types.Mount(
                    target=naming.HOME_MOUNT,
                    source=naming.volume_name(spec.uid),
                    type="volume",
                )
            ],
            "port_bindings": {naming.APP_PORT: (_LOOPBACK,)},
            "privileged": False,
            "restart_policy": {"Name": "no"},
            "cap_drop": list(CAP_DROP),
            "security_opt": list(SECURITY_OPT),
            "pids_limit": PIDS_LIMIT,
        }
        try:
            if spec.resources.cpu:
                kwargs["nano_cpus"] = cpu_to_nano_cpus(spec.resources.cpu)
            if spec.resources.memory:
                memory = memory_to_bytes(spec.resources.memory)
                kwargs["mem_limit"] = memory
                kwargs["memswap_limit"] = memory
        except ValueError as exc:
            raise ActionFailedError(
                f"invalid resource limits for {naming.container_name(spec.uid)}: {exc}",
                code=ErrorCode.CONTAINER_CREATE_FAILED,
            ) from exc
        return kwargs

    async def _create_and_start(self, spec: InstanceSpec, image_id: str | None) -> dict[str, Any]:
        name = naming.container_name(spec.uid)
        labels = self._labels(spec)
        host_kwargs = self._host_config_kwargs(spec)
        pull = self.pull_missing_images
        home = self.home

        def create(client: docker.DockerClient) -> str:
            host_config = client.api.create_host_config(**host_kwargs)
            kwargs: dict[str, Any] = {
                "name": name,
                "user": naming.WORKSPACE_USER,
                "environment": {"HOME": naming.HOME_MOUNT},
                "labels": labels,
                "ports": [naming.APP_PORT],
                "host_config": host_config,
                "detach": True,
            }
            if not home.prepare(client, spec.uid, spec.image_ref, image_id):
                kwargs["host_config"] = client.api.create_host_config(**_no_copy(host_kwargs))
            try:
                try:
                    created = client.api.create_container(spec.image_ref, **kwargs)
                except docker.errors.ImageNotFound:
                    if not pull:
                        raise
                    _pull(client, spec.image_ref)
                    if not home.prepare(client, spec.uid, spec.image_ref, None):
                        no_copy = _no_copy(host_kwargs)
                        kwargs["host_config"] = client.api.create_host_config(**no_copy)
                    created = client.api.create_container(spec.image_ref, **kwargs)
            except docker.errors.ImageNotFound as exc:
                raise docker.errors.ImageNotFound(
                    str(exc),
                    response=exc.response,
                    explanation=f"{spec.image_ref}: {exc.explanation}",
                ) from exc
            container_id: str = created["Id"]
            return container_id

        container_id = await self.engine.run(
            create,
            action="create container",
            subject=name,
            api_error_code=ErrorCode.CONTAINER_CREATE_FAILED,
        )

        def start(client: docker.DockerClient) -> dict[str, Any]:
            client.api.start(container_id)
            attrs: dict[str, Any] = client.api.inspect_container(container_id)
            return attrs

        return await self.engine.run(
            start,
            action="start container",
            subject=name,
            api_error_code=ErrorCode.CONTAINER_CREATE_FAILED,
        )

    async def _http_session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=5, connect=2), trust_env=False
            )
        return self._http

    async def _wait_ready(self, uid: str, port: int) -> None:
        """Poll the health path on the published port until it answers 2xx/3xx.

        The engine has no event for "the app answers", so this is the one poll left on
        the start path: every ``poll_interval`` (a loopback request) for the first
        ``_FAST_POLL_WINDOW`` seconds, where a typical app becomes ready, then backing
        off to 1 s. A doubling from 0.1 s used to overshoot readiness by up to a third
        of the start (docs/adr/0009-lifecycle-and-scale-performance.md). Checks now and
        then that the container still runs, so a crashing image fails fast with
        ActionFailed instead of burning the whole start timeout.
        """
        url = f"http://{_LOOPBACK}:{port}{self.config.health_path}"
        session = await self._http_session()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.start_timeout
        interval = self.poll_interval
        fast_until = loop.time() + _FAST_POLL_WINDOW
        next_state_check = loop.time() + 1.0
        while True:
            try:
                async with session.get(url, allow_redirects=False) as response:
                    if response.status < 400:
                        return
            except (aiohttp.ClientError, TimeoutError, OSError):
                pass
            now = loop.time()
            if now >= deadline:
                raise OperationTimeoutError(
                    f"{naming.container_name(uid)} did not answer {self.config.health_path} "
                    f"within {self.config.start_timeout:g}s",
                    context={"timeout": self.config.start_timeout},
                )
            if now >= next_state_check:
                next_state_check = now + 2.0
                attrs = await self._inspect(uid)
                state = (attrs or {}).get("State") or {}
                if not _is_running(attrs):
                    raise ActionFailedError(
                        f"{naming.container_name(uid)} stopped while starting "
                        f"(status {state.get('Status', 'missing')}, "
                        f"exit code {state.get('ExitCode')})",
                        code=ErrorCode.CONTAINER_CREATE_FAILED,
                        context={"exit_code": state.get("ExitCode")},
                    )
            await asyncio.sleep(min(interval, max(0.0, deadline - now)))
            if now >= fast_until:
                interval = min(interval * 1.5, 1.0)

    # --- InstanceController --------------------------------------------------------------

    async def start(self, spec: InstanceSpec) -> None:
        # Three independent reads in one round trip's time: the container, the volume and
        # the image (whose /home/coder decides who owns a fresh volume, home_ownership).
        attrs, has_volume, image_id = await asyncio.gather(
            self._inspect(spec.uid), self._volume_exists(spec.uid), self._image_id(spec)
        )
        if attrs is not None:
            state = attrs.get("State") or {}
            image = (attrs.get("Config") or {}).get("Image")
            port = _host_port_from_inspect(attrs)
            if _is_running(attrs) and image == spec.image_ref and port is not None:
                await self._wait_ready(spec.uid, port)
                return
            log.info(
                "recreating container",
                extra={
                    "container": naming.container_name(spec.uid),
                    "status": state.get("Status"),
                },
            )
            await self._remove(spec.uid)
        self._require_volume(spec.uid, has_volume)
        attrs = await self._create_and_start(spec, image_id)
        port = _host_port_from_inspect(attrs)
        if port is None:
            raise ActionFailedError(
                f"{naming.container_name(spec.uid)} has no port published on {_LOOPBACK}",
                code=ErrorCode.CONTAINER_CREATE_FAILED,
            )
        await self._wait_ready(spec.uid, port)

    async def delete(self, uid: str) -> None:
        await self._remove(uid)

    async def is_running(self, uid: str) -> bool:
        attrs = await self._inspect(uid)
        return _is_running(attrs)

    async def upstream(self, uid: str) -> str | None:
        attrs = await self._inspect(uid)
        if not attrs or not _is_running(attrs):
            return None
        return _upstream_url(_host_port_from_inspect(attrs))

    async def inspect(self, uid: str) -> InstanceInfo | None:
        attrs = await self._inspect(uid)
        if not attrs:
            return None
        running = _is_running(attrs)
        upstream = _upstream_url(_host_port_from_inspect(attrs)) if running else None
        return InstanceInfo(uid=uid, running=running, upstream=upstream)

    async def container_id(self, uid: str) -> str | None:
        """The engine's id of the workspace container, or None (tests, diagnostics)."""
        attrs = await self._inspect(uid)
        return str(attrs["Id"]) if attrs else None

    async def list_instances(self) -> dict[str, InstanceInfo]:
        filters = {"label": label_filter(self.config, {naming.LABEL_ROLE: ROLE_WORKSPACE})}

        def listing(client: docker.DockerClient) -> list[dict[str, Any]]:
            result: list[dict[str, Any]] = client.api.containers(all=True, filters=filters)
            return result

        entries = await self.engine.run(listing, action="list containers")
        instances: dict[str, InstanceInfo] = {}
        for entry in entries:
            uid = (entry.get("Labels") or {}).get(naming.LABEL_WORKSPACE_ID)
            if not uid:
                continue
            running = entry.get("State") == "running"
            upstream = _upstream_url(_host_port_from_list(entry)) if running else None
            instances[uid] = InstanceInfo(uid=uid, running=running, upstream=upstream)
        return instances

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._owns_engine:
            await self.engine.close()


def _no_copy(host_kwargs: dict[str, Any]) -> dict[str, Any]:
    """The host config with the home mounted without copy-up (home_ownership)."""
    home = [
        docker.types.Mount(m["Target"], m["Source"], type="volume", no_copy=True)
        for m in host_kwargs["mounts"]
    ]
    return {**host_kwargs, "mounts": home}


def _pull(client: docker.DockerClient, image_ref: str) -> None:
    """Pull once; any failure is reported as ImageNotFound so it maps to IMAGE_PULL_FAILED.

    The engine answers a failed pull with HTTP 200 and an ``error`` line in the progress
    stream, so the stream is read to the end and checked.
    """
    error: str | None = None
    try:
        for line in client.api.pull(image_ref, stream=True, decode=True):
            if isinstance(line, dict) and line.get("error"):
                error = str(line["error"])
    except docker.errors.APIError as exc:
        raise docker.errors.ImageNotFound(
            f"pull of {image_ref} failed", response=exc.response, explanation=exc.explanation
        ) from exc
    if error is not None:
        raise docker.errors.ImageNotFound(f"pull of {image_ref} failed", explanation=error)
