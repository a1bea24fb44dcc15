"""Stock kubectl against the real codehub API server (docs/api.md).

``/usr/bin/kubectl`` on this machine is Google Cloud SDK's "dispatcher" build
(``v1.32.4-dispatcher``): it reads the server's ``/version`` and runs the matching
``/usr/lib/google-cloud-sdk/bin/kubectl.1.XX``, offline. ``CODEHUB_KUBECTL`` selects another
binary. Every call uses the default flags (client-side validation on), a kubeconfig written
by ``render_kubeconfig`` with the server's CA embedded, and a throwaway HOME for kubectl's
discovery cache.
"""

from __future__ import annotations

import os
import queue
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubectl_kit import Kubectl, client_of, requires_kubectl, unique_name

from codehub.crd_like.client.api import ApiError

WAIT = 30.0  # a liveness bound for subprocess output, not a performance assertion

pytestmark = requires_kubectl


IMAGE = "example.org/ide:wide-1"


def _manifest(name: str, desired: str = "PENDING", **spec: Any) -> str:
    body = {
        "apiVersion": "codehub.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name},
        "spec": {"desired_state": desired, **spec},
    }
    return yaml.safe_dump(body)


@pytest.fixture(scope="module")
def kubectl(api_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    home = tmp_path_factory.mktemp("kubectl-home")
    return Kubectl(api_server.kubeconfig("bob"), home)


def test_kubectl_version_reaches_the_server(kubectl: Kubectl) -> None:
    out = kubectl.ok("version", "-o", "yaml")
    doc = yaml.safe_load(out)
    assert doc["serverVersion"]["gitVersion"].endswith("codehub")


async def test_apply_created_unchanged_configured(
    kubectl: Kubectl, api_server: Any, tmp_path: Path
) -> None:
    name = unique_name("kapply")
    f = tmp_path / "ws.yaml"
    f.write_text(_manifest(name, "PENDING", display_name="first"))
    assert kubectl.ok("apply", "-f", str(f)).strip() == f"workspace.codehub.io/{name} created"
    assert kubectl.ok("apply", "-f", str(f)).strip() == f"workspace.codehub.io/{name} unchanged"
    f.write_text(_manifest(name, "STANDBY", display_name="second"))
    assert kubectl.ok("apply", "-f", str(f)).strip() == f"workspace.codehub.io/{name} configured"
    async with client_of(api_server) as api:
        obj = await api.get("bob", name)
        assert obj["spec"]["desired_state"] == "STANDBY"
        assert obj["spec"]["display_name"] == "second"
        await api.delete("bob", name)


async def test_get_prints_printer_columns_and_yaml(kubectl: Kubectl, api_server: Any) -> None:
    name = unique_name("kget")
    kubectl.ok("apply", "-f", "-", stdin=_manifest(name, "STANDBY", image_ref=IMAGE))
    try:
        table = kubectl.ok("get", "ws")
        header = table.splitlines()[0].split()
        assert header == ["NAME", "DESIRED", "OBSERVED", "OPERATION", "DISPLAY", "AGE"]
        rows = {line.split()[0]: line.split() for line in table.splitlines()[1:]}
        assert rows[name][1] == "STANDBY"
        wide = kubectl.ok("get", "ws", name, "-o", "wide").splitlines()
        assert wide[0].split() == [
            *header,
            *("IMAGE", "ERRORS", "REASON", "LAST-ACCESS", "SOURCE", "CONNS"),
            *("IDLE-ACTION", "IDLE-AT"),
        ]
        assert wide[1].split()[:2] == [name, "STANDBY"]
        assert f" {IMAGE} " in wide[1], wide
        as_yaml = yaml.safe_load(kubectl.ok("get", "ws", name, "-o", "yaml"))
        assert as_yaml["kind"] == "Workspace"
        assert as_yaml["metadata"]["name"] == name
        assert as_yaml["metadata"]["namespace"] == "bob"
        assert as_yaml["spec"]["desired_state"] == "STANDBY"
        short = kubectl.ok("get", "workspaces.codehub.io", name, "-o", "name")
        assert short.strip() == f"workspace.codehub.io/{name}"
    finally:
        async with client_of(api_server) as api:
            await api.delete("bob", name)


def _reader(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _wait_line(lines: queue.Queue[str], pred: Callable[[str], bool], seen: list[str]) -> str:
    while True:
        try:
            line = lines.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError(f"no matching line within {WAIT}s; got {seen!r}") from None
        seen.append(line)
        if pred(line):
            return line


async def test_get_watch_sees_change_by_another_client(kubectl: Kubectl, api_server: Any) -> None:
    name = unique_name("kwatch")
    kubectl.ok("apply", "-f", "-", stdin=_manifest(name, "PENDING"))
    proc = kubectl.popen("get", "ws", name, "-w")
    try:
        lines = _reader(proc)
        seen: list[str] = []
        _wait_line(lines, lambda s: s.split()[:2] == [name, "PENDING"], seen)
        async with client_of(api_server) as api:
            await api.patch_merge("bob", name, {"spec": {"desired_state": "STANDBY"}})
        changed = _wait_line(lines, lambda s: s.split()[:2] == [name, "STANDBY"], seen)
        assert changed.split()[0] == name
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        async with client_of(api_server) as api:
            await api.delete("bob", name)


async def test_patch_merge_and_delete(kubectl: Kubectl, api_server: Any) -> None:
    name = unique_name("kpatch")
    kubectl.ok("apply", "-f", "-", stdin=_manifest(name, "PENDING"))
    out = kubectl.ok("patch", "ws", name, "--type=merge", "-p", '{"spec":{"memo":"patched"}}')
    assert out.strip() == f"workspace.codehub.io/{name} patched"
    async with client_of(api_server) as api:
        assert (await api.get("bob", name))["spec"]["memo"] == "patched"
    out = kubectl.ok("delete", "ws", name)
    assert out.strip() == f'workspace.codehub.io "{name}" deleted'
    async with client_of(api_server) as api:
        with pytest.raises(ApiError) as err:
            await api.get("bob", name)
    assert err.value.status == 404


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda name: _manifest(name, "FLYING"), "spec.desired_state"),
        (lambda name: _manifest("Bad_" + name, "PENDING"), "metadata.name"),
        (lambda name: _manifest(name, "PENDING", standby_ttl_seconds=-1), "standby_ttl_seconds"),
    ],
)
async def test_invalid_manifest_refused_naming_the_field(
    kubectl: Kubectl, api_server: Any, mutate: Callable[[str], str], field: str
) -> None:
    name = unique_name("kbad")
    proc = kubectl.run("apply", "-f", "-", stdin=mutate(name))
    assert proc.returncode != 0
    assert field in proc.stderr
    async with client_of(api_server) as api:
        listed = await api.list("bob")
    assert name not in {o["metadata"]["name"].removeprefix("Bad_") for o in listed["items"]}


KUBECTL_DIR = Path("/usr/lib/google-cloud-sdk/bin")
#: kubectl releases docs/api.md promises to work; older ones need /openapi/v2 (protobuf).
SUPPORTED_MINORS = range(29, 40)


def _versioned(minor: int) -> Path:
    return KUBECTL_DIR / f"kubectl.1.{minor}"


def _run_verbs(binary: Path, kubeconfig: Path, home: Path, tmp_path: Path) -> dict[str, str]:
    """create, apply, replace, diff and explain with one kubectl release; the error text
    of each verb that failed ('' when it worked)."""
    name = unique_name(f"kv{binary.name[-2:]}")
    f = tmp_path / f"{name}.yaml"
    f.write_text(_manifest(name, "PENDING", display_name="one"))
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(home)}
    env.pop("KUBECTL_EXTERNAL_DIFF", None)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(binary), "--request-timeout=30s", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )

    results: dict[str, str] = {}
    proc = run("create", "-f", str(f))
    results["create"] = "" if proc.returncode == 0 else proc.stderr
    f.write_text(_manifest(name, "PENDING", display_name="two"))
    proc = run("apply", "-f", str(f))
    results["apply"] = "" if proc.returncode == 0 else proc.stderr
    f.write_text(_manifest(name, "PENDING", display_name="three"))
    proc = run("replace", "-f", str(f))
    results["replace"] = "" if proc.returncode == 0 else proc.stderr
    f.write_text(_manifest(name, "PENDING", display_name="four"))
    proc = run("diff", "-f", str(f))
    results["diff"] = "" if proc.returncode in (0, 1) else proc.stderr
    proc = run("explain", "workspaces.spec")
    results["explain"] = (
        ""
        if proc.returncode == 0 and "desired_state" in proc.stdout
        else (proc.stderr or proc.stdout)
    )
    run("delete", "workspace", name, "--wait=false")
    return results


@pytest.mark.parametrize("minor", range(27, 34))
def test_kubectl_releases_supported_range(
    minor: int, api_server: Any, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    binary = _versioned(minor)
    if not binary.exists():
        pytest.skip(f"{binary} not installed")
    home = tmp_path_factory.mktemp(f"kubectl-home-{minor}")
    results = _run_verbs(binary, api_server.kubeconfig("bob"), home, tmp_path)
    failed = {verb: err for verb, err in results.items() if err}
    if minor in SUPPORTED_MINORS:
        assert failed == {}
    else:
        assert failed, "an unsupported kubectl now works: widen the range in docs/api.md"
