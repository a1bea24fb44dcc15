"""Load and check Workspace manifests before anything is sent to the server.

``codehub apply`` parses and validates every document first, so a bad document anywhere in
the input means nothing is applied. The checks here are the cheap, local ones (shape,
apiVersion/kind, names, enum and number ranges); the server stays the authority and
re-validates everything.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

from codehub.crd_like.identity import API_VERSION, KIND
from codehub.crd_like.models import validate_workspace_body

SUFFIXES = (".yaml", ".yml", ".json")


class ManifestError(ValueError):
    """One or more documents cannot be used; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Manifest:
    """One Workspace document; ``source`` says where it came from for messages."""

    source: str
    obj: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def namespace(self) -> str | None:
        ns = self.obj["metadata"].get("namespace")
        return str(ns) if ns else None


def load_manifests(paths: Iterable[str], stdin: TextIO | None = None) -> list[Manifest]:
    """Parse and validate every document under ``paths`` ("-" is stdin); all or nothing."""
    problems: list[str] = []
    manifests: list[Manifest] = []
    sources: list[tuple[str, str]] = []
    for path in paths:
        try:
            sources.extend(_read(path, stdin))
        except ManifestError as exc:
            problems.extend(exc.problems)
    for label, text in sources:
        for source, doc in _documents(label, text, problems):
            for item_source, item in _expand_list(source, doc, problems):
                errors = validate_workspace(item)
                if errors:
                    problems.extend(f"{item_source}: {e}" for e in errors)
                else:
                    manifests.append(Manifest(item_source, item))
    seen: dict[tuple[str | None, str], str] = {}
    for m in manifests:
        key = (m.namespace, m.name)
        if key in seen:
            problems.append(f"{m.source}: workspace {m.name!r} also defined in {seen[key]}")
        else:
            seen[key] = m.source
    if problems:
        raise ManifestError(problems)
    if not manifests:
        raise ManifestError(["no objects found in the given input"])
    return manifests


def validate_workspace(obj: dict[str, Any]) -> list[str]:
    """Local checks of one document (the server's own rules); each problem names the field."""
    errors: list[str] = []
    for key, expected in (("apiVersion", API_VERSION), ("kind", KIND)):
        if obj.get(key) is None:
            errors.append(f"{key}: Required value: must be {expected!r}")
    errors.extend(
        f"{e.field_path}: {e.message}" if e.field_path else e.message
        for e in validate_workspace_body(obj, check_status=False)
    )
    return errors


def _read(path: str, stdin: TextIO | None) -> list[tuple[str, str]]:
    if path == "-":
        stream = stdin if stdin is not None else sys.stdin
        return [("<stdin>", stream.read())]
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES)
        if not files:
            raise ManifestError([f"{path}: no {', '.join(SUFFIXES)} files in directory"])
        return [(str(f), _read_file(f)) for f in files]
    if not p.exists():
        raise ManifestError([f"{path}: no such file or directory"])
    return [(str(p), _read_file(p))]


def _read_file(p: Path) -> str:
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ManifestError([f"{p}: not a UTF-8 text file"]) from None
    except OSError as exc:
        raise ManifestError([f"{p}: {exc.strerror or exc}"]) from None


def _documents(label: str, text: str, problems: list[str]) -> list[tuple[str, Any]]:
    if label.lower().endswith(".json"):
        try:
            return [(label, json.loads(text))]
        except ValueError as exc:
            problems.append(f"{label}: invalid JSON: {exc}")
            return []
    docs: list[tuple[str, Any]] = []
    try:
        for i, doc in enumerate(yaml.safe_load_all(text), start=1):
            if doc is not None:
                docs.append((f"{label} (document {i})", doc))
    except yaml.YAMLError as exc:
        problems.append(f"{label}: invalid YAML: {_yaml_problem(exc)}")
        return []
    return docs


def _expand_list(source: str, doc: Any, problems: list[str]) -> list[tuple[str, dict[str, Any]]]:
    if not isinstance(doc, dict):
        problems.append(f"{source}: expected a mapping (an object), got {type(doc).__name__}")
        return []
    if doc.get("kind") == "List" or (doc.get("kind") or "").endswith("List"):
        items = doc.get("items")
        if not isinstance(items, list):
            problems.append(f"{source}: items: must be a list")
            return []
        out: list[tuple[str, dict[str, Any]]] = []
        for i, item in enumerate(items):
            if isinstance(item, dict):
                out.append((f"{source} items[{i}]", item))
            else:
                problems.append(f"{source} items[{i}]: expected a mapping")
        return out
    return [(source, doc)]


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).strip().split("\n", 1)[0]
    if mark is not None:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return str(problem)
