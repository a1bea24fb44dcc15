"""Property: whatever member list an archive holds, restore never writes through a link.

Hypothesis generates hostile member lists (links to ``/``, to a sibling "outside"
directory, ``..`` names, links later replaced by directories or files, hard links out of
the tree). :func:`reemit_for_restore` either refuses the archive or emits a stream that
(1) has only relative, clean names, (2) has nothing at or beneath a symlink but the link
itself, (3) holds every symlink after every other member, (4) hard-links only earlier
regular files. When busybox is installed (the job image's tar), the stream is also
extracted the way the restore job does it, next to a sentinel directory that must stay
untouched.
"""

from __future__ import annotations

import gzip
import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from codehub.adapters.archive_format import MODES_FILE, MemberRefusedError, reemit_for_restore

BUSYBOX = shutil.which("busybox")
OUTSIDE = "/nonexistent-codehub-outside"  # replaced by the sentinel's real path per run

# Mostly plain names, so many lists get past the cheap refusals to the interesting cases.
component = st.sampled_from(["a", "a", "b", "evil", "evil", "..", "."])
name = st.builds(
    lambda prefix, parts: prefix + "/".join(parts),
    st.sampled_from([""] * 6 + ["/", "./"]),
    st.lists(component, min_size=1, max_size=3),
)
link_target = st.sampled_from(["/", "..", "../..", "/tmp", OUTSIDE, "../outside", "a", "a/b", ""])
member = st.tuples(
    st.sampled_from(["file", "dir", "symlink", "hardlink"]), name, link_target | name
)


def _tar(entries: list[tuple[str, str, str]], outside: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for kind, member_name, target in entries:
            info = tarfile.TarInfo(member_name or ".")
            target = target.replace(OUTSIDE, outside)
            if kind == "file":
                info.size = 3
                tar.addfile(info, io.BytesIO(b"pwn"))
                continue
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, target
            else:
                info.type, info.linkname = tarfile.LNKTYPE, target or member_name
            tar.addfile(info)
    return gzip.compress(buf.getvalue())


def _check_stream(out: bytes) -> None:
    with tarfile.open(fileobj=io.BytesIO(out), mode="r:") as tar:
        members = tar.getmembers()
    assert members[-1].name == MODES_FILE
    body = members[:-1]
    links = [m.name for m in body if m.issym()]
    first_link = next((i for i, m in enumerate(body) if m.issym()), len(body))
    assert all(m.issym() for m in body[first_link:]), "a member after a symlink"
    regular: set[str] = set()
    for m in body:
        assert not m.name.startswith("/")
        assert ".." not in m.name.split("/")
        for link in links:
            assert m.name == link or not m.name.startswith(link + "/")
        if m.issym():
            assert links.count(m.name) == 1
            assert not any(o.name == m.name for o in body if not o.issym())
        if m.islnk():
            assert m.linkname in regular
        if m.isreg() or m.islnk():
            regular.add(m.name)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(member, min_size=1, max_size=8))
def test_reemitted_stream_never_writes_through_a_link(entries: list[tuple[str, str, str]]) -> None:
    out = io.BytesIO()
    try:
        reemit_for_restore(io.BytesIO(_tar(entries, OUTSIDE)), out)
    except MemberRefusedError:
        event("refused")
        return
    event("accepted")
    _check_stream(out.getvalue())


@pytest.mark.skipif(BUSYBOX is None, reason="busybox (the job image's tar) is not installed")
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(member, min_size=1, max_size=8))
def test_busybox_extraction_of_the_clean_stream_stays_in_staging(
    tmp_path_factory: pytest.TempPathFactory, entries: list[tuple[str, str, str]]
) -> None:
    box = tmp_path_factory.mktemp("box")
    staging, outside = box / "staging", box / "outside"
    staging.mkdir()
    outside.mkdir()
    (outside / "keep").write_text("keep")
    out = io.BytesIO()
    try:
        reemit_for_restore(io.BytesIO(_tar(entries, str(outside))), out)
    except MemberRefusedError:
        return
    assert BUSYBOX is not None
    subprocess.run(
        [BUSYBOX, "tar", "x", "-o", "-C", str(staging)],
        input=out.getvalue(),
        capture_output=True,
        check=False,
    )
    assert sorted(p.name for p in box.iterdir()) == ["outside", "staging"]
    assert [p.name for p in outside.iterdir()] == ["keep"]
    assert (outside / "keep").read_text() == "keep"
    for path in staging.rglob("*"):
        if path.is_symlink():
            continue
        assert staging in path.resolve().parents, f"{path} resolves outside staging"


def test_a_legitimate_tree_with_outside_links_extracts_exactly(tmp_path: Path) -> None:
    if BUSYBOX is None:
        pytest.skip("busybox (the job image's tar) is not installed")
    entries = [
        ("symlink", "up", "../outside"),
        ("dir", "bin", ""),
        ("symlink", "bin/python", "/usr/bin/python3"),
        ("file", "bin/tool", ""),
        ("symlink", "a", "../../etc"),
    ]
    out = io.BytesIO()
    reemit_for_restore(io.BytesIO(_tar(entries, OUTSIDE)), out)
    subprocess.run(
        [BUSYBOX, "tar", "x", "-o", "-C", str(tmp_path)], input=out.getvalue(), check=True
    )
    assert (tmp_path / "bin" / "python").readlink() == Path("/usr/bin/python3")
    assert (tmp_path / "a").readlink() == Path("../../etc")
    assert (tmp_path / "up").readlink() == Path("../outside")
    assert (tmp_path / "bin" / "tool").read_bytes() == b"pwn"
