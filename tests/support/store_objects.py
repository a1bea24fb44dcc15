"""Objects and mutations for the store tests (MemoryStore and PostgresStore follow the
same rules, so their suites build the same objects)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Mutation = Callable[[dict[str, Any]], dict[str, Any]]


def ws(name: str, ns: str = "alice", desired: str = "RUNNING", **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "codehub.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name, "namespace": ns, "labels": dict(labels)},
        "spec": {"desired_state": desired, "image_ref": "img"},
    }


def set_spec(key: str, value: Any) -> Mutation:
    """An update's mutation that sets ``spec[key]``."""

    def mutate(obj: dict[str, Any]) -> dict[str, Any]:
        obj["spec"][key] = value
        return obj

    return mutate
