"""What reaches the terminal: stdout, one-line stderr messages with secrets masked, and the
errors a command raises once it has phrased the failure for the user."""

from __future__ import annotations

import sys
from collections.abc import Iterable

_SECRETS: list[str] = []


class CliError(Exception):
    """A failure already phrased for the user (one line, no trace)."""


class WaitFailed(CliError):
    """A wait ended without its condition (timeout, ERROR, deleted)."""


def mask_secrets(secrets: Iterable[str | None]) -> None:
    """Tokens to replace by ``***`` in every stderr line; short values would mask too much."""
    _SECRETS[:] = [s for s in secrets if s and len(s) >= 8]


def out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def err(line: str) -> None:
    for secret in _SECRETS:
        line = line.replace(secret, "***")
    sys.stderr.write(line.rstrip("\n") + "\n")
    sys.stderr.flush()
