"""The shipped scrape configuration is valid for Prometheus (``promtool check config``)
once its token and CA files exist, and scrapes both kinds of codehub process the way
docs/operations.md says: the server over HTTPS with a bearer token, the coordinator
over plain HTTP."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

PROM_DIR = Path(__file__).resolve().parents[3] / "charts" / "codehub" / "prometheus"


def test_shipped_config_is_valid_and_loads_the_rules(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: install Debian's prometheus package (scripts/dev does)"
    config = yaml.safe_load((PROM_DIR / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    server, coordinator = jobs["codehub-server"], jobs["codehub-coordinator"]
    assert server["scheme"] == "https"
    assert server["authorization"]["type"] == "Bearer"
    assert coordinator["scheme"] == "http"
    assert "authorization" not in coordinator
    assert config["rule_files"] == ["alerts.yaml"]
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("t")
    ca.write_text("")
    server["authorization"]["credentials_file"] = str(token)
    server["tls_config"]["ca_file"] = str(ca)
    shutil.copy(PROM_DIR / "alerts.yaml", tmp_path / "alerts.yaml")
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    proc = subprocess.run(
        [promtool, "check", "config", "prometheus.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rules = yaml.safe_load((PROM_DIR / "alerts.yaml").read_text())["groups"]
    count = sum(len(group["rules"]) for group in rules)
    assert f"SUCCESS: {count} rules found" in proc.stdout + proc.stderr
