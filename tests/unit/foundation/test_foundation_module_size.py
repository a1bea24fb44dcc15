"""Modules and functions stay small enough to hold in a head.

A module of the code folders over ``MAX_MODULE_LINES`` lines, or a function over
``MAX_FUNCTION_LINES`` lines, must say why in its docstring with the words "Long because"
(docs/development.md, "Code size"). Everything else fails this test by name.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
FOLDERS = ("operator", "crd_like", "adapters", "src/codehub/vocabulary")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 60
EXCUSE = "Long because"


def _sources() -> list[Path]:
    files = [p for folder in FOLDERS for p in (REPO / folder).rglob("*.py")]
    assert len(files) > 40, "the code folders were not found"
    return sorted(files)


def _excused(node: ast.AST) -> bool:
    doc = (
        ast.get_docstring(node)
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        else None
    )
    return bool(doc and EXCUSE in doc)


def test_modules_fit_in_a_head() -> None:
    too_long = []
    for path in _sources():
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES and not _excused(ast.parse(text)):
            too_long.append(f"{path.relative_to(REPO)}: {lines} lines")
    assert not too_long, "modules over the limit without a reason:\n" + "\n".join(too_long)


def test_functions_fit_in_a_head() -> None:
    too_long = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            assert node.end_lineno is not None
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES and not _excused(node):
                too_long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {length}")
    assert not too_long, "functions over the limit without a reason:\n" + "\n".join(too_long)


def test_the_excuse_is_checked() -> None:
    long_body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES + 1))
    tree = ast.parse(f"def f():\n{long_body}\n")
    assert not _excused(tree.body[0])
    tree = ast.parse(f'def f():\n    """{EXCUSE}: a table."""\n{long_body}\n')
    assert _excused(tree.body[0])
