"""The Workspace resource (docs/resource.md) as pydantic v2 models: the one source of truth.

The CRD (crd.py) is generated from these models, and the API server validates request
bodies with ``validate_workspace_body`` so a bad manifest is refused with a message that
names the field (``spec.desired_state``), like a real API server does. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from codehub.crd_like.identity import API_VERSION, KIND
from codehub.vocabulary.errors import Reason

DEFAULT_STANDBY_TTL = 300
DEFAULT_ARCHIVE_TTL = 86400

NAME_MAX_LENGTH = 63
IMAGE_REF_MAX_LENGTH = 512
DISPLAY_NAME_MAX_LENGTH = 256
DESCRIPTION_MAX_LENGTH = 4096
MEMO_MAX_LENGTH = 4096
OP_ID_MAX_LENGTH = 128
ARCHIVE_KEY_MAX_LENGTH = 1024
ENDPOINT_MAX_LENGTH = 1024
ERROR_MESSAGE_MAX_LENGTH = 4096

DNS1123_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
_DNS1123_LABEL_RE = re.compile(DNS1123_LABEL_PATTERN)
DNS1123_SUBDOMAIN_MAX_LENGTH = 253
_DNS1123_SUBDOMAIN_RE = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
QUALIFIED_NAME_PATTERN = r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$"
_QUALIFIED_NAME_RE = re.compile(QUALIFIED_NAME_PATTERN)
ANNOTATIONS_MAX_BYTES = 256 * 1024

#: Kubernetes resource.Quantity grammar, without a sign: a limit is never negative.
QUANTITY_PATTERN = (
    r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)


class DesiredState(StrEnum):
    PENDING = "PENDING"
    STANDBY = "STANDBY"
    RUNNING = "RUNNING"

    @property
    def level(self) -> int:
        return _LEVELS[self.value]


_LEVELS = {"PENDING": 0, "STANDBY": 10, "RUNNING": 20}


class ObservedStatus(StrEnum):
    PENDING = "PENDING"
    STANDBY = "STANDBY"
    RUNNING = "RUNNING"
    ERROR = "ERROR"
    DELETED = "DELETED"

    @property
    def level(self) -> int | None:
        """ERROR and DELETED have no level (docs/state-machine.md)."""
        return _LEVELS.get(self.value)


class Display(StrEnum):
    PENDING = "PENDING"
    ARCHIVED = "ARCHIVED"
    STANDBY = "STANDBY"
    RUNNING = "RUNNING"
    ERROR = "ERROR"
    DELETED = "DELETED"


class Operation(StrEnum):
    NONE = "NONE"
    PROVISIONING = "PROVISIONING"
    RESTORING = "RESTORING"
    STARTING = "STARTING"
    STOPPING = "STOPPING"
    ARCHIVING = "ARCHIVING"
    DELETING = "DELETING"


class ActivitySource(StrEnum):
    """What last counted as use of a workspace (docs/activity-and-ttl.md)."""

    HTTP = "http"
    WEBSOCKET = "websocket"
    WAKE = "wake"
    API = "api"


class IdleAction(StrEnum):
    """What the TTL Manager will do to an idle workspace, shown with its time."""

    STANDBY = "standby"
    ARCHIVE = "archive"


def derive_display(
    observed_status: ObservedStatus | str | None, archive_key: str | None
) -> Display:
    """docs/state-machine.md: ARCHIVED is PENDING with an archive; otherwise the observed status."""
    observed = ObservedStatus(observed_status or ObservedStatus.PENDING)
    if observed is ObservedStatus.PENDING and archive_key:
        return Display.ARCHIVED
    return Display(observed.value)


def validate_name(name: object) -> str | None:
    """The error message for an invalid Workspace name, None when it is valid."""
    if not isinstance(name, str) or not name:
        return "a name is required"
    if len(name) > NAME_MAX_LENGTH:
        return f"must be no more than {NAME_MAX_LENGTH} characters"
    if not _DNS1123_LABEL_RE.match(name):
        return (
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters "
            "or '-', and must start and end with an alphanumeric character "
            f"(regex used for validation is '{DNS1123_LABEL_PATTERN[1:-1]}')"
        )
    return None


Quantity = Annotated[str, Field(strict=True, pattern=QUANTITY_PATTERN, max_length=64)]
Ttl = Annotated[StrictInt, Field(ge=0)]


class Resources(BaseModel):
    """Optional container limits, in Kubernetes quantity notation."""

    model_config = ConfigDict(extra="forbid")

    cpu: Quantity | None = Field(default=None, description='CPU limit, e.g. "2" or "500m".')
    memory: Quantity | None = Field(default=None, description='Memory limit, e.g. "4Gi".')


class WorkspaceSpec(BaseModel):
    """What the user wants. Unknown fields are refused so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", use_enum_values=False)

    desired_state: DesiredState = Field(
        default=DesiredState.RUNNING,
        description="The level the controllers converge to: PENDING < STANDBY < RUNNING.",
    )
    image_ref: (
        Annotated[str, Field(strict=True, min_length=1, max_length=IMAGE_REF_MAX_LENGTH)] | None
    ) = Field(default=None, description="Container image; the server supplies a default.")
    display_name: Annotated[str, Field(strict=True, max_length=DISPLAY_NAME_MAX_LENGTH)] | None = (
        None
    )
    description: Annotated[str, Field(strict=True, max_length=DESCRIPTION_MAX_LENGTH)] | None = None
    memo: Annotated[str, Field(strict=True, max_length=MEMO_MAX_LENGTH)] | None = None
    standby_ttl_seconds: Ttl = Field(
        default=DEFAULT_STANDBY_TTL,
        description="Idle seconds with no connection before RUNNING -> STANDBY; 0 = never.",
    )
    archive_ttl_seconds: Ttl = Field(
        default=DEFAULT_ARCHIVE_TTL,
        description="Seconds since last access before STANDBY -> ARCHIVED; 0 = never.",
    )
    resources: Resources | None = None


class ErrorInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason = Field(description="docs/errors.md reason: Unreachable, ActionFailed, ...")
    message: Annotated[str, Field(strict=True, max_length=ERROR_MESSAGE_MAX_LENGTH)] = ""
    is_terminal: StrictBool = False
    operation: Operation | None = None
    error_count: Annotated[StrictInt, Field(ge=0)] = 0
    context: dict[str, Any] = Field(
        default_factory=dict, description="Free-form details (ids, codes); never credentials."
    )
    occurred_at: datetime | None = None


class OperationProgress(BaseModel):
    """Progress of a running archive or restore, removed when the operation ends."""

    # written by the operator at most every few seconds (docs/operations.md#progress)

    model_config = ConfigDict(extra="forbid")

    operation: Operation
    bytes_done: Annotated[StrictInt, Field(ge=0)]
    bytes_total: Annotated[StrictInt, Field(ge=0)] | None = Field(
        default=None, description="Expected bytes; absent while unknown."
    )
    bytes_per_second: Annotated[float, Field(ge=0)] | None = Field(
        default=None, description="Average rate since the archive or restore began."
    )
    updated_at: datetime


class WorkspaceStatus(BaseModel):
    """What the controllers observe and do. Extra keys are kept: kopf stores its own
    bookkeeping under ``status`` (handler results, progress), as on a real cluster."""

    model_config = ConfigDict(extra="allow")

    observed_status: ObservedStatus | None = None
    display: Display | None = None
    observed_at: datetime | None = None
    operation: Operation | None = None
    op_id: Annotated[str, Field(strict=True, max_length=OP_ID_MAX_LENGTH)] | None = None
    op_started_at: datetime | None = None
    archive_key: Annotated[str, Field(strict=True, max_length=ARCHIVE_KEY_MAX_LENGTH)] | None = None
    error_count: Annotated[StrictInt, Field(ge=0)] | None = None
    error_info: ErrorInfo | None = None
    previous_status: ObservedStatus | None = None
    last_access_at: datetime | None = None
    #: Where the workspace's app answers (a URL the proxy forwards to), as last observed
    #: while RUNNING; absent otherwise. The proxy learns the upstream from here and never
    #: asks an adapter (docs/proxy.md).
    endpoint: Annotated[str, Field(strict=True, max_length=ENDPOINT_MAX_LENGTH)] | None = None
    #: Why the workspace is kept alive (docs/activity-and-ttl.md): what touched it last,
    #: how many connections are open now, and what the TTL will do when.
    last_activity_source: ActivitySource | None = None
    open_connections: Annotated[StrictInt, Field(ge=0)] | None = None
    idle_action: IdleAction | None = None
    idle_action_at: datetime | None = None
    #: Bytes done of a running archive or restore; absent otherwise.
    progress: OperationProgress | None = None


class ObjectMeta(BaseModel):
    """The subset of Kubernetes ObjectMeta the product reads; other keys are kept."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str
    namespace: str | None = None
    uid: str | None = None
    resource_version: str | None = Field(default=None, alias="resourceVersion")
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    creation_timestamp: str | None = Field(default=None, alias="creationTimestamp")
    deletion_timestamp: str | None = Field(default=None, alias="deletionTimestamp")
    finalizers: list[str] = Field(default_factory=list)


class Workspace(BaseModel):
    """A whole stored Workspace object, for typed reading (operator, CLI)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    api_version: str = Field(default=API_VERSION, alias="apiVersion")
    kind: str = KIND
    metadata: ObjectMeta
    spec: WorkspaceSpec = Field(default_factory=WorkspaceSpec)
    status: WorkspaceStatus = Field(default_factory=WorkspaceStatus)

    @property
    def display(self) -> Display:
        return derive_display(self.status.observed_status, self.status.archive_key)


@dataclass(frozen=True)
class SpecDefaults:
    """Server-configured defaults (docs/settings.md) filled into a spec where a field is absent."""

    image_ref: str
    standby_ttl_seconds: int = DEFAULT_STANDBY_TTL
    archive_ttl_seconds: int = DEFAULT_ARCHIVE_TTL
    desired_state: DesiredState = DesiredState.RUNNING


def apply_spec_defaults(spec: Any, defaults: SpecDefaults) -> Any:
    """A copy of ``spec`` with absent (or null) defaulted fields filled in.

    Anything that is not a dict is returned unchanged so validation reports it.
    """
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        return spec
    out = dict(spec)
    for key, value in (
        ("desired_state", defaults.desired_state.value),
        ("image_ref", defaults.image_ref),
        ("standby_ttl_seconds", defaults.standby_ttl_seconds),
        ("archive_ttl_seconds", defaults.archive_ttl_seconds),
    ):
        if out.get(key) is None:
            out[key] = value
    return out


@dataclass(frozen=True)
class FieldError:
    """One reason a body is invalid; the API server turns these into Status causes."""

    field_path: str
    message: str


def _loc_path(prefix: str, loc: tuple[int | str, ...]) -> str:
    parts = [prefix]
    for item in loc:
        if isinstance(item, int):
            parts[-1] = f"{parts[-1]}[{item}]"
        else:
            parts.append(item)
    return ".".join(parts)


def _message(err: Any) -> str:
    kind = err["type"]
    inp = err.get("input")
    if kind == "extra_forbidden":
        return f'unknown field "{_short(err["loc"][-1])}"'
    if kind == "enum":
        expected = str(err.get("ctx", {}).get("expected", ""))
        expected = expected.replace("'", '"').replace(" or ", ", ")
        return f'Unsupported value: "{_short(inp)}": supported values: {expected}'
    if kind == "string_pattern_mismatch":
        pattern = err.get("ctx", {}).get("pattern", "")
        if pattern == QUANTITY_PATTERN:
            return (
                f'Invalid value: "{_short(inp)}": must be a Kubernetes quantity '
                'such as "2", "500m" or "4Gi"'
            )
        return f'Invalid value: "{_short(inp)}": must match the regex {pattern}'
    if kind == "missing":
        return "Required value"
    msg = str(err["msg"])
    if inp is None or kind == "model_type":
        return msg
    return f"Invalid value: {_short(repr(inp))}: {msg}"


def _model_errors(prefix: str, model: type[BaseModel], value: Any) -> list[FieldError]:
    if not isinstance(value, dict):
        return [FieldError(prefix, f"must be an object, not {type(value).__name__}")]
    try:
        model.model_validate(value)
    except ValidationError as exc:
        return [FieldError(_loc_path(prefix, tuple(e["loc"])), _message(e)) for e in exc.errors()]
    return []


def _string_map_errors(path: str, value: Any) -> list[FieldError]:
    if value is None:
        return []
    if not isinstance(value, dict):
        return [FieldError(path, "must be an object of string keys and values")]
    return [
        FieldError(f"{path}.{_short(k)}", "keys and values must be strings")
        for k, v in value.items()
        if not isinstance(k, str) or not isinstance(v, str)
    ]


def qualified_name_error(key: str) -> str | None:
    """Kubernetes' IsQualifiedName: ``[prefix/]name``, the prefix a DNS subdomain of at
    most 253 characters, the name at most 63 of ``[A-Za-z0-9_.-]`` starting and ending
    alphanumeric. None when valid."""
    prefix, slash, name = key.rpartition("/")
    if slash:
        if not prefix or len(prefix) > DNS1123_SUBDOMAIN_MAX_LENGTH:
            return (
                f"Invalid value: {_short(key)!r}: prefix part must be a DNS-1123 subdomain "
                f"of at most {DNS1123_SUBDOMAIN_MAX_LENGTH} characters"
            )
        if not _DNS1123_SUBDOMAIN_RE.match(prefix):
            return (
                f"Invalid value: {_short(key)!r}: prefix part a lowercase RFC 1123 subdomain "
                "must consist of lower case alphanumeric characters, '-' or '.', and must "
                "start and end with an alphanumeric character"
            )
    if not name or len(name) > NAME_MAX_LENGTH or not _QUALIFIED_NAME_RE.match(name):
        return (
            f"Invalid value: {_short(key)!r}: name part must consist of alphanumeric "
            "characters, '-', '_' or '.', and must start and end with an alphanumeric "
            f"character, at most {NAME_MAX_LENGTH} characters (regex used for validation "
            f"is '{QUALIFIED_NAME_PATTERN[1:-1]}')"
        )
    return None


def label_value_error(value: str) -> str | None:
    if value == "":
        return None
    if len(value) > NAME_MAX_LENGTH or not _QUALIFIED_NAME_RE.match(value):
        return (
            f"Invalid value: {_short(value)!r}: a valid label must be an empty string or "
            "consist of alphanumeric characters, '-', '_' or '.', and must start and end "
            f"with an alphanumeric character, at most {NAME_MAX_LENGTH} characters"
        )
    return None


def metadata_map_errors(meta: dict[str, Any]) -> list[FieldError]:
    """Labels and annotations validated as Kubernetes does: qualified-name keys, label
    values of at most 63 characters, annotations of at most 256 KiB in total."""
    errors = _string_map_errors("metadata.labels", meta.get("labels"))
    errors += _string_map_errors("metadata.annotations", meta.get("annotations"))
    if errors:
        return errors
    for key, value in (meta.get("labels") or {}).items():
        problem = qualified_name_error(key)
        if problem is None:
            problem = label_value_error(value)
        if problem:
            errors.append(FieldError("metadata.labels", problem))
    annotations = meta.get("annotations") or {}
    total = 0
    for key, value in annotations.items():
        total += len(key.encode()) + len(value.encode())
        problem = qualified_name_error(key)
        if problem:
            errors.append(FieldError("metadata.annotations", problem))
    if total > ANNOTATIONS_MAX_BYTES:
        errors.append(
            FieldError(
                "metadata.annotations",
                f"Too long: must have at most {ANNOTATIONS_MAX_BYTES} bytes",
            )
        )
    return errors


def _short(value: object, limit: int = 64) -> str:
    """A prefix of a value for an error message: refusals never echo a huge input."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def validate_workspace_body(obj: Any, *, check_status: bool = True) -> list[FieldError]:
    """Everything wrong with a Workspace body, each error naming its field path.

    Run it after ``apply_spec_defaults`` so server-defaulted fields are present. The
    status is validated only when ``check_status`` (status writes, or a create that
    carries one); server-set metadata (uid, resourceVersion, ...) is the server's
    concern, not checked here.
    """
    if not isinstance(obj, dict):
        return [FieldError("", "the body must be a JSON object")]
    errors: list[FieldError] = []
    api_version = obj.get("apiVersion")
    if api_version is not None and api_version != API_VERSION:
        errors.append(
            FieldError(
                "apiVersion",
                f'Unsupported value: "{_short(api_version)}": supported values: "{API_VERSION}"',
            )
        )
    kind = obj.get("kind")
    if kind is not None and kind != KIND:
        errors.append(
            FieldError("kind", f'Unsupported value: "{_short(kind)}": supported values: "{KIND}"')
        )
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        errors.append(FieldError("metadata", "Required value: metadata must be an object"))
    else:
        name_error = validate_name(meta.get("name"))
        if name_error:
            errors.append(FieldError("metadata.name", name_error))
        ns = meta.get("namespace")
        if ns is not None and (not isinstance(ns, str) or validate_name(ns)):
            errors.append(FieldError("metadata.namespace", "must be a DNS-1123 label"))
        errors += metadata_map_errors(meta)
        finalizers = meta.get("finalizers")
        if finalizers is not None and (
            not isinstance(finalizers, list) or not all(isinstance(f, str) for f in finalizers)
        ):
            errors.append(FieldError("metadata.finalizers", "must be a list of strings"))
    spec = obj.get("spec", {})
    errors += _model_errors("spec", WorkspaceSpec, {} if spec is None else spec)
    status = obj.get("status")
    if check_status and status is not None:
        errors += _model_errors("status", WorkspaceStatus, status)
    return errors
