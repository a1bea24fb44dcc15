"""The package mapping: codehub.* imports from anywhere, bare ``operator`` stays stdlib."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
STDLIB_OPERATOR = str(Path(sysconfig.get_paths()["stdlib"]) / "operator.py")


def _python(code: str, cwd: Path | str) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_import_operator_from_repo_root_is_stdlib() -> None:
    out = _python(
        "import operator, sys; print(operator.__file__); print(operator.itemgetter(1)('ab'));"
        "print(sys.path[0] == '')",
        REPO,
    )
    assert out == [STDLIB_OPERATOR, "b", "True"]


def test_stdlib_operator_users_work_from_repo_root() -> None:
    # collections, dataclasses and friends import operator internally.
    out = _python(
        "from operator import attrgetter; import collections, dataclasses, fractions;"
        "print(fractions.Fraction(1, 3) + 1); print(attrgetter('real')(3))",
        REPO,
    )
    assert out == ["4/3", "3"]


def test_codehub_packages_import_from_anywhere(tmp_path: Path) -> None:
    out = _python(
        "import operator, codehub.operator, codehub.crd_like, codehub.adapters;"
        "print(operator.__file__); print(codehub.operator.__name__);"
        "print(codehub.adapters.__file__)",
        tmp_path,
    )
    assert out[0] == STDLIB_OPERATOR
    assert out[1] == "codehub.operator"
    assert Path(out[2]).resolve() == (REPO / "adapters" / "__init__.py").resolve()


def test_both_operators_coexist_from_repo_root() -> None:
    out = _python(
        "import codehub.operator, operator, sys;"
        "print(operator.__file__); print(sys.modules['codehub.operator'].__name__)",
        REPO,
    )
    assert out == [STDLIB_OPERATOR, "codehub.operator"]
