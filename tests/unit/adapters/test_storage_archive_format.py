"""Tar member policy and the streaming re-emitters (no Docker, no S3)."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest

from codehub.adapters.archive_format import (
    MODES_FILE,
    STAGING_DIR,
    MemberPolicy,
    MemberRefusedError,
    Verdict,
    filter_for_archive,
    normalize_name,
    parse_job_log,
    reemit_for_restore,
)


def info(name: str, **attrs: object) -> tarfile.TarInfo:
    i = tarfile.TarInfo(name)
    for k, v in attrs.items():
        setattr(i, k, v)
    return i


def raw_tar(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for member, data in entries:
            if data is not None:
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
            else:
                tar.addfile(member)
    return buf.getvalue()


def members(data: bytes) -> dict[str, tuple[tarfile.TarInfo, bytes | None]]:
    out: dict[str, tuple[tarfile.TarInfo, bytes | None]] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as tar:
        for m in tar:
            f = tar.extractfile(m) if m.isreg() else None
            out[m.name] = (m, f.read() if f else None)
    return out


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("./a//b/", "a/b"), ("a", "a"), (".", None), ("./", None), ("a/./b", "a/b")],
)
def test_normalize_name(raw: str, expected: str | None) -> None:
    assert normalize_name(raw) == expected


@pytest.mark.parametrize("raw", ["/etc/x", "../x", "a/../../x", "a/.."])
def test_normalize_name_refuses_escapes(raw: str) -> None:
    with pytest.raises(ValueError):
        normalize_name(raw)


@pytest.mark.parametrize(
    "target",
    ["b", "../b", "../../etc", "..", "/usr/bin/python3", "/", "/home/coder/x", "dangling/x"],
)
def test_symlinks_are_kept_whatever_they_point_at(target: str) -> None:
    decision = MemberPolicy().decide(info("a/l", type=tarfile.SYMTYPE, linkname=target))
    assert (decision.verdict, decision.name, decision.linkname) == (Verdict.KEEP, "a/l", target)


def test_policy_never_lets_a_member_write_through_a_symlink() -> None:
    p = MemberPolicy()
    assert p.decide(info("evil", type=tarfile.SYMTYPE, linkname="/")).verdict is Verdict.KEEP
    for later in (
        info("evil/etc/passwd"),
        info("evil", type=tarfile.DIRTYPE),
        info("evil"),
        info("evil", type=tarfile.SYMTYPE, linkname="/tmp"),
        info("./evil/", type=tarfile.DIRTYPE),
        info("h", type=tarfile.LNKTYPE, linkname="evil/etc/passwd"),
        info("evil/x", type=tarfile.SYMTYPE, linkname="y"),
    ):
        assert p.decide(later).verdict is Verdict.REFUSE, later.name
    # A link may not take the place of anything extracted before it either.
    assert p.decide(info("d/f")).verdict is Verdict.KEEP
    assert p.decide(info("d", type=tarfile.SYMTYPE, linkname="/tmp")).verdict is Verdict.REFUSE
    assert p.decide(info("d/f", type=tarfile.SYMTYPE, linkname="/tmp")).verdict is Verdict.REFUSE
    assert p.decide(info("e", type=tarfile.SYMTYPE, linkname="")).verdict is Verdict.REFUSE


def test_policy_refuses_and_skips() -> None:
    p = MemberPolicy()
    assert p.decide(info("./")).verdict is Verdict.SKIP
    assert p.decide(info("./f")).verdict is Verdict.KEEP
    assert p.decide(info("dev", type=tarfile.CHRTYPE)).verdict is Verdict.REFUSE
    assert p.decide(info("blk", type=tarfile.BLKTYPE)).verdict is Verdict.REFUSE
    assert p.decide(info("fifo", type=tarfile.FIFOTYPE)).verdict is Verdict.SKIP
    assert p.decide(info(f"{STAGING_DIR}/x")).verdict is Verdict.SKIP
    assert p.decide(info("l", type=tarfile.SYMTYPE, linkname="f")).verdict is Verdict.KEEP
    # Writing beneath a symlink (even one pointing inside) would follow it.
    assert p.decide(info("l/x")).verdict is Verdict.REFUSE
    hard = p.decide(info("h", type=tarfile.LNKTYPE, linkname="./f"))
    assert (hard.verdict, hard.linkname) == (Verdict.KEEP, "f")
    assert p.decide(info("h2", type=tarfile.LNKTYPE, linkname="l")).verdict is Verdict.REFUSE
    assert p.decide(info("h3", type=tarfile.LNKTYPE, linkname="/etc/x")).verdict is Verdict.REFUSE


def test_filter_for_archive_normalises_and_skips() -> None:
    src = raw_tar(
        [
            (info("./", type=tarfile.DIRTYPE, mode=0o755), None),
            (info("./d", type=tarfile.DIRTYPE, mode=0o555, uid=0, uname="root"), None),
            (info("./d/f", mode=0o640, uid=0), b"data"),
            (info("./fifo", type=tarfile.FIFOTYPE), None),
            (info("./abs", type=tarfile.SYMTYPE, linkname="/usr/bin/python3"), None),
            (info("./ok", type=tarfile.SYMTYPE, linkname="d/f"), None),
            (info("./hl", type=tarfile.LNKTYPE, linkname="./d/f"), None),
            (info("./up", type=tarfile.SYMTYPE, linkname="../../etc"), None),
        ]
    )
    out = io.BytesIO()
    stats = filter_for_archive(io.BytesIO(src), out)
    got = members(out.getvalue())
    assert set(got) == {"d", "d/f", "abs", "ok", "hl", "up"}
    assert stats.members == 6
    assert stats.skipped == 1
    # Links are user data: kept exactly, wherever they point.
    assert got["abs"][0].linkname == "/usr/bin/python3"
    assert got["up"][0].linkname == "../../etc"
    assert got["d"][0].mode == 0o555
    assert got["d/f"][1] == b"data"
    assert (got["d/f"][0].uid, got["d/f"][0].uname) == (1000, "")
    assert got["hl"][0].linkname == "d/f"


def test_filter_for_archive_fails_on_truncated_stream() -> None:
    src = raw_tar([(info("big", mode=0o644), b"x" * 100_000)])
    with pytest.raises(tarfile.TarError):
        filter_for_archive(io.BytesIO(src[:50_000]), io.BytesIO())


def test_reemit_for_restore_unlocks_dirs_and_appends_modes_last() -> None:
    src = gzip.compress(
        raw_tar(
            [
                (info("ro", type=tarfile.DIRTYPE, mode=0o555), None),
                (info("ro/sub", type=tarfile.DIRTYPE, mode=0o500), None),
                (info("ro/sub/f", mode=0o444), b"x"),
                (info("rw", type=tarfile.DIRTYPE, mode=0o755), None),
            ]
        )
    )
    out = io.BytesIO()
    reemit_for_restore(io.BytesIO(src), out)
    got = members(out.getvalue())
    names = list(got)
    assert names[-1] == MODES_FILE
    assert got["ro"][0].mode == 0o755
    assert got["ro/sub"][0].mode == 0o700
    assert got["rw"][0].mode == 0o755
    assert got["ro/sub/f"][0].mode == 0o444
    # Deepest first, so chmod of a child never needs an already locked parent.
    assert got[MODES_FILE][1] == b"0500\0./ro/sub\0" + b"0555\0./ro\0"


def test_reemit_for_restore_writes_links_last_and_exactly() -> None:
    src = gzip.compress(
        raw_tar(
            [
                (info("bin", type=tarfile.DIRTYPE, mode=0o755), None),
                (info("bin/python", type=tarfile.SYMTYPE, linkname="/usr/bin/python3"), None),
                (info("a", type=tarfile.SYMTYPE, linkname="../../etc"), None),
                (info("bin/tool", mode=0o755), b"#!/bin/sh\n"),
                (info("z", type=tarfile.DIRTYPE, mode=0o755), None),
            ]
        )
    )
    out = io.BytesIO()
    stats = reemit_for_restore(io.BytesIO(src), out)
    got = members(out.getvalue())
    assert list(got) == ["bin", "bin/tool", "z", "bin/python", "a", MODES_FILE]
    assert got["bin/python"][0].linkname == "/usr/bin/python3"
    assert got["a"][0].linkname == "../../etc"
    assert stats.members == 5


HOSTILE: dict[str, list[tuple[tarfile.TarInfo, bytes | None]]] = {
    "dotdot": [(info("../x"), b"escape")],
    "absolute": [(info("/etc/x"), b"escape")],
    "device": [(info("dev", type=tarfile.CHRTYPE), None)],
    "link-to-root-then-file": [
        (info("evil", type=tarfile.SYMTYPE, linkname="/"), None),
        (info("evil/etc/passwd"), b"root::0:0::/:/bin/sh\n"),
    ],
    "link-replaced-by-dir": [
        (info("d", type=tarfile.SYMTYPE, linkname="/tmp"), None),
        (info("d/", type=tarfile.DIRTYPE, mode=0o755), None),
        (info("d/x"), b"escape"),
    ],
    "relative-link-then-file": [
        (info("up", type=tarfile.SYMTYPE, linkname="../.."), None),
        (info("up/x"), b"escape"),
    ],
    "hardlink-out-absolute": [(info("h", type=tarfile.LNKTYPE, linkname="/etc/passwd"), None)],
    "hardlink-out-dotdot": [(info("h", type=tarfile.LNKTYPE, linkname="../../etc/passwd"), None)],
    "hardlink-through-link": [
        (info("evil", type=tarfile.SYMTYPE, linkname="/"), None),
        (info("h", type=tarfile.LNKTYPE, linkname="evil/etc/passwd"), None),
    ],
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_reemit_for_restore_refuses(kind: str) -> None:
    src = gzip.compress(raw_tar([(info("fine"), b"ok"), *HOSTILE[kind]]))
    out = io.BytesIO()
    with pytest.raises(MemberRefusedError):
        reemit_for_restore(io.BytesIO(src), out)
    assert MODES_FILE.encode() not in out.getvalue()


def test_parse_job_log_takes_last_result_line() -> None:
    text = "noise\nRESULT=FAIL CODEHUB_ERROR=DISK_FULL STEP=extract\nlater\n"
    assert parse_job_log(text) == {
        "RESULT": "FAIL",
        "CODEHUB_ERROR": "DISK_FULL",
        "STEP": "extract",
    }
    assert parse_job_log("RESULT=FAIL CODEHUB_ERROR=X\nRESULT=OK\n") == {"RESULT": "OK"}
    assert parse_job_log("nothing") == {}
