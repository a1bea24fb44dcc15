"""Bearer tokens from a Kubernetes-style static token file, and who may do what.

A plain user acts only in the namespace named after them; ``codehub:admin`` and
``codehub:operator`` act everywhere, and only they may write ``/status`` (the operator
owns status, docs/resource.md). The file is re-read when its modification time changes, so a
token can be added or revoked without a restart.
"""

from __future__ import annotations

import csv
import hmac
import io
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

ADMIN_GROUP = "codehub:admin"
OPERATOR_GROUP = "codehub:operator"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Identity:
    user: str
    uid: str
    groups: frozenset[str] = field(default_factory=frozenset)

    @property
    def privileged(self) -> bool:
        return bool(self.groups & {ADMIN_GROUP, OPERATOR_GROUP})

    @property
    def is_admin(self) -> bool:
        return ADMIN_GROUP in self.groups

    def may_access_namespace(self, namespace: str) -> bool:
        return self.privileged or namespace == self.user

    @property
    def may_write_status(self) -> bool:
        return self.privileged


@dataclass(frozen=True)
class TokenEntry:
    token: str = field(repr=False)
    identity: Identity


def parse_token_file(text: str) -> list[TokenEntry]:
    """CSV lines ``token,user,uid,"group1,group2"``; blank lines and ``#`` comments skipped."""
    entries: list[TokenEntry] = []
    for row in csv.reader(io.StringIO(text)):
        if not row or not row[0].strip() or row[0].lstrip().startswith("#"):
            continue
        if len(row) < 2:
            raise ValueError("token file line needs at least token and user")
        token, user = row[0].strip(), row[1].strip()
        uid = row[2].strip() if len(row) > 2 else user
        groups = (
            frozenset(g.strip() for g in row[3].split(",") if g.strip()) if len(row) > 3 else ()
        )
        entries.append(TokenEntry(token, Identity(user, uid, frozenset(groups))))
    return entries


class TokenAuthenticator:
    """Looks a bearer token up in the token file; re-reads the file when it changes."""

    def __init__(self, token_file: str | None) -> None:
        self._path = Path(token_file) if token_file else None
        self._mtime: float | None = None
        self._entries: list[TokenEntry] = []
        self._reload()

    def _reload(self) -> None:
        if self._path is None:
            return
        try:
            mtime = os.stat(self._path).st_mtime
        except OSError:
            log.warning("token file %s is not readable; nobody can authenticate", self._path)
            self._entries = []
            self._mtime = None
            return
        if mtime == self._mtime:
            return
        try:
            self._entries = parse_token_file(self._path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("token file %s could not be parsed: %s", self._path, exc)
            return
        self._mtime = mtime

    def authenticate(self, header: str | None) -> Identity | None:
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        token = token.strip()
        self._reload()
        found: Identity | None = None
        for entry in self._entries:
            if hmac.compare_digest(entry.token.encode(), token.encode()):
                found = entry.identity
        return found

    def users(self) -> list[Identity]:
        self._reload()
        return [e.identity for e in self._entries]
