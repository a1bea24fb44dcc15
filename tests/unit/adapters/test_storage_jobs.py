"""A job's structured log becomes the right typed error (no Docker needed)."""

from __future__ import annotations

from codehub.adapters.archive_format import parse_job_log
from codehub.adapters.errors import ActionFailedError, ErrorCode, OperationTimeoutError
from codehub.adapters.storage_jobs import JobResult, job_error


def result(text: str, exit_code: int = 1, *, timed_out: bool = False) -> JobResult:
    return JobResult(exit_code, text, parse_job_log(text), timed_out)


def test_failure_line_gives_code_step_and_log_tail() -> None:
    r = result(
        "TAR_STDERR: tar: short read\nRESULT=FAIL CODEHUB_ERROR=TAR_EXTRACT_FAILED STEP=extract\n"
    )
    err = job_error("u1", "restore", r, 1800)
    assert isinstance(err, ActionFailedError)
    assert err.code is ErrorCode.TAR_EXTRACT_FAILED
    assert "at extract" in str(err)
    assert "short read" in str(err)
    assert err.context["step"] == "extract"
    assert not r.ok


def test_unknown_code_and_kill_without_result_line() -> None:
    assert job_error("u1", "archive", result("RESULT=FAIL CODEHUB_ERROR=NOPE"), 1).code is (
        ErrorCode.UNKNOWN
    )
    killed = job_error("u1", "archive", result("", 137), 1)
    assert "(killed)" in str(killed)


def test_timeout_is_an_operation_timeout() -> None:
    err = job_error("u1", "restore", result("", 137, timed_out=True), 30)
    assert isinstance(err, OperationTimeoutError)
    assert "30s" in str(err)


def test_ok_needs_exit_zero_and_the_result_line() -> None:
    assert result("RESULT=OK", 0).ok
    assert not result("", 0).ok
    assert not result("RESULT=OK", 0, timed_out=True).ok
