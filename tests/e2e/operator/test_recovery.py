"""Administrator recovery on the real stack (docs/errors.md#recovery): kubectl annotate and
``codehub recover`` both ask the server, which recovers in the request, and the result
shows at once, then the operator observes the workspace and it converges."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from operator_e2e import USER, CoordinatorProcess, Stack, status

from codehub.vocabulary.timestamps import parse_rfc3339

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MISSING_IMAGE = "codehub/does-not-exist:never"
RECOVER = "codehub.io/recover"
RECOVERED_AT = "codehub.io/recovered-at"
KUBECTL = os.environ.get("CODEHUB_KUBECTL") or shutil.which("kubectl") or "/usr/bin/kubectl"


def kubectl(stack: Stack, user: str, *args: str) -> subprocess.CompletedProcess[str]:
    home = stack.state / f"kube-home-{user}"
    home.mkdir(exist_ok=True)
    env = {**os.environ, "KUBECONFIG": str(stack.server.kubeconfig(user)), "HOME": str(home)}
    return subprocess.run(
        [KUBECTL, "--request-timeout=30s", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def annotations_of(obj: dict[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


async def failed_start(stack: Stack, name: str) -> dict[str, Any]:
    """A workspace in ERROR: STARTING with an image that does not exist, retries spent."""
    await stack.create(name, "RUNNING", image=MISSING_IMAGE)
    obj = await stack.wait_error(name)
    assert status(obj)["error_info"]["reason"] == "RetryExceeded"
    assert status(obj)["previous_status"] == "STANDBY"
    return obj


def assert_recovered_at_once(obj: dict[str, Any], before: dict[str, Any]) -> None:
    """What the server wrote in the request itself, before the operator did anything."""
    st = status(obj)
    assert st.get("error_info") is None
    assert st["error_count"] == 0
    assert st["op_id"] == status(before)["op_id"]
    assert st["observed_status"] == "STANDBY"  # the status before the error
    assert st["display"] == "STANDBY"
    assert RECOVER not in annotations_of(obj)
    assert RECOVERED_AT in annotations_of(obj)


@pytest.mark.skipif(not Path(KUBECTL).exists(), reason=f"kubectl not installed at {KUBECTL}")
async def test_kubectl_annotate_recovers_and_the_workspace_converges(
    stack: Stack, coordinator: CoordinatorProcess
) -> None:
    name = "rec-kubectl"
    before = await failed_start(stack, name)
    async with stack.api() as api:  # fix the cause first
        await api.patch_merge(USER, name, {"spec": {"image_ref": stack.image}})

    denied = kubectl(stack, USER, "annotate", "ws", name, "-n", USER, f"{RECOVER}=1")
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()
    assert status(await stack.get(name))["observed_status"] == "ERROR"  # nothing changed

    done = kubectl(stack, "admin", "annotate", "ws", name, "-n", USER, f"{RECOVER}=2")
    assert done.returncode == 0, done.stderr
    assert_recovered_at_once(await stack.get(name), before)

    obj = await stack.wait_display(name, "RUNNING")
    assert status(obj).get("error_info") is None
    uid = obj["metadata"]["uid"]
    container = stack.container(uid)
    assert container is not None
    assert container.status == "running"


async def test_codehub_recover_shows_the_true_state_once_observed(
    stack: Stack, coordinator: CoordinatorProcess
) -> None:
    name = "rec-cli"
    before = await failed_start(stack, name)
    await stack.set_desired(name, "STANDBY")  # the user gives up on running it

    denied = stack.cli("recover", name, check=False)
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr

    out = stack.cli("recover", name, user="admin").stdout
    assert "recovered" in out
    assert "op_id kept" in out
    recovered = await stack.get(name)
    assert_recovered_at_once(recovered, before)
    at = parse_rfc3339(annotations_of(recovered)[RECOVERED_AT])
    assert at is not None

    # The operator reacts to the recovery: it observes the volume (no container) and
    # confirms STANDBY (observed_at written after the recovery), with nothing left to do.
    def confirmed(o: dict[str, Any]) -> bool:
        seen = parse_rfc3339(status(o).get("observed_at"))
        return seen is not None and seen >= at and status(o).get("display") == "STANDBY"

    obj = await stack.wait_for(name, confirmed, "observed STANDBY after the recovery")
    assert status(obj)["operation"] == "NONE"
    assert stack.container(obj["metadata"]["uid"]) is None
    assert stack.volume_exists(obj["metadata"]["uid"])

    again = stack.cli("recover", name, user="admin").stdout
    assert "no error to recover from" in again
