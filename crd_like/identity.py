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
