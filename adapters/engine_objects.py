"""Everything on the engine that carries codehub's labels, for the orphan sweeper.

The sweeper (docs/coordinator.md) lists workspace containers, storage job containers and
home volumes by label, compares their uids with the workspaces that exist, and removes
what stayed orphaned long enough. Three rules keep it from ever touching anything else:

* the listing filters on the installation's scope labels AND ``codehub.io/workspace-id``,
  and keeps only objects whose ``codehub.io/role`` is one codehub sets;
* an object that carries a ``codehub.io/`` label codehub does not set itself and that is
  not one of this installation's scope labels (for example another test run's
  ``codehub.io/test-run``) belongs to another stack and is never listed;
* a removal inspects the object again and removes it by id only if its labels still name
  the same uid and role.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors

from codehub.adapters import naming
from codehub.adapters.config import DockerConfig
from codehub.adapters.docker_client import DockerEngine

KIND_CONTAINER = "container"
KIND_JOB = "job"
KIND_VOLUME = "volume"
KINDS = (KIND_CONTAINER, KIND_JOB, KIND_VOLUME)

#: Label keys codehub itself sets on what it creates (docs/naming.md).
OWN_LABELS = frozenset(
    {
        naming.LABEL_WORKSPACE_ID,
        naming.LABEL_NAMESPACE,
        naming.LABEL_NAME,
        naming.LABEL_ROLE,
        "codehub.io/job",
        # Set on the local images by scripts/build-test-images; containers inherit it.
        "codehub.io/input-hash",
    }
)
_CONTAINER_ROLES = {"workspace": KIND_CONTAINER, "job": KIND_JOB}
_VOLUME_ROLE = "workspace"


@dataclass(frozen=True)
class LabelledObject:
    """One engine object of one workspace: ``ref`` is the container id or volume name."""

    kind: str
    uid: str
    ref: str
    name: str = ""


class LabelledObjects(ABC):
    """Listing and removal of codehub-labelled engine objects (see the module docstring)."""

    @abstractmethod
    async def list_labelled(self) -> list[LabelledObject]:
        """Every labelled container, job container and volume, in three engine calls."""

    @abstractmethod
    async def remove_labelled(self, obj: LabelledObject) -> bool:
        """Remove ``obj`` if its labels still match; True when it is gone, False when it
        stays (in use, or relabelled). A missing object counts as gone."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release clients; the default has nothing to release."""


def is_ours(labels: Mapping[str, str], scope: Mapping[str, str]) -> bool:
    """Carries every scope label and no foreign ``codehub.io/`` label (module docstring)."""
    if any(labels.get(key) != value for key, value in scope.items()):
        return False
    for key in labels:
        if key.startswith("codehub.io/") and key not in OWN_LABELS and key not in scope:
            return False
    return bool(labels.get(naming.LABEL_WORKSPACE_ID))


def _filters(config: DockerConfig) -> list[str]:
    scope = [f"{key}={value}" for key, value in sorted(config.scope_labels.items())]
    return [*scope, naming.LABEL_WORKSPACE_ID]


def _container_object(entry: Mapping[str, Any], scope: Mapping[str, str]) -> LabelledObject | None:
    labels = entry.get("Labels") or {}
    kind = _CONTAINER_ROLES.get(labels.get(naming.LABEL_ROLE, ""))
    if kind is None or not is_ours(labels, scope):
        return None
    names = entry.get("Names") or [""]
    return LabelledObject(
        kind, labels[naming.LABEL_WORKSPACE_ID], str(entry["Id"]), str(names[0]).lstrip("/")
    )


def _volume_object(entry: Mapping[str, Any], scope: Mapping[str, str]) -> LabelledObject | None:
    labels = entry.get("Labels") or {}
    if labels.get(naming.LABEL_ROLE) != _VOLUME_ROLE or not is_ours(labels, scope):
        return None
    uid = labels[naming.LABEL_WORKSPACE_ID]
    name = str(entry.get("Name") or "")
    if name != naming.volume_name(uid):
        return None
    return LabelledObject(KIND_VOLUME, uid, name, name)


class DockerLabelledObjects(LabelledObjects):
    """The Docker implementation; see the module docstring for its rules."""

    def __init__(self, config: DockerConfig, engine: DockerEngine | None = None) -> None:
        self.config = config
        self.engine = engine or DockerEngine(config)
        self._owns_engine = engine is None

    async def list_labelled(self) -> list[LabelledObject]:
        filters = {"label": _filters(self.config)}
        scope = self.config.scope_labels

        def listing(client: docker.DockerClient) -> list[LabelledObject]:
            found: list[LabelledObject] = []
            for entry in client.api.containers(all=True, filters=filters):
                obj = _container_object(entry, scope)
                if obj is not None:
                    found.append(obj)
            for entry in client.api.volumes(filters=filters).get("Volumes") or []:
                obj = _volume_object(entry, scope)
                if obj is not None:
                    found.append(obj)
            return found

        return await self.engine.run(listing, action="list labelled objects")

    async def remove_labelled(self, obj: LabelledObject) -> bool:
        scope = self.config.scope_labels

        def remove(client: docker.DockerClient) -> bool:
            try:
                if obj.kind == KIND_VOLUME:
                    current = _volume_object(client.api.inspect_volume(obj.ref), scope)
                    if current != obj:
                        return False
                    client.api.remove_volume(obj.ref)
                    return True
                attrs = client.api.inspect_container(obj.ref)
                entry = {
                    "Id": attrs["Id"],
                    "Labels": (attrs.get("Config") or {}).get("Labels") or {},
                    "Names": [attrs.get("Name", "")],
                }
                current = _container_object(entry, scope)
                if current is None or (current.kind, current.uid) != (obj.kind, obj.uid):
                    return False
                client.api.remove_container(obj.ref, force=True, v=False)
                return True
            except docker.errors.NotFound:
                return True
            except docker.errors.APIError as exc:
                if exc.status_code == 409:  # a volume still in use, a removal in progress
                    return False
                raise

        return await self.engine.run(remove, action=f"remove orphan {obj.kind}", subject=obj.name)

    async def close(self) -> None:
        if self._owns_engine:
            await self.engine.close()
