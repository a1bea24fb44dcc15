"""Smoke test of the opt-in real IDE image ``codehub/code-server:local``.

The image is built only on request (``scripts/images/code-server/build``, or
``CODEHUB_BUILD_CODE_SERVER=1 scripts/build-test-images``); without it this module skips.
The container runs as a workspace does (docs/storage.md): user 1000, the home volume at
/home/coder, app port 8080 published on 127.0.0.1 only, no new privileges, every capability
dropped and a pids limit. It must then answer /healthz and serve the VS Code workbench
with no password, because codehub's proxy does the authentication (docs/proxy.md).
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from codehub.adapters import naming

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

IMAGE = "codehub/code-server:local"
#: code-server needs a few seconds; a cold start on a busy 2-core machine far more.
READY_DEADLINE_SECONDS = 180.0


@pytest.fixture
def code_server_image(docker_client: docker.DockerClient) -> str:
    import docker.errors

    try:
        docker_client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        pytest.skip(
            f"{IMAGE} is not built; it is opt-in: run scripts/images/code-server/build "
            "(or CODEHUB_BUILD_CODE_SERVER=1 scripts/build-test-images)"
        )
    return IMAGE


@pytest.fixture
def code_server(
    docker_client: docker.DockerClient,
    code_server_image: str,
    scope_labels: dict[str, str],
) -> Iterator[tuple[Container, str]]:
    """Base URL of a hardened code-server container; container and volume removed after."""
    volume = docker_client.volumes.create(labels=dict(scope_labels))
    container = None
    try:
        container = docker_client.containers.run(
            code_server_image,
            detach=True,
            user=naming.WORKSPACE_USER,
            environment={"HOME": naming.HOME_MOUNT},
            volumes={volume.name: {"bind": naming.HOME_MOUNT, "mode": "rw"}},
            ports={f"{naming.APP_PORT}/tcp": ("127.0.0.1", None)},
            security_opt=["no-new-privileges"],
            cap_drop=["ALL"],
            pids_limit=512,
            privileged=False,
            restart_policy={"Name": "no"},
            labels=dict(scope_labels),
        )
        container.reload()
        binding = container.attrs["NetworkSettings"]["Ports"][f"{naming.APP_PORT}/tcp"][0]
        assert binding["HostIp"] == "127.0.0.1"
        yield container, f"http://127.0.0.1:{binding['HostPort']}"
    finally:
        if container is not None:
            container.remove(force=True)
        volume.remove(force=True)


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.status, resp.read().decode("utf-8", "replace")


def _wait_healthy(container: Container, base: str) -> tuple[int, str]:
    """Poll /healthz until it answers; fail at once, with the logs, if the container exits."""
    deadline = time.monotonic() + READY_DEADLINE_SECONDS
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return _get(f"{base}/healthz")
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last = exc
        container.reload()
        if container.status not in ("created", "running"):
            logs = container.logs(tail=50).decode("utf-8", "replace")
            pytest.fail(f"code-server exited ({container.status}):\n{logs}", pytrace=False)
        time.sleep(1.0)
    pytest.fail(f"code-server never answered {base}/healthz: {last!r}", pytrace=False)


def test_code_server_serves_healthz_and_workbench(code_server: tuple[Container, str]) -> None:
    container, code_server_url = code_server
    status, body = _wait_healthy(container, code_server_url)
    assert status == 200
    assert '"status"' in body  # code-server's own {"status":"alive"|"expired",...}

    status, html = _get(f"{code_server_url}/")
    assert status == 200
    assert "<!DOCTYPE html>" in html or "<!doctype html>" in html.lower()
    assert "vscode" in html.lower()
    assert "workbench" in html.lower()
    # No login page: the proxy in front of it authenticates.
    assert "/login" not in html
