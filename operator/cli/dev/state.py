"""The dev stack's state directory (``CODEHUB_STATE_DIR``, default ``.codehub-dev``): tokens,
kubeconfigs, PID files, logs and the record of what ``dev up`` started, so ``dev down``
(and a second ``dev up``) find it. Also how the dev commands report progress."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codehub.operator.settings import Settings

DEMO_NAMESPACE = "dev"
#: (user, groups) of the token file; the user name is also the namespace it owns.
IDENTITIES = (
    ("dev", ""),
    ("admin", "codehub:admin"),
    ("operator", "codehub:operator"),
)


class DevStackError(Exception):
    """A step of ``dev up`` failed; the message says which and where to look."""


def say(msg: str) -> None:
    print(msg, flush=True)


def step(msg: str) -> None:
    print(f"==> {msg}", flush=True)


@dataclass(frozen=True)
class Paths:
    root: Path

    @property
    def tokens(self) -> Path:
        return self.root / "tokens.csv"

    @property
    def stack(self) -> Path:
        return self.root / "devstack.json"

    @property
    def cli_env(self) -> Path:
        return self.root / "cli.env"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def kubeconfig(self, user: str) -> Path:
        return self.root / f"kubeconfig-{user}"

    def pidfile(self, name: str) -> Path:
        return self.root / f"{name}.pid"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"


def state_paths(settings: Settings) -> Paths:
    """The state directory made absolute (children run elsewhere) and created."""
    root = settings.state_dir
    if not root.is_absolute():
        root = (Path.cwd() / root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    (root / "logs").mkdir(exist_ok=True)
    return Paths(root)


def write_private(path: Path, text: str) -> None:
    """Create with mode 600 from the start: these files hold tokens or credentials."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def ensure_tokens(paths: Paths) -> dict[str, str]:
    """user -> token; generated once and kept, so clients configured earlier keep working."""
    tokens: dict[str, str] = {}
    if paths.tokens.exists():
        for line in paths.tokens.read_text().splitlines():
            parts = line.split(",", 2)
            if len(parts) >= 2 and parts[0]:
                tokens[parts[1]] = parts[0]
    if all(user in tokens for user, _ in IDENTITIES):
        os.chmod(paths.tokens, 0o600)
        return tokens
    lines = []
    for user, groups in IDENTITIES:
        token = tokens.get(user) or secrets.token_urlsafe(32)
        tokens[user] = token
        lines.append(f'{token},{user},{user}-uid,"{groups}"')
    write_private(paths.tokens, "\n".join(lines) + "\n")
    return tokens


def load_stack(paths: Paths) -> dict[str, Any]:
    """What the last ``dev up`` recorded (ports, docker host); empty when nothing runs."""
    try:
        data = json.loads(paths.stack.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_stack(paths: Paths, data: dict[str, Any]) -> None:
    write_private(paths.stack, json.dumps(data, indent=2) + "\n")


def stack_scope(paths: Paths) -> dict[str, str]:
    """The label that marks this stack's containers and volumes, so `dev down` stops only
    its own workspaces on an engine that others (tests, another checkout) share."""
    digest = hashlib.sha256(str(paths.root.resolve()).encode()).hexdigest()[:12]
    return {"codehub.io/stack": f"dev-{digest}"}
