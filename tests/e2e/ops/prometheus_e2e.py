"""A real Prometheus (Debian's ``/usr/bin/prometheus``) for the operations e2e tests.

Its configuration is generated from the shipped ``charts/codehub/prometheus/prometheus.yml``
with only the targets, the token file, the CA file and the intervals substituted, and the
shipped alert rules loaded, so the test checks what operators deploy. It binds 127.0.0.1 on
a free port, keeps its TSDB in the test's tmp directory and is stopped by PID.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "charts" / "codehub"
SHIPPED_CONFIG = CHART / "prometheus" / "prometheus.yml"
SHIPPED_RULES = CHART / "prometheus" / "alerts.yaml"
DASHBOARD = CHART / "grafana" / "codehub-dashboard.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def render_config(
    out_dir: Path,
    *,
    server_targets: list[str],
    coordinator_targets: list[str],
    token: str,
    ca_file: str,
    interval: str = "1s",
) -> Path:
    """The shipped configuration with this run's targets, token, CA and intervals."""
    config: dict[str, Any] = yaml.safe_load(SHIPPED_CONFIG.read_text())
    token_file = out_dir / "metrics-token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    shutil.copy(SHIPPED_RULES, out_dir / "alerts.yaml")
    config["global"].update(
        scrape_interval=interval, evaluation_interval=interval, scrape_timeout=interval
    )
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    server, coordinator = jobs["codehub-server"], jobs["codehub-coordinator"]
    server["authorization"]["credentials_file"] = str(token_file)
    server["tls_config"]["ca_file"] = ca_file
    server["static_configs"] = [{"targets": server_targets}]
    coordinator["static_configs"] = [{"targets": coordinator_targets}]
    path = out_dir / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as resp:
            body = json.loads(resp.read())
        assert body.get("status") == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("/api/v1/query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def raw_query(self, expr: str) -> dict[str, Any]:
        """The whole answer, failures included (for checking that a query is valid)."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                out: dict[str, Any] = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            out = json.loads(exc.read() or b"{}")
        return out

    def targets(self) -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = self.api("/api/v1/targets")["activeTargets"]
        return active

    def wait_until(self, check: Any, what: str, limit: float = 120.0) -> Any:
        """Poll ``check()`` until it returns something truthy; a hang guard, not a timing test."""
        deadline = time.monotonic() + limit
        last: Any = None
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"prometheus exited:\n{self.log_tail()}"
            last = check()
            if last:
                return last
            time.sleep(0.5)
        raise AssertionError(f"prometheus: {what} not reached in {limit:g} s (last: {last!r})")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def start_prometheus(binary: str, config: Path, work: Path) -> Prometheus:
    port = free_port()
    log = work / "prometheus.log"
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={work / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=work,
    )
    prom = Prometheus(f"http://127.0.0.1:{port}", proc, log)
    try:
        prom.wait_until(lambda: _ready(prom), "ready", limit=60)
    except BaseException:
        prom.stop()
        raise
    return prom


def _ready(prom: Prometheus) -> bool:
    try:
        with urllib.request.urlopen(f"{prom.url}/-/ready", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, expression) for every target of every panel of the shipped dashboard."""
    board = json.loads(DASHBOARD.read_text())
    return [
        (str(panel.get("title")), str(target["expr"]))
        for panel in board["panels"]
        for target in panel.get("targets") or []
        if target.get("expr")
    ]
