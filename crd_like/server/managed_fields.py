"""Field ownership for server-side apply: pure functions over objects and field sets.

Ownership is tracked at the granularity tools need (docs/api.md): every leaf of
``spec`` (nested objects are walked, a list is one leaf), each key of
``metadata.labels`` and ``metadata.annotations``, and ``metadata.finalizers`` and
``metadata.ownerReferences`` as whole fields. ``status`` is never owned here: the
status subresource is the operator's. Entries are stored in ``metadata.managedFields``
in the Kubernetes shape (``manager``, ``operation`` Apply or Update, ``apiVersion``,
``time``, ``fieldsType: FieldsV1``, ``fieldsV1``), so kubectl and client libraries read
them as they would on a real cluster.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Path = tuple[str, ...]
Obj = dict[str, Any]

APPLY = "Apply"
UPDATE = "Update"
_MAP_KEYS = ("labels", "annotations")
_WHOLE_METADATA = ("finalizers", "ownerReferences")
MAX_MANAGER_LENGTH = 128


@dataclass(frozen=True)
class FieldConflict:
    """``path`` is set to another value than ``manager`` set it to."""

    path: Path
    manager: str


class ApplyConflicts(Exception):
    """Apply would change fields other managers own (HTTP 409 unless forced)."""

    def __init__(self, conflicts: list[FieldConflict]) -> None:
        super().__init__(f"{len(conflicts)} conflicts")
        self.conflicts = conflicts


def _spec_leaves(value: Any, prefix: Path) -> Iterable[Path]:
    if isinstance(value, dict) and value:
        for key, child in value.items():
            yield from _spec_leaves(child, (*prefix, str(key)))
    else:
        yield prefix


def field_set(obj: Mapping[str, Any]) -> set[Path]:
    """The owned-field paths an object (or an apply configuration) sets."""
    paths: set[Path] = set()
    spec = obj.get("spec")
    if isinstance(spec, dict):
        for key, child in spec.items():
            paths.update(_spec_leaves(child, ("spec", str(key))))
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        for map_key in _MAP_KEYS:
            entries = meta.get(map_key)
            if isinstance(entries, dict):
                paths.update(("metadata", map_key, str(k)) for k in entries)
        paths.update(("metadata", key) for key in _WHOLE_METADATA if key in meta)
    return paths


def value_at(obj: Mapping[str, Any], path: Path) -> tuple[bool, Any]:
    """(present, value) of a path."""
    node: Any = obj
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False, None
        node = node[key]
    return True, node


def set_at(obj: Obj, path: Path, value: Any) -> None:
    node = obj
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[path[-1]] = copy.deepcopy(value)


def remove_at(obj: Obj, path: Path) -> None:
    """Remove a path and any object it leaves empty (inside ``spec`` and the maps)."""
    parents: list[tuple[Obj, str]] = []
    node: Any = obj
    for key in path[:-1]:
        if not isinstance(node, dict) or not isinstance(node.get(key), dict):
            return
        parents.append((node, key))
        node = node[key]
    node.pop(path[-1], None)
    for parent, key in reversed(parents[1:]):
        if parent[key] == {}:
            del parent[key]


def to_fields_v1(paths: Iterable[Path]) -> dict[str, Any]:
    """FieldsV1: nested ``f:<name>`` objects, ``{}`` at each owned leaf."""
    root: dict[str, Any] = {}
    for path in sorted(paths):
        node = root
        for key in path:
            node = node.setdefault(f"f:{key}", {})
    return root


def from_fields_v1(fields: Any, prefix: Path = ()) -> set[Path]:
    """The leaf paths of a FieldsV1 object; ``.`` and non-``f:`` keys are skipped."""
    if not isinstance(fields, dict):
        return set()
    out: set[Path] = set()
    for key, child in fields.items():
        if not isinstance(key, str) or not key.startswith("f:"):
            continue
        path = (*prefix, key[2:])
        nested = from_fields_v1(child, path)
        out.update(nested or {path})
    return out


def manager_of(field_manager: str | None, user_agent: str | None) -> str:
    """``?fieldManager`` or, like kube-apiserver, the User-Agent up to its first ``/``."""
    if field_manager:
        return field_manager
    return (user_agent or "").split("/", 1)[0].strip() or "unknown"


@dataclass
class Entry:
    manager: str
    operation: str
    paths: set[Path]
    raw: Obj  # the stored entry, kept verbatim while its fields do not change
    parsed: frozenset[Path] = frozenset()  # the fields ``raw`` lists, parsed once

    @property
    def key(self) -> tuple[str, str]:
        return self.manager, self.operation


def parse_entries(managed: Any) -> list[Entry]:
    entries: list[Entry] = []
    if not isinstance(managed, list):
        return entries
    for raw in managed:
        if not isinstance(raw, dict) or raw.get("subresource"):
            continue
        manager, operation = raw.get("manager"), raw.get("operation")
        if isinstance(manager, str) and operation in (APPLY, UPDATE):
            paths = from_fields_v1(raw.get("fieldsV1"))
            entries.append(Entry(manager, operation, paths, raw, frozenset(paths)))
    return entries


def _render(entries: list[Entry], api_version: str, now: str) -> list[Obj]:
    out: list[Obj] = []
    for e in entries:
        if not e.paths:
            continue
        if e.raw and e.parsed == e.paths and e.raw.get("time"):
            out.append(e.raw)
            continue
        out.append(
            {
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": api_version,
                "time": now,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(e.paths),
            }
        )
    return out


def _entry(entries: list[Entry], manager: str, operation: str) -> Entry:
    for e in entries:
        if e.key == (manager, operation):
            return e
    made = Entry(manager, operation, set(), {})
    entries.append(made)
    return made


def record_update(
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any],
    managed: Any,
    manager: str,
    *,
    api_version: str,
    now: str,
) -> list[Obj]:
    """managedFields after a create, replace or patch by ``manager`` (operation Update).

    The manager takes every field whose value it added or changed; other managers lose
    those, and everybody loses fields that are gone. An unchanged object keeps its
    entries verbatim (same times), so a no-op write stays a no-op.
    """
    entries = parse_entries(managed)
    before = field_set(old) if old is not None else set()
    after = field_set(new)
    changed = {p for p in after if p not in before or value_at(old or {}, p) != value_at(new, p)}
    for e in entries:
        e.paths &= after
        e.paths -= changed
    if changed:
        _entry(entries, manager, UPDATE).paths |= changed
    return _render(entries, api_version, now)


def apply_config(
    current: Obj | None,
    config: Mapping[str, Any],
    manager: str,
    *,
    force: bool,
    api_version: str,
    now: str,
) -> tuple[Obj, list[Obj]]:
    """Server-side apply of ``config`` by ``manager`` onto ``current`` (None: create).

    Returns the merged object and its managedFields, or raises ApplyConflicts when a
    field ``config`` sets to a new value belongs to another manager (unless ``force``,
    which moves ownership to ``manager``). Fields this manager applied before and no
    longer applies are removed unless another manager still owns them.
    """
    base: Obj = copy.deepcopy(current) if current is not None else {}
    entries = parse_entries((base.get("metadata") or {}).get("managedFields"))
    mine = _entry(entries, manager, APPLY)
    applied = field_set(config)
    conflicts = [
        FieldConflict(p, e.manager)
        for e in entries
        if e is not mine
        for p in sorted(e.paths & applied)
        if value_at(base, p) != value_at(config, p)
    ]
    if conflicts and not force:
        raise ApplyConflicts(conflicts)
    for c in conflicts:
        for e in entries:
            if e.manager == c.manager and e is not mine:
                e.paths.discard(c.path)
    others = set().union(*(e.paths for e in entries if e is not mine))
    for path in mine.paths - applied - others:
        remove_at(base, path)
    for path in applied:
        set_at(base, path, value_at(config, path)[1])
    mine.paths = applied
    return base, _render(entries, api_version, now)


def conflict_message(conflicts: list[FieldConflict], api_version: str) -> str:
    """kube-apiserver's wording: ``Apply failed with N conflicts: conflicts with "m" ...``."""
    by_manager: dict[str, list[str]] = {}
    for c in conflicts:
        by_manager.setdefault(c.manager, []).append(dotted(c.path))
    noun = "conflict" if len(conflicts) == 1 else "conflicts"
    parts = []
    for mgr, fields in by_manager.items():
        if len(fields) == 1:
            parts.append(f'conflict with "{mgr}" using {api_version}: {fields[0]}')
        else:
            listed = "".join(f"\n- {f}" for f in fields)
            parts.append(f'conflicts with "{mgr}" using {api_version}:{listed}')
    return f"Apply failed with {len(conflicts)} {noun}: " + "\n".join(parts)


def dotted(path: Path) -> str:
    return "".join(f".{p}" for p in path)


#: kubectl's client-side apply record; ``kubectl apply --server-side`` takes over the
#: fields it lists without conflicts (kube-apiserver's upgrade path).
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
KUBECTL_MANAGER = "kubectl"


def client_side_applied(current: Mapping[str, Any]) -> set[Path]:
    """Fields the last client-side apply set whose values are still the live ones."""
    raw = ((current.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
    try:
        record = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        return set()
    if not isinstance(record, dict):
        return set()
    return {p for p in field_set(record) if value_at(record, p) == value_at(current, p)}


def apply_or_upgrade(
    current: Obj,
    config: Mapping[str, Any],
    manager: str,
    *,
    force: bool,
    api_version: str,
    now: str,
) -> tuple[Obj, list[Obj]]:
    """``apply_config``, except that ``kubectl`` applying server-side for the first time
    over its own client-side apply takes the fields that apply recorded, as
    kube-apiserver allows; other conflicts are still reported (only those)."""
    try:
        return apply_config(current, config, manager, force=force, api_version=api_version, now=now)
    except ApplyConflicts as exc:
        if manager != KUBECTL_MANAGER:
            raise
        allowed = client_side_applied(current)
        remaining = [c for c in exc.conflicts if c.path not in allowed]
        if remaining:
            raise ApplyConflicts(remaining) from None
    return apply_config(current, config, manager, force=True, api_version=api_version, now=now)
