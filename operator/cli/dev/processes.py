"""The dev stack's processes: the services script, the image build, and the API server and
coordinator as background children tracked by PID files."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from codehub.operator.cli.dev.state import DevStackError, Paths, say

REPO = Path(__file__).resolve().parents[3]
SERVICE_VARS = (
    "CODEHUB_DATABASE_URL",
    "CODEHUB_S3_ENDPOINT",
    "CODEHUB_S3_ACCESS_KEY",
    "CODEHUB_S3_SECRET_KEY",
    "CODEHUB_S3_BUCKET",
    "DOCKER_HOST",
)
READY_TIMEOUT = 90.0


# -- children -------------------------------------------------------------------------


def pid_alive(pid: int, needle: str = "codehub") -> bool:
    """Alive and still the process we started (PIDs get reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        state = ""
    return needle in cmdline and state != "Z"


def exited(pid: int) -> bool:
    """True once ``pid`` has ended. Unlike ``pid_alive`` this ignores the command line:
    a child caught between fork and exec briefly shows an empty or foreign one, and a
    busy machine made `dev up` report a healthy coordinator as dead."""
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return True
    return not Path(f"/proc/{pid}").exists()


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def running(paths: Paths, name: str) -> int | None:
    pid = _read_pid(paths.pidfile(name))
    return pid if pid and pid_alive(pid) else None


def codehub_command() -> list[str]:
    exe = Path(sys.executable).parent / "codehub"
    if exe.exists():
        return [str(exe)]
    return [
        sys.executable,
        "-c",
        "import sys; from codehub.operator.cli import main; sys.exit(main())",
    ]


def spawn(paths: Paths, name: str, args: list[str], env: Mapping[str, str]) -> int:
    logfile = open(paths.log(name), "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(
            [*codehub_command(), *args],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            cwd=str(paths.root),
            start_new_session=True,  # Ctrl-C in the terminal reaches us, not them
        )
    finally:
        logfile.close()
    paths.pidfile(name).write_text(f"{proc.pid}\n")
    return proc.pid


def stop(paths: Paths, name: str, timeout: float = 20.0) -> bool:
    """SIGTERM by PID, SIGKILL after ``timeout``; True when something was stopped."""
    pidfile = paths.pidfile(name)
    pid = _read_pid(pidfile)
    stopped = False
    if pid and pid_alive(pid):
        say(f"    stopping {name} (pid {pid})")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.2)
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _reap(pid)
        stopped = True
    pidfile.unlink(missing_ok=True)
    return stopped


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, ca_file: str | None, what: str, pid: int, log: Path) -> None:
    """Until ``url`` answers 200; fails when the child exits or after READY_TIMEOUT."""
    ctx = ssl.create_default_context(cafile=ca_file) if url.startswith("https") else None
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if exited(pid):
            raise DevStackError(f"{what} exited during startup; see {log}")
        if time.monotonic() > deadline:
            raise DevStackError(
                f"{what} did not answer at {url} in {READY_TIMEOUT:.0f}s; see {log}"
            )
        time.sleep(0.3)


# -- services and images --------------------------------------------------------------


def script(name: str) -> Path:
    path = REPO / "scripts" / name
    if not path.exists():
        raise DevStackError(f"{path} not found: `codehub dev` runs from a source checkout")
    return path


def services_env(paths: Paths) -> dict[str, str]:
    return {**os.environ, "CODEHUB_DEV_STATE": str(paths.root)}


def services_running(paths: Paths) -> bool:
    proc = subprocess.run(
        [str(script("dev-services")), "status"],
        env=services_env(paths),
        capture_output=True,
        check=False,
    )
    return proc.returncode == 0


def services_up(paths: Paths) -> dict[str, str]:
    """Start (or find) PostgreSQL, S3 and Docker; the variables that reach them."""
    proc = subprocess.run(
        [str(script("dev-services")), "up"],
        env=services_env(paths),
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise DevStackError(f"scripts/dev-services up failed (exit {proc.returncode})")
    env = parse_exports(proc.stdout)
    missing = [v for v in SERVICE_VARS if v not in env]
    if missing:
        raise DevStackError(f"scripts/dev-services up did not export {', '.join(missing)}")
    return env


def services_down(paths: Paths) -> None:
    proc = subprocess.run(
        [str(script("dev-services")), "down"], env=services_env(paths), check=False
    )
    if proc.returncode != 0:
        raise DevStackError(f"scripts/dev-services down failed (exit {proc.returncode})")


def parse_exports(text: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in text.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, _, value = words[1].partition("=")
            env[name] = value
    return env


def build_images(env: Mapping[str, str]) -> None:
    proc = subprocess.run([str(script("build-test-images"))], env=dict(env), check=False)
    if proc.returncode != 0:
        raise DevStackError("scripts/build-test-images failed; see its output above")


def migrate(env: Mapping[str, str]) -> None:
    proc = subprocess.run(
        [*codehub_command(), "db", "migrate"], env=dict(env), capture_output=True, check=False
    )
    if proc.returncode != 0:
        raise DevStackError(f"codehub db migrate failed: {proc.stderr.decode()[-500:]}")
