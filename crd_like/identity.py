"""The resource's identity, defined once: group, version, kind and names.

``API_VERSION`` has the Kubernetes meaning (the ``apiVersion`` field, ``group/version``);
``VERSION`` is the bare version. See docs/resource.md.
"""

GROUP = "codehub.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "Workspace"
LIST_KIND = "WorkspaceList"
PLURAL = "workspaces"
SINGULAR = "workspace"
SHORT_NAMES = ("ws",)

#: Stamped by the API server on every change of ``spec.desired_state`` (docs/activity-and-ttl.md):
#: who made it (``api``, ``ttl``, ``wake``, ...) and when.
DESIRED_SOURCE_ANNOTATION = f"{GROUP}/desired-state-source"
DESIRED_CHANGED_AT_ANNOTATION = f"{GROUP}/desired-state-changed-at"
