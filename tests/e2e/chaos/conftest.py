"""The chaos soak's stack: the operator e2e stack (tests/e2e/operator) over services of
its own, so that restarting them disturbs no other test and no developer.

``chaos_services`` starts a private PostgreSQL and a private SeaweedFS S3 (the very
classes of ``scripts/dev-services``, under a temporary directory) and, when the machine
allows it (root, dockerd), a private Docker engine beside the shared one
(tests/support/private_docker.py) with the test images copied in. Without a private
engine the stack uses the shared one, and the soak skips engine restarts and says why.
``stack`` is the operator e2e ``Stack`` over an API server on those services.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

_HERE = Path(__file__).resolve().parent
_OPERATOR = _HERE.parent / "operator"
for _path in (_OPERATOR, _HERE):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from operator_e2e import Stack, open_stack  # noqa: E402
from support import private_docker  # noqa: E402
from support.private_services import private_postgres, private_seaweed  # noqa: E402


def _load(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


_e2e = _load("chaos_e2e_fixtures", _HERE.parent / "conftest.py")

#: Small activity settings so a killed replica's open connections stop counting soon.
REPLICA_TTL = 3.0
SERVER_ENV = {
    "MAX_RUNNING_PER_USER": "10",
    "CODEHUB_REPLICA_TTL": str(REPLICA_TTL),
    "CODEHUB_ACTIVITY_INTERVAL": "1",
}


@dataclass
class ChaosServices:
    """What the soak may restart: ``postgres`` and ``seaweed`` always (private);
    ``docker`` when a private engine runs, else ``docker_skip`` says why not."""

    root: Path
    postgres: Any
    seaweed: Any
    docker: private_docker.PrivateDocker | None
    docker_skip: str | None
    env: dict[str, str]

    def s3_client(self) -> Any:
        return self.seaweed.client(self.seaweed.ports())


def _private_engine(
    root: Path, source: Any, images: Mapping[str, str]
) -> tuple[private_docker.PrivateDocker | None, str | None]:
    reason = private_docker.unavailable()
    if reason is not None:
        return None, reason
    engine = private_docker.PrivateDocker(root)
    try:
        engine.up()
        engine.load_images(source, [images["workspace-test"], images["storage-job"]])
    except Exception as exc:
        engine.close()
        return None, f"the private Docker engine did not start: {exc!r}"
    return engine, None


def _first_start(seaweed: Any, attempts: int = 3) -> dict[str, str]:
    """SeaweedFS picks eight free ports, then binds them: on a busy machine another
    process may take one in between (its volume server then exits). Try again on fresh
    ports; restarts later reuse the ports of the start that worked."""
    for attempt in range(attempts):
        try:
            env: dict[str, str] = seaweed.up()
            return env
        except Exception:
            if attempt == attempts - 1:
                raise
            seaweed.down()
            seaweed.portsfile.unlink(missing_ok=True)
    raise AssertionError("unreachable")


@pytest.fixture
def chaos_services(
    service_env: dict[str, str], test_images: dict[str, str], docker_client: Any
) -> Iterator[ChaosServices]:
    # Not under pytest's tmp_path: its parents are private to root, and PostgreSQL runs
    # as its own user.
    root = Path(tempfile.mkdtemp(prefix="codehub-chaos-"))
    os.chmod(root, 0o755)
    postgres, seaweed = private_postgres(root), private_seaweed(root)
    engine: private_docker.PrivateDocker | None = None
    try:
        env = {"CODEHUB_DATABASE_URL": postgres.up(), **_first_start(seaweed)}
        engine, skip = _private_engine(root, docker_client, test_images)
        env["DOCKER_HOST"] = engine.host if engine else service_env["DOCKER_HOST"]
        yield ChaosServices(root, postgres, seaweed, engine, skip, env)
    finally:
        if engine is not None:
            engine.close()
        with contextlib.suppress(Exception):
            seaweed.down()
        with contextlib.suppress(Exception):
            postgres.down()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def stack(
    request: pytest.FixtureRequest,
    chaos_services: ChaosServices,
    tmp_path_factory: pytest.TempPathFactory,
    run_id: str,
) -> Iterator[Stack]:
    """The operator e2e stack on the private services (coordinators on demand)."""
    import docker

    env = chaos_services.env
    server = _e2e.make_server(
        tmp_path_factory.mktemp("chaos"), env, run_id, tag="chaos", extra_env=SERVER_ENV
    )
    server.start()
    client = docker.DockerClient(base_url=env["DOCKER_HOST"], timeout=120)
    try:
        with open_stack(
            request,
            server,
            chaos_services.s3_client(),
            docker=client,
            bucket=env["CODEHUB_S3_BUCKET"],
        ) as st:
            yield st
    finally:
        server.stop()
        client.close()
