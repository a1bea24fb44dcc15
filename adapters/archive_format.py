"""Tar member policy shared by archive and restore, independent of Docker and S3.

The contract is docs/storage.md; the data path is docs/adr/0002-archive-data-path.md.
The provider never lets a job container read an archive from S3 and unpack it as it
likes: every member passes through :class:`MemberPolicy` in this process and only a
re-emitted, normalised tar reaches the extracting container. Archive applies the same
policy in "skip" mode, so everything we upload is something restore accepts — an
archive we wrote but refuse to restore would be data loss by design.

Why the policy is what it is:
- names are relative, without ``..``: nothing can land outside the staging directory;
- a symlink is user data and is kept exactly, whatever it points at
  (``bin/python -> /usr/bin/python3``); it is never followed, so its target is harmless;
- nothing is ever written through a symlink: no member may sit beneath a symlink member,
  replace one, or be replaced by one, and on restore every symlink is emitted after all
  other members, so the extractor creates links only once every file is in place;
- hard links must name an earlier regular file of the same archive;
- devices are refused (a Kubernetes pod could not create them either), FIFOs and
  sockets are skipped, ownership is never taken from the archive.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final, Protocol, cast

#: Names at the volume root that belong to the restore machinery, never to user data.
RESERVED_PREFIX = ".codehub-restore"
STAGING_DIR = f"{RESERVED_PREFIX}.staging"
MARKER_FILE = f"{RESERVED_PREFIX}.marker"
MODES_FILE = f"{RESERVED_PREFIX}.modes"

COPY_BUFSIZE = 1 << 20
READ_BUFSIZE = 64 << 10
TAR_FORMAT: Final = tarfile.GNU_FORMAT  # busybox tar reads GNU long names; base-256 sizes
OWNER_UID = 1000
OWNER_GID = 1000


class Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


class Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


class Verdict(Enum):
    KEEP = "keep"
    SKIP = "skip"
    REFUSE = "refuse"


class MemberRefusedError(Exception):
    """A member restore must not extract; ``detail`` names the member and why."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NeedsFilteringError(Exception):
    """A member archive would have to skip: the stream cannot be uploaded as it is."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass
class Decision:
    verdict: Verdict
    name: str = ""
    linkname: str = ""
    why: str = ""


def normalize_name(raw: str) -> str | None:
    """``./a//b/`` -> ``a/b``; ``.`` -> None (the root). Raise ValueError on escapes."""
    if raw.startswith("/"):
        raise ValueError("absolute path")
    parts: list[str] = []
    for part in raw.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise ValueError("'..' component")
        parts.append(part)
    if not parts:
        return None
    return "/".join(parts)


@dataclass
class MemberPolicy:
    """Stateful per-archive check (hard links and symlinks depend on earlier members)."""

    regular_files: set[str] = field(default_factory=set)
    symlinks: set[str] = field(default_factory=set)
    seen: set[str] = field(default_factory=set)
    parents: set[str] = field(default_factory=set)

    def decide(self, member: tarfile.TarInfo) -> Decision:
        try:
            name = normalize_name(member.name)
        except ValueError as exc:
            return Decision(Verdict.REFUSE, why=f"{member.name!r}: {exc}")
        if name is None:
            return Decision(Verdict.SKIP, why="root entry")
        if name.split("/", 1)[0].startswith(RESERVED_PREFIX):
            return Decision(Verdict.SKIP, name=name, why="reserved name")
        if self._through_symlink(name):
            return Decision(Verdict.REFUSE, name=name, why=f"{name!r}: beneath a symlink")
        if name in self.symlinks:
            return Decision(Verdict.REFUSE, name=name, why=f"{name!r}: replaces a symlink")
        if member.ischr() or member.isblk():
            return Decision(Verdict.REFUSE, name=name, why=f"{name!r}: device node")
        if member.isfifo():
            return Decision(Verdict.SKIP, name=name, why="fifo")
        decision = self._decide_kept(member, name)
        if decision.verdict is Verdict.KEEP:
            self.seen.add(name)
            parent = name
            while "/" in parent:
                parent = parent.rsplit("/", 1)[0]
                self.parents.add(parent)
        return decision

    def _through_symlink(self, name: str) -> bool:
        parent = name
        while "/" in parent:
            parent = parent.rsplit("/", 1)[0]
            if parent in self.symlinks:
                return True
        return False

    def _decide_kept(self, member: tarfile.TarInfo, name: str) -> Decision:
        if member.issym():
            if not member.linkname:
                return Decision(Verdict.REFUSE, name=name, why=f"{name!r}: empty symlink target")
            if name in self.seen or name in self.parents:
                return Decision(
                    Verdict.REFUSE, name=name, why=f"{name!r}: symlink replaces an earlier member"
                )
            self.symlinks.add(name)
            self.regular_files.discard(name)
            return Decision(Verdict.KEEP, name=name, linkname=member.linkname)
        if member.islnk():
            try:
                target = normalize_name(member.linkname)
            except ValueError as exc:
                return Decision(Verdict.REFUSE, name=name, why=f"{name!r}: hard link {exc}")
            if target is None or target not in self.regular_files:
                return Decision(
                    Verdict.REFUSE,
                    name=name,
                    why=f"{name!r}: hard link to {member.linkname!r} outside the archive",
                )
            self.regular_files.add(name)
            return Decision(Verdict.KEEP, name=name, linkname=target)
        if member.isdir():
            return Decision(Verdict.KEEP, name=name)
        if member.isreg():
            self.regular_files.add(name)
            return Decision(Verdict.KEEP, name=name)
        return Decision(Verdict.SKIP, name=name, why=f"unsupported type {member.type!r}")


@dataclass
class StreamStats:
    members: int = 0
    skipped: int = 0
    bytes_in_files: int = 0
    skipped_reasons: dict[str, int] = field(default_factory=dict)


def _clean_member(member: tarfile.TarInfo, decision: Decision, mode: int) -> tarfile.TarInfo:
    clean = tarfile.TarInfo(decision.name)
    clean.type = tarfile.REGTYPE if member.type == tarfile.AREGTYPE else member.type
    if member.type == tarfile.CONTTYPE:
        clean.type = tarfile.REGTYPE
    clean.mode = mode
    clean.mtime = int(member.mtime)
    clean.uid, clean.gid = OWNER_UID, OWNER_GID
    clean.uname = clean.gname = ""
    if clean.type == tarfile.REGTYPE:
        clean.size = member.size
    if decision.linkname:
        clean.linkname = decision.linkname
    return clean


# typeshed lacks ``copybufsize`` (a TarFile argument that tarfile.open passes through).
_tar_open: Any = tarfile.open


def _open_reader(src: Readable, mode: str) -> tarfile.TarFile:
    # tarfile's stream reader copies what is left of its buffer on every read, so a small
    # buffer keeps header reads cheap; data reads still come in COPY_BUFSIZE pieces.
    return cast(
        tarfile.TarFile,
        _tar_open(
            fileobj=src,
            mode=mode,
            bufsize=READ_BUFSIZE,
            encoding="utf-8",
            errors="surrogateescape",
            copybufsize=COPY_BUFSIZE,
        ),
    )


class TarWriter:
    """A streaming tar writer with linear cost.

    tarfile's own stream writer appends to an immutable ``bytes`` buffer and re-slices
    it, which makes many small members (a home full of small files) quadratic; here
    headers come from ``TarInfo.tobuf`` and data goes straight to the sink.
    """

    def __init__(self, sink: Writable) -> None:
        self._sink = sink
        self._pos = 0

    def _write(self, data: bytes) -> None:
        self._sink.write(data)
        self._pos += len(data)

    def addfile(self, info: tarfile.TarInfo, data: Readable | None = None) -> None:
        self._write(info.tobuf(TAR_FORMAT, "utf-8", "surrogateescape"))
        if info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or not info.size:
            return
        if data is None:
            raise ValueError("regular member without data")
        remaining = info.size
        while remaining:
            chunk = data.read(min(COPY_BUFSIZE, remaining))
            if not chunk:
                raise tarfile.ReadError("unexpected end of data")
            self._write(chunk)
            remaining -= len(chunk)
        pad = -info.size % tarfile.BLOCKSIZE
        if pad:
            self._write(b"\0" * pad)

    def close(self) -> None:
        self._write(b"\0" * (2 * tarfile.BLOCKSIZE))
        pad = -self._pos % tarfile.RECORDSIZE
        if pad:
            self._write(b"\0" * pad)


def filter_for_archive(src: Readable, sink: Writable) -> StreamStats:
    """Copy a raw tar stream (as ``tar c`` in the job prints it) into a clean one.

    Members restore would refuse are skipped (counted), so every archive is restorable.
    Raises ``tarfile.TarError`` on a truncated or corrupt stream (a killed job).
    """
    stats = StreamStats()
    policy = MemberPolicy()
    writer = TarWriter(sink)
    with _open_reader(src, "r|") as reader:
        for member in reader:
            decision = policy.decide(member)
            if decision.verdict is not Verdict.KEEP:
                if decision.why != "root entry":
                    stats.skipped += 1
                    key = decision.why.split(":")[-1].strip() if decision.why else "?"
                    stats.skipped_reasons[key] = stats.skipped_reasons.get(key, 0) + 1
                continue
            clean = _clean_member(member, decision, member.mode & 0o7777)
            if clean.type == tarfile.REGTYPE:
                writer.addfile(clean, reader.extractfile(member))
                stats.bytes_in_files += clean.size
            else:
                writer.addfile(clean)
            stats.members += 1
    writer.close()
    return stats


def verify_for_archive(src: Readable) -> StreamStats:
    """Check that a tar stream can be uploaded exactly as ``tar c`` wrote it.

    The same :class:`MemberPolicy` as :func:`filter_for_archive`, but nothing is
    rewritten: if every member is one restore keeps, the job's own ``tar c | gzip``
    output is already what the filter would have produced (modulo ownership and header
    details restore normalises anyway). The first member the filter would skip raises
    :class:`NeedsFilteringError` (the caller falls back to the filter). Reads ``src``
    to its end, so a producer feeding it never blocks on an early stop.
    """
    stats = StreamStats()
    policy = MemberPolicy()
    with _open_reader(src, "r|") as reader:
        for member in reader:
            decision = policy.decide(member)
            if decision.verdict is not Verdict.KEEP:
                if decision.why == "root entry":
                    continue
                raise NeedsFilteringError(decision.why)
            stats.members += 1
            if member.isreg():
                stats.bytes_in_files += member.size
    while src.read(COPY_BUFSIZE):
        pass
    return stats


def reemit_for_restore(src: Readable, sink: Writable, *, compressed: bool = True) -> StreamStats:
    """Validate every member of an archive and write a clean tar for the extracting job.

    Directories are emitted with ``u+rwx`` so the unprivileged extractor can fill (and a
    later restore can delete) read-only trees such as Go's module cache; their real modes
    travel in a last member, :data:`MODES_FILE` (NUL-separated ``mode`` and ``./path``
    pairs for ``xargs -0 -n 2 chmod``). That member is written last on purpose: its
    presence proves the stream was complete. Symlinks are held back (they are small) and
    written just before it, so while the extractor writes files and directories there is
    no link in the staging tree to write through, whatever the archive's order was.
    Raises :class:`MemberRefusedError` on the first refused member, ``tarfile.TarError``
    on a corrupt archive.
    """
    stats = StreamStats()
    policy = MemberPolicy()
    fixups: list[bytes] = []
    links: list[tarfile.TarInfo] = []
    writer = TarWriter(sink)
    with _open_reader(src, "r|gz" if compressed else "r|") as reader:
        for member in reader:
            decision = policy.decide(member)
            if decision.verdict is Verdict.REFUSE:
                raise MemberRefusedError(decision.why)
            if decision.verdict is Verdict.SKIP:
                if decision.why != "root entry":
                    stats.skipped += 1
                continue
            mode = member.mode & 0o7777
            if member.isdir() and mode & 0o700 != 0o700:
                fixups.append(f"{mode:04o}\0./{decision.name}\0".encode("utf-8", "surrogateescape"))
                mode |= 0o700
            clean = _clean_member(member, decision, mode)
            stats.members += 1
            if clean.type == tarfile.SYMTYPE:
                links.append(clean)
            elif clean.type == tarfile.REGTYPE:
                writer.addfile(clean, reader.extractfile(member))
                stats.bytes_in_files += clean.size
            else:
                writer.addfile(clean)
    for link in links:
        writer.addfile(link)
    _add_modes_member(writer, b"".join(reversed(fixups)))  # deepest first
    writer.close()
    return stats


def _add_modes_member(writer: TarWriter, data: bytes) -> None:
    modes = tarfile.TarInfo(MODES_FILE)
    modes.size = len(data)
    modes.mode = 0o600
    modes.uid, modes.gid = OWNER_UID, OWNER_GID
    writer.addfile(modes, io.BytesIO(data))


def parse_job_log(text: str) -> dict[str, str]:
    """The last ``RESULT=...`` line of a job's ``key=value`` log, as a dict."""
    result: dict[str, str] = {}
    for line in text.splitlines():
        if "RESULT=" not in line:
            continue
        fields: dict[str, str] = {}
        for token in line.split():
            key, sep, value = token.partition("=")
            if sep and key.isupper():
                fields[key] = value
        if "RESULT" in fields:
            result = fields
    return result


def build_tar_gz(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    """A small in-memory tar.gz (fakes and crafted test archives)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=TAR_FORMAT) as tar:
        for info, data in entries:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def iter_members(data: bytes) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    """Every member of an in-memory tar.gz with its data (fakes only)."""
    out: list[tuple[tarfile.TarInfo, bytes | None]] = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar:
            fobj = tar.extractfile(member) if member.isreg() else None
            out.append((member, fobj.read() if fobj else None))
    return out
