"""Docker and network errors cross the adapter boundary as the product's own types, with
the right error code (docs/storage.md) and no secret in the message."""

from __future__ import annotations

import docker.errors
import pytest
import requests

from codehub.adapters.config import DockerConfig
from codehub.adapters.docker_client import label_filter, scoped_labels, translate_error
from codehub.adapters.errors import (
    ActionFailedError,
    CodehubError,
    ErrorCode,
    Reason,
    UnreachableError,
)


def _api_error(status: int, explanation: str, cls: type = docker.errors.APIError) -> Exception:
    response = requests.Response()
    response.status_code = status
    response.url = "http+docker://localhost/v1.45/containers/create?name=ws-x"
    return cls("boom", response=response, explanation=explanation)  # type: ignore[no-any-return]


def test_image_not_found_is_image_pull_failed() -> None:
    exc = _api_error(404, "No such image: nope:1", docker.errors.ImageNotFound)
    err = translate_error(exc, action="create container", subject="ws-1")
    assert isinstance(err, ActionFailedError)
    assert err.code is ErrorCode.IMAGE_PULL_FAILED
    assert "nope:1" in err.message


def test_not_found_code_is_the_callers() -> None:
    exc = _api_error(404, "no such volume", docker.errors.NotFound)
    err = translate_error(exc, action="inspect volume", not_found_code=ErrorCode.VOLUME_NOT_FOUND)
    assert err.code is ErrorCode.VOLUME_NOT_FOUND
    assert err.reason is Reason.ACTION_FAILED


def test_api_error_on_create_is_create_failed_even_for_5xx() -> None:
    exc = _api_error(500, "driver failed programming external connectivity")
    err = translate_error(
        exc, action="create container", api_error_code=ErrorCode.CONTAINER_CREATE_FAILED
    )
    assert isinstance(err, ActionFailedError)
    assert err.code is ErrorCode.CONTAINER_CREATE_FAILED
    assert err.context["status"] == 500


def test_5xx_without_action_code_is_unreachable() -> None:
    err = translate_error(_api_error(503, "daemon busy"), action="list containers")
    assert isinstance(err, UnreachableError)
    assert err.retryable


def test_4xx_without_action_code_is_action_failed() -> None:
    err = translate_error(_api_error(409, "conflict"), action="remove container")
    assert isinstance(err, ActionFailedError)
    assert err.code is ErrorCode.UNKNOWN


@pytest.mark.parametrize(
    "exc",
    [
        requests.exceptions.ConnectionError("http://user:hunter2@host/ refused"),
        requests.exceptions.ReadTimeout("read timed out"),
        docker.errors.DockerException("Error while fetching server API version: hunter2"),
        ConnectionRefusedError(111, "refused"),
    ],
)
def test_connection_problems_are_unreachable_without_echoing(exc: Exception) -> None:
    err = translate_error(exc, action="list containers")
    assert isinstance(err, UnreachableError)
    assert "hunter2" not in str(err)
    assert "hunter2" not in repr(err.context)


def test_secrets_are_redacted_from_engine_explanations() -> None:
    exc = _api_error(400, "invalid environment variable: S3_SECRET=s3cr3t-value")
    err = translate_error(
        exc, action="create container", secrets=["s3cr3t-value"], api_error_code=None
    )
    assert "s3cr3t-value" not in str(err)
    assert "***" in str(err)


def test_long_explanations_are_truncated() -> None:
    err = translate_error(_api_error(400, "x" * 5000), action="create container")
    assert len(err.message) < 500


def test_codehub_errors_pass_through() -> None:
    original = ActionFailedError("already ours", code=ErrorCode.DISK_FULL)
    assert translate_error(original, action="x") is original


def test_unexpected_exception_is_action_failed_without_text() -> None:
    err = translate_error(RuntimeError("token=abc"), action="start")
    assert isinstance(err, CodehubError)
    assert "abc" not in str(err)


def test_label_filter_includes_scope_and_extra() -> None:
    config = DockerConfig(scope_labels={"codehub.io/test-run": "r1"})
    assert label_filter(config, {"codehub.io/role": "workspace"}) == [
        "codehub.io/role=workspace",
        "codehub.io/test-run=r1",
    ]
    assert label_filter(DockerConfig()) == []


def test_scope_labels_win_over_parts() -> None:
    config = DockerConfig(scope_labels={"codehub.io/test-run": "r1"})
    labels = scoped_labels(config, {"a": "1", "codehub.io/test-run": "other"}, {"b": "2"})
    assert labels == {"a": "1", "b": "2", "codehub.io/test-run": "r1"}
