"""An in-memory StorageProvider for unit tests and scale benchmarks only; its archives
live in a ``MemoryObjectStore``.

It keeps the real contract where it matters to callers: the same keys and ``.meta``
content, crash-only HEAD checks, sha256 verification, the same tar member policy (the
archives are real tar.gz bytes, so crafted archives are refused exactly like the real
provider refuses them) and the same error types and codes. Failures and latency are
injectable; ``engine_calls`` counts what would be engine round trips.
"""

from __future__ import annotations

import asyncio
import hashlib
import tarfile
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from codehub.adapters import naming
from codehub.adapters.archive_format import (
    RESERVED_PREFIX,
    MemberPolicy,
    Verdict,
    build_tar_gz,
    iter_members,
)
from codehub.adapters.errors import (
    ActionFailedError,
    DataLostError,
    ErrorCode,
)
from codehub.adapters.fake_instance import Hook, install_hook, remove_hook
from codehub.adapters.fake_object_store import MemoryObjectStore
from codehub.adapters.interfaces import (
    ProgressCallback,
    StorageProvider,
)


@dataclass
class FakeEntry:
    """One path of a fake volume: ``kind`` is "file", "dir" or "symlink"."""

    kind: str
    mode: int = 0o644
    data: bytes = b""
    target: str = ""
    mtime: int = 0


@dataclass
class FakeVolume:
    labels: dict[str, str] = field(default_factory=dict)
    entries: dict[str, FakeEntry] = field(default_factory=dict)


class _Injector:
    """Per-method queues of exceptions to raise, plus a fixed latency."""

    def __init__(self, latency: float = 0.0) -> None:
        self.latency = latency
        self.calls: Counter[str] = Counter()
        self._failures: dict[str, list[BaseException]] = {}

    def fail_next(self, method: str, exc: BaseException, times: int = 1) -> None:
        self._failures.setdefault(method, []).extend([exc] * times)

    async def enter(self, method: str) -> None:
        self.calls[method] += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        pending = self._failures.get(method)
        if pending:
            raise pending.pop(0)


class FakeStorageProvider(StorageProvider):
    """Volumes as dicts of entries; archives as real tar.gz bytes in a MemoryObjectStore."""

    def __init__(self, objects: MemoryObjectStore | None = None, latency: float = 0.0) -> None:
        self.objects = objects or MemoryObjectStore()
        self.volumes: dict[str, FakeVolume] = {}
        self.in_use: set[str] = set()
        self.inject = _Injector(latency)
        self.engine_calls = 0
        #: Simulate a crash between the archive upload and the .meta upload, this many times.
        self.crash_before_meta = 0

    # ----------------------------------------------------------------- test helpers

    def fail_next(self, method: str, exc: BaseException, times: int = 1) -> None:
        """Make the next ``times`` calls of ``method`` raise ``exc`` (before any effect)."""
        if not hasattr(StorageProvider, method):
            raise ValueError(f"not a StorageProvider method: {method}")
        self.inject.fail_next(method, exc, times)

    def set_latency(self, seconds: float) -> None:
        """Every later call sleeps this long first (real time)."""
        self.inject.latency = seconds

    def hook(self, method: str, *, before: Hook | None = None, after: Hook | None = None) -> None:
        """Run ``before``/``after`` around each call of ``method`` (see ``install_hook``)."""
        install_hook(self, method, before, after)

    def unhook(self, method: str) -> None:
        remove_hook(self, method)

    def write_entries(self, uid: str, entries: Mapping[str, FakeEntry]) -> None:
        self.volumes[uid].entries.update(entries)

    def manifest(self, uid: str) -> dict[str, tuple[str, int, int, str, str]]:
        """path -> (type, mode, size, sha256, symlink target), like the real test helper."""
        out: dict[str, tuple[str, int, int, str, str]] = {}
        for path, e in self.volumes[uid].entries.items():
            sha = hashlib.sha256(e.data).hexdigest() if e.kind == "file" else ""
            size = len(e.data) if e.kind == "file" else 0
            out[path] = (e.kind, e.mode & 0o7777, size, sha, e.target)
        return out

    # ----------------------------------------------------------------- contract

    async def provision(self, uid: str, labels: Mapping[str, str] | None = None) -> None:
        await self.inject.enter("provision")
        self.engine_calls += 1
        if uid not in self.volumes:
            self.volumes[uid] = FakeVolume(
                labels={**dict(labels or {}), **naming.workspace_labels(uid)}
            )

    async def archive(
        self, uid: str, op_id: str, *, on_progress: ProgressCallback | None = None
    ) -> str:
        """Progress like the real provider: tar bytes against an estimate, then final."""
        await self.inject.enter("archive")
        key = naming.archive_key(uid, op_id)
        meta = naming.meta_key(key)
        if key in self.objects and meta in self.objects:
            return key
        self.engine_calls += 1
        volume = self.volumes.get(uid)
        if volume is None:
            raise DataLostError(
                f"volume {naming.volume_name(uid)} of {uid} does not exist; nothing to archive",
                code=ErrorCode.VOLUME_NOT_FOUND,
                context={"uid": uid, "op_id": op_id},
            )
        entries = self._tar_entries(volume)
        if on_progress is not None:
            on_progress(0, sum(512 + len(d or b"") for _, d in entries))
        data = build_tar_gz(entries)
        self.objects.put(key, data)
        if self.crash_before_meta > 0:
            self.crash_before_meta -= 1
            raise ActionFailedError(f"simulated crash after uploading {key}")
        self.objects.put(meta, f"sha256:{hashlib.sha256(data).hexdigest()}".encode())
        if on_progress is not None:
            raw = sum(512 + len(d or b"") + (-len(d or b"") % 512) for _, d in entries) + 1024
            on_progress(raw, raw)
        return key

    def _tar_entries(self, volume: FakeVolume) -> list[tuple[tarfile.TarInfo, bytes | None]]:
        out: list[tuple[tarfile.TarInfo, bytes | None]] = []
        for path in sorted(volume.entries):
            if path.split("/", 1)[0].startswith(RESERVED_PREFIX):
                continue
            e = volume.entries[path]
            info = tarfile.TarInfo(path)
            info.mode = e.mode
            info.mtime = e.mtime
            info.uid = info.gid = 1000
            if e.kind == "dir":
                info.type = tarfile.DIRTYPE
                out.append((info, None))
            elif e.kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = e.target
                out.append((info, None))
            else:
                out.append((info, e.data))
        return out

    async def restore(
        self, uid: str, archive_key: str, *, on_progress: ProgressCallback | None = None
    ) -> None:
        """Progress like the real provider: compressed bytes downloaded, then extracted."""
        await self.inject.enter("restore")
        data = self.objects.get(archive_key)
        if data is None:
            raise DataLostError(
                f"archive {archive_key} of {uid} not found", code=ErrorCode.ARCHIVE_NOT_FOUND
            )
        meta = self.objects.get(naming.meta_key(archive_key))
        if meta is None:
            raise DataLostError(
                f"checksum object of {archive_key} not found", code=ErrorCode.META_NOT_FOUND
            )
        if meta.decode("ascii", "replace").strip() != f"sha256:{hashlib.sha256(data).hexdigest()}":
            raise DataLostError(
                f"archive {archive_key} of {uid} fails its checksum",
                code=ErrorCode.CHECKSUM_MISMATCH,
            )
        if on_progress is not None:
            on_progress(0, 2 * len(data))
            on_progress(len(data), 2 * len(data))
        entries: dict[str, FakeEntry] = {}
        policy = MemberPolicy()
        try:
            members = iter_members(data)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataLostError(
                f"archive {archive_key} of {uid} is not a readable tar.gz",
                code=ErrorCode.TAR_EXTRACT_FAILED,
            ) from exc
        for member, content in members:
            decision = policy.decide(member)
            if decision.verdict is Verdict.REFUSE:
                raise DataLostError(
                    f"archive {archive_key} of {uid} refused: {decision.why}",
                    code=ErrorCode.TAR_EXTRACT_FAILED,
                )
            if decision.verdict is Verdict.SKIP:
                continue
            mode = member.mode & 0o7777
            if member.isdir():
                entries[decision.name] = FakeEntry("dir", mode, mtime=int(member.mtime))
            elif member.issym():
                entries[decision.name] = FakeEntry("symlink", 0o777, target=member.linkname)
            elif member.islnk():
                src = entries[decision.linkname]
                entries[decision.name] = FakeEntry("file", src.mode, src.data, mtime=src.mtime)
            else:
                entries[decision.name] = FakeEntry(
                    "file", mode, content or b"", mtime=int(member.mtime)
                )
        # Provisions a missing volume like the real one, without counting a provision call.
        volume = self.volumes.setdefault(uid, FakeVolume(labels=naming.workspace_labels(uid)))
        self.engine_calls += 1
        volume.entries = entries
        if on_progress is not None:
            on_progress(2 * len(data), 2 * len(data))

    async def delete_volume(self, uid: str) -> None:
        await self.inject.enter("delete_volume")
        self.engine_calls += 1
        if uid in self.in_use and uid in self.volumes:
            raise ActionFailedError(
                f"volume {naming.volume_name(uid)} is still in use by a container",
                context={"uid": uid},
            )
        self.volumes.pop(uid, None)

    async def volume_exists(self, uid: str) -> bool:
        await self.inject.enter("volume_exists")
        self.engine_calls += 1
        return uid in self.volumes

    async def list_volumes(self) -> set[str]:
        await self.inject.enter("list_volumes")
        self.engine_calls += 1
        return set(self.volumes)
