"""The layering check (import-linter, docs/architecture.md) really catches forbidden imports.

Runs lint-imports on a temporary copy of the code folders and pyproject.toml, first as is,
then with one forbidden import added, and compares the verdict on the relevant contract.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

ADAPTERS = "adapters never import operator or crd_like"
CRD_LIKE = "crd_like never imports operator"
THIRD_PARTY = "docker and minio only inside adapters"
CRD_LIKE_ADAPTERS = "crd_like never imports adapters"
VOCABULARY = "vocabulary imports no other codehub package"
CONTROL_CLI = "operator control loop never imports the command line"
ALL_CONTRACTS = {ADAPTERS, CRD_LIKE, THIRD_PARTY, CRD_LIKE_ADAPTERS, VOCABULARY, CONTROL_CLI}


def _copy(dest: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for folder in ("operator", "crd_like", "adapters"):
        shutil.copytree(REPO / folder, dest / folder, ignore=ignore)
    shutil.copytree(
        REPO / "src" / "codehub", dest / "src" / "codehub", symlinks=True, ignore=ignore
    )
    shutil.copy(REPO / "pyproject.toml", dest / "pyproject.toml")
    return dest


def _lint(root: Path) -> tuple[dict[str, str], str]:
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    proc = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    verdicts = dict(re.findall(r"^(.+) (KEPT|BROKEN)$", proc.stdout, re.MULTILINE))
    assert verdicts, proc.stdout + proc.stderr
    assert (proc.returncode == 0) == ("BROKEN" not in verdicts.values())
    return verdicts, proc.stdout


def _verdicts(root: Path) -> dict[str, str]:
    return _lint(root)[0]


def _add_import(path: Path, statement: str) -> None:
    path.write_text(path.read_text() + f"\n{statement}  # added by the layering test\n")


@pytest.mark.parametrize(
    ("module", "statement", "contract"),
    [
        ("adapters/naming.py", "import codehub.operator.clock", ADAPTERS),
        ("adapters/config.py", "import codehub.crd_like", ADAPTERS),
        ("crd_like/config.py", "from codehub.operator import settings", CRD_LIKE),
        ("crd_like/config.py", "import docker", THIRD_PARTY),
        ("operator/clock.py", "import minio", THIRD_PARTY),
        ("crd_like/config.py", "import codehub.adapters.errors", CRD_LIKE_ADAPTERS),
        ("src/codehub/vocabulary/errors.py", "import codehub.crd_like.identity", VOCABULARY),
        ("operator/planning.py", "import codehub.operator.cli", CONTROL_CLI),
    ],
)
def test_forbidden_import_breaks_contract(
    tmp_path: Path, module: str, statement: str, contract: str
) -> None:
    copy = _copy(tmp_path)
    before, before_text = _lint(copy)
    assert set(before) == ALL_CONTRACTS
    source = "codehub." + module.removeprefix("src/codehub/").removesuffix(".py").replace("/", ".")
    target = statement.split()[1]
    edge = re.compile(rf"^-\s+{re.escape(source)} -> {re.escape(target)}\b", re.MULTILINE)
    assert not edge.search(before_text)
    if contract != THIRD_PARTY:
        assert before[contract] == "KEPT"
    _add_import(copy / module, statement)
    after, after_text = _lint(copy)
    assert after[contract] == "BROKEN"
    # The report names the very import we added (the contract may already be broken
    # elsewhere on the unmodified tree).
    assert edge.search(after_text), after_text


def test_unmodified_copy_matches_repository(tmp_path: Path) -> None:
    assert _verdicts(_copy(tmp_path)) == _verdicts(REPO)
