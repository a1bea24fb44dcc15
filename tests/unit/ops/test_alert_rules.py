"""The shipped alert rules are valid and behave as their unit tests say (promtool).

promtool comes with Debian's ``prometheus`` package, which scripts/dev and .ci/run install.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

RULES_DIR = Path(__file__).resolve().parents[3] / "charts" / "codehub" / "prometheus"
REQUIRED_ALERTS = {
    "CodehubNoLeader",
    "CodehubOperationOverdue",
    "CodehubErrorWorkspacesRising",
    "CodehubStaleObservations",
    "CodehubWorkspaceCacheNotSynced",
    "CodehubGCPassesSkipped",
    "CodehubProxyHigh5xxRatio",
    "CodehubWakesFailing",
    "CodehubWatchBacklog",
}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: install Debian's prometheus package (scripts/dev does)"
    return subprocess.run(
        [promtool, *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=120, check=False
    )


def _alerts() -> set[str]:
    doc = yaml.safe_load((RULES_DIR / "alerts.yaml").read_text())
    return {rule["alert"] for group in doc["groups"] for rule in group["rules"]}


def test_rules_are_valid() -> None:
    proc = _promtool("check", "rules", "alerts.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in proc.stdout


def test_rule_unit_tests_pass() -> None:
    proc = _promtool("test", "rules", "alerts_test.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_alert_is_tested_firing_and_silent_and_has_a_runbook() -> None:
    assert _alerts() >= REQUIRED_ALERTS
    tests = yaml.safe_load((RULES_DIR / "alerts_test.yaml").read_text())["tests"]
    firing: set[str] = set()
    silent: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    assert firing == _alerts(), _alerts() - firing
    assert silent == _alerts(), _alerts() - silent
    runbook = (RULES_DIR.parents[2] / "docs" / "operations.md").read_text()
    missing = [name for name in _alerts() if f"`{name}`" not in runbook]
    assert not missing, f"no runbook line in docs/operations.md for {missing}"
