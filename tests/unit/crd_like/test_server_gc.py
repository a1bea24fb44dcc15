"""The API server's garbage-collector settings (docs/adr/0007-api-write-path-performance.md)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from codehub.crd_like.server.app import GC_YOUNG_THRESHOLD, tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    before = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


@pytest.mark.usefixtures("restored_gc")
def test_the_server_collects_less_often_and_skips_what_startup_made() -> None:
    older = gc.get_threshold()[1:]
    tune_gc()
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *older)
    assert GC_YOUNG_THRESHOLD > 700
    assert gc.get_freeze_count() > 0
    assert gc.isenabled()
