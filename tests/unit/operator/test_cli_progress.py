"""status.progress in the CLI: ``wait``'s progress line and ``describe`` show a percentage
and a rate (docs/operations.md#progress)."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

from codehub.operator.cli import output as out
from codehub.operator.cli.waiting import _Watcher, display_is

NOW = datetime(2026, 1, 1, tzinfo=UTC)
MIB = 1024 * 1024


def _ws(progress: dict[str, Any] | None, observed: str = "RUNNING") -> dict[str, Any]:
    status: dict[str, Any] = {"observed_status": observed, "operation": "ARCHIVING"}
    if progress is not None:
        status["progress"] = progress
    return {
        "metadata": {"name": "w", "namespace": "ns", "uid": "u"},
        "spec": {"desired_state": "PENDING"},
        "status": status,
    }


def _progress(done: int, total: int | None, rate: float | None) -> dict[str, Any]:
    return {
        "operation": "ARCHIVING",
        "bytes_done": done,
        "bytes_total": total,
        "bytes_per_second": rate,
        "updated_at": "2026-01-01T00:00:00Z",
    }


def test_transfer_text_with_and_without_a_total() -> None:
    assert out.transfer_text(_progress(126 * MIB, 300 * MIB, 35.2 * MIB)) == (
        "42% (126.0 MiB of 300.0 MiB, 35.2 MiB/s)"
    )
    assert out.transfer_text(_progress(512, None, None)) == "512 B done"
    assert out.transfer_text(None) is None
    assert out.transfer_text({"bytes_done": "junk"}) is None
    assert out.human_bytes(3 * 1024**3) == "3.0 GiB"


def test_describe_shows_progress_only_while_there_is_one() -> None:
    text = out.describe(_ws(_progress(150 * MIB, 300 * MIB, 10 * MIB)), [], NOW)
    assert "progress:" in text
    assert "ARCHIVING 50% (150.0 MiB of 300.0 MiB, 10.0 MiB/s)" in text
    assert "progress:" not in out.describe(_ws(None), [], NOW)


def test_wait_line_follows_the_percentage() -> None:
    stream = io.StringIO()
    watcher = _Watcher(
        "ns", "w", display_is("ARCHIVED"), "display=ARCHIVED", out.Progress(stream, "waiting")
    )
    for done in (0, 100 * MIB, 300 * MIB):
        assert not watcher.examine(_ws(_progress(done, 300 * MIB, 20 * MIB)))
    lines = stream.getvalue().splitlines()
    assert [line.split("progress=")[1].split("%")[0] for line in lines] == ["0", "33", "100"]
    assert all("20.0 MiB/s" in line for line in lines)
