"""Shared plumbing for the Docker adapters: one client, off-loop calls, error translation.

Both Docker adapters (instances and storage) go through :class:`DockerEngine` so that
(1) the blocking ``docker`` SDK never runs on the event loop, (2) every engine error
crosses the adapter boundary as a :mod:`codehub.adapters.errors` type chained with
``from``, and (3) every HTTP request to the engine is counted: the HealthMonitor's
"constant engine calls per pass" promise (docs/observation.md) is asserted from that counter.

Messages are built from the action, the object name, the HTTP status and the engine's
explanation with known secrets redacted — never from ``str(exc)`` of a requests error,
which can carry URLs, and never from environment values.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import docker
import docker.errors
import requests

from codehub.adapters.config import DockerConfig
from codehub.adapters.errors import (
    ActionFailedError,
    CodehubError,
    ErrorCode,
    UnreachableError,
)

T = TypeVar("T")

_MAX_EXPLANATION = 300


def make_docker_client(config: DockerConfig) -> docker.DockerClient:
    """Build a client for ``config.docker_host`` or the environment's default engine.

    Blocking (the SDK asks the engine for its API version): call it off the event loop.
    """
    if config.docker_host:
        return docker.DockerClient(base_url=config.docker_host)
    return docker.from_env()


def scoped_labels(config: DockerConfig, *parts: Mapping[str, str]) -> dict[str, str]:
    """Labels for something we create: the given parts plus the installation's scope."""
    labels: dict[str, str] = {}
    for part in parts:
        labels.update(part)
    labels.update(config.scope_labels)
    return labels


def label_filter(config: DockerConfig, extra: Mapping[str, str] | None = None) -> list[str]:
    """``filters={"label": ...}`` value matching the scope labels AND ``extra``.

    The engine ANDs several ``label`` filters, so a listing never sees objects of another
    installation or test run.
    """
    merged = dict(config.scope_labels)
    if extra:
        merged.update(extra)
    return [f"{key}={value}" for key, value in sorted(merged.items())]


def _redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    if len(text) > _MAX_EXPLANATION:
        text = text[:_MAX_EXPLANATION] + "..."
    return text


def _translate_api_error(
    exc: docker.errors.APIError,
    where: str,
    context: dict[str, Any],
    api_error_code: ErrorCode | None,
    secrets: tuple[str, ...],
) -> CodehubError:
    """The engine answered with an error status: refused (ActionFailed) or broken (5xx)."""
    status = exc.status_code
    context["status"] = status
    explanation = _redact(str(exc.explanation or ""), secrets)
    if api_error_code is not None:
        return ActionFailedError(
            f"{where}: engine refused (HTTP {status}: {explanation})",
            code=api_error_code,
            context=context,
        )
    if status is None or status >= 500:
        return UnreachableError(
            f"{where}: engine error (HTTP {status}: {explanation})", context=context
        )
    return ActionFailedError(
        f"{where}: engine refused (HTTP {status}: {explanation})", context=context
    )


def translate_error(
    exc: BaseException,
    *,
    action: str,
    subject: str = "",
    api_error_code: ErrorCode | None = None,
    not_found_code: ErrorCode | None = None,
    secrets: Iterable[str] = (),
) -> CodehubError:
    """Map a docker/requests exception to the product's error hierarchy.

    ``api_error_code``: the engine answered but refused (e.g. CONTAINER_CREATE_FAILED on
    create) — an ActionFailed even for a 5xx, since the engine is clearly reachable and
    the request itself is what failed. Without it, a 5xx counts as Unreachable.
    ``not_found_code``: what a 404 means for this call (e.g. VOLUME_NOT_FOUND).
    """
    if isinstance(exc, CodehubError):
        return exc
    secrets = tuple(secrets)
    where = f"{action} {subject}".strip()
    context: dict[str, Any] = {"action": action}
    if subject:
        context["object"] = subject

    if isinstance(exc, docker.errors.ImageNotFound):
        explanation = _redact(str(exc.explanation or ""), secrets)
        return ActionFailedError(
            f"{where}: image not available ({explanation})",
            code=ErrorCode.IMAGE_PULL_FAILED,
            context=context,
        )
    if isinstance(exc, docker.errors.NotFound):
        explanation = _redact(str(exc.explanation or ""), secrets)
        return ActionFailedError(
            f"{where}: not found ({explanation})",
            code=not_found_code or api_error_code or ErrorCode.UNKNOWN,
            context=context,
        )
    if isinstance(exc, docker.errors.APIError):
        return _translate_api_error(exc, where, context, api_error_code, secrets)
    if isinstance(exc, docker.errors.ContainerError):
        context["exit_status"] = exc.exit_status
        return ActionFailedError(
            f"{where}: container exited with status {exc.exit_status}",
            code=api_error_code or ErrorCode.UNKNOWN,
            context=context,
        )
    if isinstance(exc, requests.exceptions.RequestException | ConnectionError | TimeoutError):
        return UnreachableError(
            f"{where}: Docker engine unreachable ({type(exc).__name__})", context=context
        )
    if isinstance(exc, docker.errors.DockerException):
        # Raised by client construction when the engine does not answer the version call.
        return UnreachableError(
            f"{where}: Docker engine unavailable ({type(exc).__name__})", context=context
        )
    return ActionFailedError(f"{where}: unexpected {type(exc).__name__}", context=context)


class DockerEngine:
    """A lazily built Docker client whose calls run in threads and are counted.

    ``engine_calls`` counts HTTP requests actually sent to the engine (a requests
    response hook on the SDK's session), so SDK-internal extra calls (inspect after
    create, and the like) are counted too; construction's version probe is not.
    """

    def __init__(self, config: DockerConfig, client: docker.DockerClient | None = None) -> None:
        self.config = config
        self._client = client
        self._owns_client = client is None
        self._lock = threading.Lock()
        self._calls = 0
        self._calls_lock = threading.Lock()
        if client is not None:
            self._install_hook(client)

    @property
    def engine_calls(self) -> int:
        return self._calls

    def _count(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        with self._calls_lock:
            self._calls += 1

    def _install_hook(self, client: docker.DockerClient) -> None:
        client.api.hooks.setdefault("response", []).append(self._count)

    def client_sync(self) -> docker.DockerClient:
        """The client, built on first use (blocking: only call from a worker thread)."""
        with self._lock:
            if self._client is None:
                client = make_docker_client(self.config)
                self._install_hook(client)
                self._client = client
            return self._client

    async def run(
        self,
        fn: Callable[[docker.DockerClient], T],
        *,
        action: str,
        subject: str = "",
        api_error_code: ErrorCode | None = None,
        not_found_code: ErrorCode | None = None,
        secrets: Iterable[str] = (),
    ) -> T:
        """Run ``fn(client)`` in a worker thread; translate whatever it raises."""
        secrets = tuple(secrets)

        def call() -> T:
            return fn(self.client_sync())

        try:
            return await asyncio.to_thread(call)
        except CodehubError:
            raise
        except Exception as exc:
            raise translate_error(
                exc,
                action=action,
                subject=subject,
                api_error_code=api_error_code,
                not_found_code=not_found_code,
                secrets=secrets,
            ) from exc

    async def close(self) -> None:
        if self._owns_client and self._client is not None:
            client, self._client = self._client, None
            await asyncio.to_thread(client.close)
