"""Stock kubectl for the e2e tests: the binary (``CODEHUB_KUBECTL`` selects another), a
skip mark when it is missing, and a runner with a kubeconfig and a throwaway HOME for its
discovery cache."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from codehub.crd_like.client.api import ApiClient

KUBECTL = os.environ.get("CODEHUB_KUBECTL") or shutil.which("kubectl") or "/usr/bin/kubectl"

requires_kubectl = pytest.mark.skipif(
    not Path(KUBECTL).exists(), reason=f"kubectl not installed at {KUBECTL}"
)


class Kubectl:
    def __init__(self, kubeconfig: Path, home: Path) -> None:
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(home)}
        self.env.pop("KUBECTL_EXTERNAL_DIFF", None)

    def argv(self, *args: str) -> list[str]:
        return [KUBECTL, "--request-timeout=30s", *args]

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.argv(*args),
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
            check=False,
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """A long-running kubectl (``get -w``); the caller terminates it by its PID."""
        return subprocess.Popen(
            self.argv(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=self.env,
        )

    def ok(self, *args: str, stdin: str | None = None) -> str:
        proc = self.run(*args, stdin=stdin)
        assert proc.returncode == 0, f"kubectl {' '.join(args)} failed: {proc.stderr}"
        return proc.stdout


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def client_of(api_server: Any, user: str = "bob") -> ApiClient:
    """An ApiClient of ``user`` on the e2e API server (its CA trusted)."""
    return ApiClient(api_server.url, api_server.tokens[user], ca_file=api_server.ca_file)
