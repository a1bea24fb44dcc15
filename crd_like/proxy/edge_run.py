"""Running nginx as the native edge: a child process with a generated configuration.

The configuration holds the edge secret, so it and nginx's working files live in an
owner-only directory. ``reload`` rewrites the configuration (for example with new
keep-alive pools) and asks nginx to switch to it without dropping connections.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import replace
from pathlib import Path

from .edge_conf import EdgeConfig, render

TEMP_KINDS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


class EdgeError(RuntimeError):
    """nginx is missing, or did not start."""


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None
    )


class EdgeProcess:
    """One nginx master (and its workers) serving ``cfg``."""

    def __init__(self, cfg: EdgeConfig) -> None:
        if cfg.user is None and os.geteuid() == 0:
            cfg = replace(cfg, user="root")
        self.cfg = cfg
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    @property
    def conf_path(self) -> Path:
        return self.cfg.workdir / "nginx.conf"

    @property
    def access_log(self) -> Path:
        return self.cfg.workdir / "access.log"

    @property
    def error_log(self) -> Path:
        return self.cfg.workdir / "error.log"

    def _write(self) -> None:
        self.cfg.workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.cfg.workdir, 0o700)
        for kind in TEMP_KINDS:
            (self.cfg.workdir / "tmp" / kind).mkdir(parents=True, exist_ok=True)
        fd = os.open(self.conf_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(render(self.cfg))

    def start(self, timeout: float = 10.0) -> None:
        nginx = nginx_binary()
        if nginx is None:
            raise EdgeError("nginx is not installed (scripts/install-system-packages)")
        self._write()
        d = self.cfg.workdir
        self.proc = subprocess.Popen(
            [nginx, "-e", str(self.error_log), "-p", str(d), "-c", str(self.conf_path)],
            stdin=subprocess.DEVNULL,
        )
        host, _, port = self.cfg.listen.rpartition(":")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EdgeError(f"nginx exited: {self._errors()}")
            with contextlib.suppress(OSError), socket.create_connection((host, int(port)), 1):
                return
            time.sleep(0.05)
        self.stop()
        raise EdgeError(f"nginx did not listen on {self.cfg.listen}: {self._errors()}")

    def reload(self, cfg: EdgeConfig) -> None:
        """Switch to ``cfg`` (same listener and workdir); nginx drains the old workers."""
        self.cfg = replace(cfg, user=self.cfg.user)
        self._write()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGQUIT)  # graceful: finish the requests in flight
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def _errors(self) -> str:
        with contextlib.suppress(OSError):
            return self.error_log.read_text()[-2000:]
        return ""
