"""``codehub gc preview``: the parser wiring and what it prints."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from codehub.operator.archive_gc import PreviewRow
from codehub.operator.cli.gc import cmd_gc_preview, render_preview
from codehub.operator.cli.parser import build_parser

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)
DELAY = 7200.0


def test_parser_has_gc_preview() -> None:
    args = build_parser().parse_args(["gc", "preview"])
    assert args.func is cmd_gc_preview


def test_nothing_to_delete() -> None:
    assert render_preview([], NOW, DELAY).startswith("no orphaned archives")


def test_rows_say_when_each_orphan_goes() -> None:
    rows = [
        PreviewRow("archives/u/new/home.tar.gz", 10, None, NOW + timedelta(hours=2)),
        PreviewRow("archives/u/old/home.tar.gz", 3 * 1024 * 1024, NOW - timedelta(hours=3), NOW),
        PreviewRow(
            "archives/u/mid/home.tar.gz",
            2048,
            NOW - timedelta(minutes=30),
            NOW + timedelta(minutes=90),
        ),
    ]
    text = render_preview(rows, NOW, DELAY)
    lines = text.splitlines()
    assert lines[0].split() == ["KEY", "SIZE", "ORPHAN", "FOR", "DELETED"]
    # soonest first
    assert lines[1].startswith("archives/u/old/home.tar.gz")
    assert "3.0 MiB" in lines[1]
    assert "3h" in lines[1]
    assert lines[1].endswith("next pass")
    assert lines[2].startswith("archives/u/mid/home.tar.gz")
    assert "in 90m" in lines[2]
    assert "2026-01-01T13:30:00Z" in lines[2]
    assert "not seen yet" in lines[3]
    assert lines[-1].startswith("3 orphan(s)")
    assert "1 due at the next pass" in lines[-1]
