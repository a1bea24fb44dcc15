"""Test modules have unique file names across the whole suite.

pytest imports test modules by their base name (rootdir-relative import mode), so two
``test_progress.py`` in different folders make collection fail for the whole run, or
worse, let one shadow the other when only a subset is collected.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

TESTS = Path(__file__).resolve().parents[2]
SHARED_NAMES = {"conftest.py", "__init__.py"}


def test_module_names_are_unique() -> None:
    seen: dict[str, list[str]] = defaultdict(list)
    for path in TESTS.rglob("*.py"):
        if path.name not in SHARED_NAMES and "__pycache__" not in path.parts:
            seen[path.name].append(str(path.relative_to(TESTS)))
    assert len(seen) > 50, "the test folders were not found"
    clashes = {name: paths for name, paths in seen.items() if len(paths) > 1}
    assert not clashes, f"test module names used more than once: {clashes}"
