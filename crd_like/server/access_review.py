"""SelfSubjectAccessReview (``kubectl auth can-i``) and SelfSubjectRulesReview
(``kubectl auth can-i --list``), authorization.k8s.io/v1.

The answer follows the rules the handlers enforce (docs/api.md): a plain user may do
everything to workspaces and events in the namespace named after them and read that
namespace, never write ``/status``, never act cluster-wide; ``codehub:admin`` and
``codehub:operator`` may do everything. Non-resource paths: discovery and health for
everyone, ``/metrics`` for the privileged.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from codehub.crd_like.identity import GROUP

from .auth import Identity
from .bodies import media_type, parse_document, require_body_type
from .context import identity_of, json_response, mark, read_body
from .protobuf import PROTOBUF, decode_access_review
from .status import ApiError, bad_request, invalid

AUTHZ_GROUP = "authorization.k8s.io"
AUTHZ_VERSION = "v1"
AUTHZ_GV = f"{AUTHZ_GROUP}/{AUTHZ_VERSION}"
SSAR = "selfsubjectaccessreviews"
SSAR_KIND = "SelfSubjectAccessReview"

#: (group, resource) -> verbs a plain user has in their own namespace.
_USER_RULES: dict[tuple[str, str], frozenset[str]] = {
    (GROUP, "workspaces"): frozenset(
        {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
    ),
    (GROUP, "workspaces/status"): frozenset({"get"}),
    ("", "events"): frozenset(
        {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}
    ),
    ("", "namespaces"): frozenset({"get"}),
}
_PUBLIC_PATHS = ("/healthz", "/livez", "/readyz", "/version", "/api", "/apis", "/openapi")
SSRR = "selfsubjectrulesreviews"
SSRR_KIND = "SelfSubjectRulesReview"
#: Reviews about oneself are open to every authenticated identity (cluster-scoped).
_REVIEWS = frozenset({SSAR, SSRR})


def _resource_allowed(ident: Identity, attrs: dict[str, Any]) -> tuple[bool, str]:
    group = str(attrs.get("group") or "")
    resource = str(attrs.get("resource") or "")
    sub = str(attrs.get("subresource") or "")
    verb = str(attrs.get("verb") or "")
    namespace = str(attrs.get("namespace") or "")
    full = f"{resource}/{sub}" if sub else resource
    if ident.privileged:
        return True, "codehub:admin and codehub:operator may do everything"
    if group == AUTHZ_GROUP and full in _REVIEWS and verb == "create":
        return True, "every user may review their own access"
    verbs = _USER_RULES.get((group, full))
    if verbs is None:
        return False, f'resource "{full}" in API group "{group}" is not granted to users'
    if resource == "namespaces":
        if verb in ("list", "watch") and not attrs.get("name"):
            return True, "a user may list namespaces and sees their own"
        target = str(attrs.get("name") or namespace)
        if target == ident.user and verb in verbs:
            return True, "a user may read their own namespace"
        return False, "a user may only read their own namespace"
    if namespace != ident.user:
        return False, f'users act only in their own namespace "{ident.user}"'
    if verb not in verbs and verb != "*":
        return False, f'verb "{verb}" on "{full}" is reserved to the operator and administrators'
    if verb == "*" and full != "workspaces" and full != "events":
        return False, f'not every verb on "{full}" is granted to users'
    return True, f'user "{ident.user}" owns namespace "{namespace}"'


def _path_allowed(ident: Identity, attrs: dict[str, Any]) -> tuple[bool, str]:
    path = str(attrs.get("path") or "")
    verb = str(attrs.get("verb") or "").lower()
    if ident.privileged:
        return True, "codehub:admin and codehub:operator may do everything"
    if verb == "get" and any(path == p or path.startswith(p + "/") for p in _PUBLIC_PATHS):
        return True, "discovery and health are readable by every user"
    return False, f'path "{path}" is reserved to the operator and administrators'


def review(ident: Identity, spec: Any) -> dict[str, Any]:
    """The review's ``status``; raises 422 for a spec without exactly one attribute set."""
    if not isinstance(spec, dict):
        raise _invalid("spec", "Required value: spec must be an object")
    res, non = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
    if (res is None) == (non is None):
        raise _invalid(
            "spec.resourceAttributes",
            "Invalid value: exactly one of nonResourceAttributes or resourceAttributes "
            "must be specified",
        )
    attrs = res if res is not None else non
    if not isinstance(attrs, dict):
        raise _invalid("spec", "Invalid value: attributes must be an object")
    allowed, why = (_resource_allowed if res is not None else _path_allowed)(ident, attrs)
    status: dict[str, Any] = {"allowed": allowed, "reason": why}
    if not allowed:
        status["denied"] = True
    return status


def _invalid(field: str, message: str) -> ApiError:
    return invalid(SSAR_KIND, "", AUTHZ_GROUP, SSAR, [(field, message)])


def rules(ident: Identity, namespace: str) -> dict[str, Any]:
    """A SelfSubjectRulesReview's ``status`` (``kubectl auth can-i --list``)."""
    if ident.privileged:
        return {
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": False,
        }
    resource_rules: list[dict[str, Any]] = [
        {"verbs": ["create"], "apiGroups": [AUTHZ_GROUP], "resources": sorted(_REVIEWS)},
        {
            "verbs": ["get"],
            "apiGroups": [""],
            "resources": ["namespaces"],
            "resourceNames": [ident.user],
        },
        {"verbs": ["list", "watch"], "apiGroups": [""], "resources": ["namespaces"]},
    ]
    if namespace == ident.user:
        resource_rules += [
            {"verbs": sorted(verbs), "apiGroups": [group], "resources": [resource]}
            for (group, resource), verbs in _USER_RULES.items()
            if resource != "namespaces"
        ]
    paths = sorted({*_PUBLIC_PATHS, *(f"{p}/*" for p in _PUBLIC_PATHS)})
    return {
        "resourceRules": resource_rules,
        "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": paths}],
        "incomplete": False,
    }


async def _review_body(request: web.Request, kind: str) -> dict[str, Any]:
    raw = await read_body(request)
    if media_type(request) == PROTOBUF:
        body: Any = decode_access_review(raw)
    else:
        body = parse_document(raw, require_body_type(request))
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    if body.get("kind") not in (None, kind) or body.get("apiVersion") not in (None, AUTHZ_GV):
        raise bad_request(f"the body must be a {kind} of {AUTHZ_GV}", "kind")
    return body


def _answer(kind: str, body: dict[str, Any], status: dict[str, Any]) -> web.Response:
    raw_meta = body.get("metadata")
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    return json_response(
        {
            "kind": kind,
            "apiVersion": AUTHZ_GV,
            "metadata": {**meta, "creationTimestamp": None},
            "spec": body.get("spec"),
            "status": status,
        },
        201,
    )


async def create_rules_review(request: web.Request) -> web.StreamResponse:
    mark(request, "create", SSRR)
    ident = identity_of(request)
    body = await _review_body(request, SSRR_KIND)
    spec = body.get("spec")
    namespace = spec.get("namespace") if isinstance(spec, dict) else None
    if not isinstance(namespace, str):
        raise invalid(SSRR_KIND, "", AUTHZ_GROUP, SSRR, [("spec.namespace", "Required value")])
    return _answer(SSRR_KIND, body, rules(ident, namespace))


async def create_review(request: web.Request) -> web.StreamResponse:
    mark(request, "create", SSAR)
    ident = identity_of(request)
    body = await _review_body(request, SSAR_KIND)
    return _answer(SSAR_KIND, body, review(ident, body.get("spec")))


def resource_list() -> dict[str, Any]:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": AUTHZ_GV,
        "resources": [
            {
                "name": SSAR,
                "singularName": "selfsubjectaccessreview",
                "namespaced": False,
                "kind": SSAR_KIND,
                "verbs": ["create"],
            },
            {
                "name": SSRR,
                "singularName": "selfsubjectrulesreview",
                "namespaced": False,
                "kind": SSRR_KIND,
                "verbs": ["create"],
            },
        ],
    }


def group() -> dict[str, Any]:
    version = {"groupVersion": AUTHZ_GV, "version": AUTHZ_VERSION}
    return {"name": AUTHZ_GROUP, "versions": [version], "preferredVersion": version}


async def group_document(request: web.Request) -> web.StreamResponse:
    mark(request, "get", "discovery")
    return json_response({"kind": "APIGroup", "apiVersion": "v1", **group()})


async def resources_document(request: web.Request) -> web.StreamResponse:
    mark(request, "get", "discovery")
    return json_response(resource_list())


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get(f"/apis/{AUTHZ_GROUP}", group_document)
    r.add_get(f"/apis/{AUTHZ_GV}", resources_document)
    r.add_post(f"/apis/{AUTHZ_GV}/{SSAR}", create_review)
    r.add_post(f"/apis/{AUTHZ_GV}/{SSRR}", create_rules_review)
