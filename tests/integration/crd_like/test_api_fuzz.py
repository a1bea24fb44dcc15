"""Schemathesis against the served OpenAPI (/openapi/v3/apis/codehub.io/v1alpha1).

Every operation is called with generated (valid and invalid) parameters and bodies, as a
user and as the operator; then a stateful run follows the links schemathesis infers
(create -> get/patch/put/delete by the returned name). Checks: no 5xx, status codes the
document declares, and every response body conforms to its declared schema. The server is
the real application over a MemoryStore, served on 127.0.0.1 in a thread of its own.

Bounded for CI: ``CODEHUB_FUZZ_EXAMPLES`` examples per operation (default 20) and as many
stateful steps; raise it locally for a deeper run.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from support.api import IDENTITIES, start_api

EXAMPLES = int(os.environ.get("CODEHUB_FUZZ_EXAMPLES", "20"))
OPENAPI = "/openapi/v3/apis/codehub.io/v1alpha1"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


class ServedApi:
    """The in-process API in a background thread, so synchronous callers can reach it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="fuzz-api", daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> ServedApi:
        self._thread.start()
        self._ready.wait(60)
        if self.error is not None or not self.url:
            raise RuntimeError(f"API did not start: {self.error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def _main(self) -> None:
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        try:
            api = await start_api(self.folder, None)
        except BaseException as exc:
            self.error = exc
            self._ready.set()
            return
        self.url = api.url
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await api.close()


def auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {IDENTITIES[who].token}"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApi]:
    with ServedApi(tmp_path_factory.mktemp("fuzz")) as api:
        yield api


@pytest.fixture(scope="module")
def api_schema(served: ServedApi) -> Any:
    document = requests.get(served.url + OPENAPI, headers=auth("alice"), timeout=10).json()
    schema = schemathesis.openapi.from_dict(document)
    schema.config.update(base_url=served.url)
    return schema


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: CI time; the seed reproduces
)
WATCHING = {"true", "1", "yes", "t", "y", "on"}


def operations(schema: Any) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


def watch(case: Any, who: str, base_url: str) -> None:
    """A watch answers a stream of JSON events, not the list schema the document declares
    for the path, so only "no 5xx" is checked by schemathesis and the lines here."""
    case.query["timeoutSeconds"] = 1  # a watch streams until its timeout
    response = case.call_and_validate(
        base_url=base_url, headers=auth(who), checks=[not_a_server_error], timeout=30
    )
    if response.status_code == 200:
        for line in response.text.splitlines():
            event = json.loads(line)
            assert event["type"] in {"ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"}
            assert isinstance(event["object"], dict)


def fuzz(operation: Any, mode: GenerationMode, who: str, base_url: str) -> None:
    """One operation, ``EXAMPLES`` generated cases; schemathesis's pytest plugin (lazy
    fixtures) does not run under this pytest, so Hypothesis drives the strategy itself."""

    @FUZZ
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        if isinstance(case.query, dict) and str(case.query.get("watch", "")).lower() in WATCHING:
            watch(case, who, base_url)
            return
        case.call_and_validate(base_url=base_url, headers=auth(who), checks=CHECKS, timeout=30)

    run()


@pytest.mark.parametrize("mode", list(GenerationMode), ids=lambda m: m.value)
@pytest.mark.parametrize("who", ["alice", "operator"])
def test_every_operation(
    api_schema: Any, served: ServedApi, who: str, mode: GenerationMode
) -> None:
    ops = operations(api_schema)
    assert len(ops) >= 10
    for operation in ops:
        fuzz(operation, mode, who, served.url)


# --- stateful: create, then act on what was created ---------------------------------

_NAMED = "/apis/codehub.io/v1alpha1/namespaces/{namespace}/workspaces/{name}"
_FOLLOW = {
    "get": (_NAMED, "get"),
    "patch": (_NAMED, "patch"),
    "replace": (_NAMED, "put"),
    "delete": (_NAMED, "delete"),
    "status": (f"{_NAMED}/status", "get"),
    "patchStatus": (f"{_NAMED}/status", "patch"),
}


#: Creates that mostly succeed, so the links have something to follow (the served schema
#: is looser than the server's validation: most generated bodies are answered 422).
VALID_WORKSPACE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"enum": ["codehub.io/v1alpha1"]},
        "kind": {"enum": ["Workspace"]},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {"name": {"type": "string", "pattern": "^[a-z][a-z0-9]{0,12}$"}},
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "desired_state": {"enum": ["PENDING", "STANDBY", "RUNNING"]},
                "display_name": {"type": "string", "maxLength": 40},
            },
        },
    },
}


def with_links(document: dict[str, Any]) -> dict[str, Any]:
    """The served document has no OpenAPI links; add the obvious ones (a created or
    replaced workspace is addressed by its namespace and ``metadata.name``)."""
    doc = json.loads(json.dumps(document))
    paths = doc["paths"]
    links = {
        name: {
            "operationId": paths[path][method]["operationId"],
            "parameters": {
                "namespace": "$response.body#/metadata/namespace",
                "name": "$response.body#/metadata/name",
            },
        }
        for name, (path, method) in _FOLLOW.items()
    }
    sources = [
        paths["/apis/codehub.io/v1alpha1/namespaces/{namespace}/workspaces"]["post"],
        paths[_NAMED]["put"],
        paths[_NAMED]["patch"],
    ]
    create = sources[0]
    create["requestBody"]["content"] = {"application/json": {"schema": VALID_WORKSPACE}}
    create["parameters"] = [
        {
            "name": "namespace",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "enum": ["alice", "fuzz"]},
        },
    ]
    for operation in sources:
        for code in ("200", "201"):
            if code in operation["responses"]:
                operation["responses"][code]["links"] = links
    return doc


def test_stateful_links(served: ServedApi) -> None:
    document = requests.get(served.url + OPENAPI, headers=auth("alice"), timeout=10).json()
    schema = schemathesis.openapi.from_dict(with_links(document))
    base_url = served.url
    followed: list[tuple[str, int]] = []

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"base_url": base_url, "headers": auth("operator"), "timeout": 30}

        def teardown(self) -> None:
            """Every scenario starts from an empty store, so Hypothesis's replays see
            the same answers."""
            for ns in ("alice", "fuzz"):
                requests.delete(
                    f"{base_url}/apis/codehub.io/v1alpha1/namespaces/{ns}/workspaces",
                    headers=auth("operator"),
                    timeout=30,
                )

        def validate_response(self, response: Any, case: Any, **kwargs: Any) -> None:
            followed.append((case.operation.label, response.status_code))
            case.validate_response(response, checks=CHECKS)

    Workflow.run(
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=8,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
        )
    )
    # The links were really followed: some call on a created workspace succeeded.
    assert any("{name}" in label and code == 200 for label, code in followed), followed[:20]
    print(
        f"stateful calls: {len(followed)}, on created objects: "
        f"{sum(1 for label, _ in followed if '{name}' in label)}"
    )
