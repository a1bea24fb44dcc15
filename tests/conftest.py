"""Shared fixtures: real services for integration and e2e tests, isolated per test run.

Services come from ``scripts/dev-services up`` (started once, reused when already
running, shared by everyone on the machine), so every test session labels what it creates
with its own run id and removes exactly that at the end. Unit tests request none of these
fixtures and therefore never touch a service.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import docker
    from support.api import ApiFactory

    from codehub.adapters.config import DockerConfig
    from codehub.operator.settings import Settings

REPO = Path(__file__).resolve().parent.parent
RUN_LABEL = "codehub.io/test-run"
#: One id per pytest session; in labels, bucket and database names (lowercase, DNS-safe).
RUN_ID = "t" + uuid.uuid4().hex[:12]

EXIT_GRACE_SECONDS = 30.0

_state: dict[str, Any] = {"env": None}


# ------------------------------------------------------------------ collection and guards


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests by directory so ``-m 'not integration and not e2e'`` selects unit tests."""
    tests = REPO / "tests"
    for item in items:
        path = Path(str(item.path))
        if not path.is_relative_to(tests):
            continue
        top = path.relative_to(tests).parts[0]
        if top == "integration":
            item.add_marker(pytest.mark.integration)
        elif top == "e2e":
            item.add_marker(pytest.mark.e2e)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _state["session"] = session
    _cleanup_run()
    if session.config.option.collectonly:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    stats = reporter.stats if reporter is not None else {}
    ran = sum(len(stats.get(k, [])) for k in ("passed", "failed", "error", "xfailed", "xpassed"))
    if ran == 0 and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        # A run that tested nothing (wrong path, everything skipped or deselected) must not
        # look like success in CI.
        sys.stderr.write("\nERROR: pytest ran zero tests; failing the run.\n")
        session.exitstatus = pytest.ExitCode.NO_TESTS_COLLECTED


def pytest_unconfigure(config: pytest.Config) -> None:
    """Never let a stuck worker thread hang the run after the results are in.

    Python joins non-daemon threads at exit; one blocked forever (say, on a socket to a
    killed container) would hang CI without a word. Wait briefly, then name the threads
    with their stacks, and exit with a failure status.
    """
    session = _state.get("session")
    if session is None:
        return
    _wake_idle_executor_workers()
    deadline = time.monotonic() + EXIT_GRACE_SECONDS
    stuck = []
    for t in threading.enumerate():
        if t is threading.main_thread() or t.daemon or not t.is_alive():
            continue
        t.join(max(0.0, deadline - time.monotonic()))
        if t.is_alive():
            stuck.append(t)
    if not stuck:
        return
    frames = sys._current_frames()
    sys.stderr.write(
        f"\nERROR: {len(stuck)} thread(s) still running after the test session; "
        "exiting without waiting for them:\n"
    )
    for t in stuck:
        frame = frames.get(t.ident or -1)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "?\n"
        sys.stderr.write(f"--- thread {t.name}\n{stack}")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(session.exitstatus) or 1)


def _wake_idle_executor_workers() -> None:
    """Do now what interpreter exit does first: tell idle pool workers to finish.

    Without it an idle ThreadPoolExecutor worker would look stuck to the check above.
    """
    try:
        from concurrent.futures import thread as cft

        with cft._global_shutdown_lock:  # type: ignore[attr-defined]
            cft._shutdown = True  # type: ignore[attr-defined]
        for q in list(cft._threads_queues.values()):  # type: ignore[attr-defined]
            q.put(None)
    except (ImportError, AttributeError):
        pass


# ------------------------------------------------------------------ services


def _dev_services_up() -> dict[str, str]:
    proc = subprocess.run(
        [str(REPO / "scripts" / "dev-services"), "up"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"scripts/dev-services up failed (exit {proc.returncode}); see stderr above",
            pytrace=False,
        )
    env: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, _, value = words[1].partition("=")
            env[name] = value
    return env


@pytest.fixture(scope="session")
def service_env() -> dict[str, str]:
    """The service endpoints and credentials (CODEHUB_*, DOCKER_HOST), services started once.

    Also exported into ``os.environ`` so subprocesses and default-configured clients
    started by tests reach the same services.
    """
    if _state["env"] is None:
        env = _dev_services_up()
        os.environ.update(env)
        _state["env"] = env
    return dict(_state["env"])


@pytest.fixture(scope="session")
def settings(service_env: dict[str, str]) -> Settings:
    from codehub.operator.settings import Settings

    return Settings.from_env(service_env)


@pytest.fixture(scope="session")
def run_id() -> str:
    return RUN_ID


@pytest.fixture(scope="session")
def scope_labels(run_id: str) -> dict[str, str]:
    """Labels for everything a test creates; the session end removes all that carry them."""
    return {RUN_LABEL: run_id}


@pytest.fixture(scope="session")
def test_images(service_env: dict[str, str]) -> dict[str, str]:
    """Builds (or confirms) the local images; maps image folder name to image reference."""
    proc = subprocess.run(
        [str(REPO / "scripts" / "build-test-images")],
        env={**os.environ, **service_env},
        cwd=REPO,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail("scripts/build-test-images failed; see its output above", pytrace=False)
    return {
        d.name: f"codehub/{d.name}:local"
        for d in sorted((REPO / "scripts" / "images").iterdir())
        if (d / "build").exists()
    }


@pytest.fixture(scope="session")
def docker_client(service_env: dict[str, str]) -> Iterator[docker.DockerClient]:
    import docker

    client = docker.DockerClient(base_url=service_env["DOCKER_HOST"], timeout=120)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def s3_bucket(service_env: dict[str, str], run_id: str) -> Iterator[str]:
    """A fresh, empty bucket for this run (removed with its objects at the end)."""
    client = _minio(service_env)
    name = f"test-{run_id}"
    if not client.bucket_exists(name):
        client.make_bucket(name)
    yield name
    _remove_bucket(client, name)


@pytest.fixture(scope="session")
def s3_client(service_env: dict[str, str]) -> Any:
    """A Minio client of the dev services' S3 (to check or break what the adapters did)."""
    return _minio(service_env)


@pytest.fixture(scope="session")
def docker_config(settings: Settings, scope_labels: dict[str, str]) -> DockerConfig:
    """The adapters' Docker configuration for this run (scoped, short start timeout)."""
    import dataclasses

    return dataclasses.replace(settings.docker_config(scope_labels), start_timeout=60.0)


@pytest.fixture
def database_url(service_env: dict[str, str], run_id: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import psycopg

    admin = service_env["CODEHUB_DATABASE_URL"]
    name = f"{run_id}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin.rpartition("/")
    yield f"{base}/{name}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ------------------------------------------------------------------ the in-process API


@pytest.fixture
async def make_api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ApiFactory]:
    """Start in-process API servers (tests/support/api.py): ``await make_api()`` over a
    MemoryStore, ``await make_api("postgres", ...)`` over this test's fresh database.
    Keyword arguments are ApiConfig fields; see ``support.api.start_api`` for the rest."""
    from support.api import ApiHarness, start_api

    opened: list[ApiHarness] = []

    async def factory(backend: str = "memory", **options: Any) -> ApiHarness:
        url = request.getfixturevalue("database_url") if backend == "postgres" else None
        api = await start_api(tmp_path, url, **options)
        opened.append(api)
        return api

    yield factory
    for api in reversed(opened):
        await api.close()


# ------------------------------------------------------------------ cleanup


def _minio(env: dict[str, str]) -> Any:
    from urllib.parse import urlparse

    from minio import Minio

    url = urlparse(env["CODEHUB_S3_ENDPOINT"])
    return Minio(
        url.netloc,
        access_key=env["CODEHUB_S3_ACCESS_KEY"],
        secret_key=env["CODEHUB_S3_SECRET_KEY"],
        secure=url.scheme == "https",
    )


def _remove_bucket(client: Any, name: str) -> None:
    from minio.deleteobjects import DeleteObject

    if not client.bucket_exists(name):
        return
    objects = [DeleteObject(o.object_name) for o in client.list_objects(name, recursive=True)]
    for i in range(0, len(objects), 500):
        for err in client.remove_objects(name, objects[i : i + 500]):
            sys.stderr.write(f"cleanup: could not delete {err.name}\n")
    client.remove_bucket(name)


def _cleanup_run() -> None:
    """Remove whatever this run left behind: containers, volumes, networks, buckets, DBs."""
    env = _state["env"]
    if env is None:
        return
    problems: list[str] = []
    try:
        import docker

        client = docker.DockerClient(base_url=env["DOCKER_HOST"], timeout=120)
        selector = {"label": f"{RUN_LABEL}={RUN_ID}"}
        for c in client.containers.list(all=True, filters=selector):
            c.remove(force=True, v=True)
        for v in client.volumes.list(filters=selector):
            v.remove(force=True)
        for n in client.networks.list(filters=selector):
            n.remove()
        client.close()
    except Exception as exc:
        problems.append(f"docker: {type(exc).__name__}: {exc}")
    try:
        s3 = _minio(env)
        for b in s3.list_buckets():
            if RUN_ID in b.name:
                _remove_bucket(s3, b.name)
    except Exception as exc:
        problems.append(f"s3: {type(exc).__name__}")
    try:
        import psycopg

        with psycopg.connect(env["CODEHUB_DATABASE_URL"], autocommit=True) as conn:
            rows = conn.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{RUN_ID}%",)
            ).fetchall()
            for (name,) in rows:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    except Exception as exc:
        problems.append(f"postgres: {type(exc).__name__}")
    for p in problems:
        sys.stderr.write(f"\ncleanup of test run {RUN_ID} incomplete: {p}\n")
