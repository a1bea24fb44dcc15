"""The Kubernetes verbs tools use, through stock kubectl against the real server over
HTTPS (docs/api.md): ``auth can-i``, ``apply --server-side`` (conflicts, force),
``diff``, ``delete --all`` / ``-l``, and ``explain`` for every kind served.

kubectl is the machine's (``CODEHUB_KUBECTL`` selects another); each call has a throwaway
HOME for its discovery cache and a kubeconfig written by ``render_kubeconfig``.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubectl_kit import Kubectl, client_of, requires_kubectl, unique_name

CODEHUB = Path(__file__).resolve().parents[3] / ".venv" / "bin" / "codehub"
pytestmark = requires_kubectl


@pytest.fixture(scope="module")
def homes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kubectl-verbs")


@pytest.fixture(scope="module")
def bob(api_server: Any, homes: Path) -> Kubectl:
    return Kubectl(api_server.kubeconfig("bob"), homes / "bob")


@pytest.fixture(scope="module")
def admin(api_server: Any, homes: Path) -> Kubectl:
    return Kubectl(api_server.kubeconfig("admin"), homes / "admin")


def _manifest(name: str, labels: dict[str, str] | None = None, **spec: Any) -> str:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    body = {
        "apiVersion": "codehub.io/v1alpha1",
        "kind": "Workspace",
        "metadata": meta,
        "spec": {"desired_state": "PENDING", **spec},
    }
    return yaml.safe_dump(body)


@pytest.mark.parametrize(
    ("args", "answer"),
    [
        (("create", "workspaces"), "yes"),
        (("delete", "ws"), "yes"),
        (("get", "ws", "-n", "alice"), "no"),
        (("list", "ws", "-A"), "no"),
        (("patch", "ws", "--subresource=status"), "no"),
        (("get", "ws", "--subresource=status"), "yes"),
        (("create", "events"), "yes"),
        (("get", "secrets"), "no"),
    ],
)
def test_auth_can_i_for_a_user(bob: Kubectl, args: tuple[str, ...], answer: str) -> None:
    proc = bob.run("auth", "can-i", *args)
    assert proc.stdout.split()[:1] == [answer], proc.stderr
    assert proc.returncode == (0 if answer == "yes" else 1)


@pytest.mark.parametrize(
    "args",
    [("list", "ws", "-A"), ("patch", "ws", "--subresource=status", "-n", "bob"), ("get", "ns")],
)
def test_auth_can_i_for_an_administrator(admin: Kubectl, args: tuple[str, ...]) -> None:
    assert admin.ok("auth", "can-i", *args).split()[:1] == ["yes"]


def test_auth_can_i_list(bob: Kubectl, admin: Kubectl) -> None:
    rows = {line.split()[0]: line for line in bob.ok("auth", "can-i", "--list").splitlines()}
    assert "deletecollection" in rows["workspaces.codehub.io"]
    assert rows["workspaces.codehub.io/status"].split()[-1] == "[get]"
    other = bob.ok("auth", "can-i", "--list", "-n", "alice")
    assert "workspaces.codehub.io" not in other
    assert "*.*" in admin.ok("auth", "can-i", "--list")


async def test_server_side_apply_conflict_and_force(
    bob: Kubectl, api_server: Any, tmp_path: Path
) -> None:
    name = unique_name("ssa")
    f = tmp_path / "ws.yaml"
    f.write_text(_manifest(name, display_name="one"))
    ssa = ("apply", "--server-side", "-f", str(f))
    assert bob.ok(*ssa).strip() == f"workspace.codehub.io/{name} serverside-applied"
    bob.ok("patch", "ws", name, "--type=merge", "-p", '{"spec":{"display_name":"hand"}}')
    async with client_of(api_server) as api:
        before = (await api.get("bob", name))["metadata"]["resourceVersion"]
    f.write_text(_manifest(name, display_name="two"))
    proc = bob.run(*ssa)
    assert proc.returncode != 0
    assert "Apply failed with 1 conflict" in proc.stderr
    assert '"kubectl-patch"' in proc.stderr
    assert ".spec.display_name" in proc.stderr
    async with client_of(api_server) as api:
        obj = await api.get("bob", name)
    assert obj["metadata"]["resourceVersion"] == before
    assert obj["spec"]["display_name"] == "hand"
    bob.ok(*ssa, "--force-conflicts")
    out = yaml.safe_load(bob.ok("get", "ws", name, "-o", "yaml", "--show-managed-fields"))
    managers = {(e["manager"], e["operation"]) for e in out["metadata"]["managedFields"]}
    assert ("kubectl", "Apply") in managers
    assert out["spec"]["display_name"] == "two"
    bob.ok("delete", "ws", name)


async def test_server_side_apply_takes_over_from_client_side_apply(
    bob: Kubectl, api_server: Any, tmp_path: Path
) -> None:
    name = unique_name("kmig")
    f = tmp_path / "ws.yaml"
    f.write_text(_manifest(name, display_name="one", memo="m"))
    bob.ok("apply", "-f", str(f))
    f.write_text(_manifest(name, display_name="two", memo="m"))
    assert bob.ok("apply", "--server-side", "-f", str(f)).strip().endswith("serverside-applied")
    out = yaml.safe_load(bob.ok("get", "ws", name, "-o", "yaml", "--show-managed-fields"))
    assert out["spec"]["display_name"] == "two"
    managers = {e["manager"] for e in out["metadata"]["managedFields"]}
    assert "kubectl" in managers
    bob.ok("delete", "ws", name)


def _codehub_apply(api_server: Any, home: Path, manifest: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CODEHUB_")}
    env.pop("KUBECONFIG", None)
    env.update(
        HOME=str(home),
        CODEHUB_SERVER=api_server.url,
        CODEHUB_TOKEN=api_server.tokens["bob"],
        CODEHUB_CA_FILE=api_server.ca_file,
    )
    proc = subprocess.run(
        [str(CODEHUB), "apply", "-f", "-"],
        input=manifest,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


async def test_codehub_and_kubectl_share_the_last_applied_record(
    bob: Kubectl, api_server: Any, homes: Path
) -> None:
    """A field removed from the manifest is reset on the next apply, whichever of
    ``codehub apply`` and ``kubectl apply`` applied before."""
    name = unique_name("klast")
    home = homes / "codehub"
    home.mkdir(exist_ok=True)
    full = _manifest(name, {"tier": "x"}, display_name="one", memo="m")
    assert _codehub_apply(api_server, home, full).endswith("created")
    bob.ok("apply", "-f", "-", stdin=_manifest(name, {"tier": "x"}, display_name="one"))
    async with client_of(api_server) as api:
        obj = await api.get("bob", name)
    assert "memo" not in obj["spec"]
    assert _codehub_apply(api_server, home, _manifest(name)).endswith("configured")
    async with client_of(api_server) as api:
        obj = await api.get("bob", name)
    assert "display_name" not in obj["spec"]
    assert "tier" not in (obj["metadata"].get("labels") or {})
    bob.ok("delete", "ws", name)


async def test_diff_server_side_and_client_side(
    bob: Kubectl, api_server: Any, tmp_path: Path
) -> None:
    name = unique_name("kdiff")
    f = tmp_path / "ws.yaml"
    f.write_text(_manifest(name, display_name="one"))
    bob.ok("apply", "--server-side", "-f", str(f))
    async with client_of(api_server) as api:
        before = (await api.get("bob", name))["metadata"]["resourceVersion"]
    assert bob.run("diff", "--server-side", "-f", str(f)).returncode == 0
    f.write_text(_manifest(name, display_name="two"))
    for extra in (("--server-side",), ()):
        proc = bob.run("diff", *extra, "-f", str(f))
        assert proc.returncode == 1, proc.stderr
        assert "-  display_name: one" in proc.stdout
        assert "+  display_name: two" in proc.stdout
    async with client_of(api_server) as api:
        obj = await api.get("bob", name)
    assert obj["metadata"]["resourceVersion"] == before
    bob.ok("delete", "ws", name)


async def test_delete_by_label_and_all(bob: Kubectl, admin: Kubectl, api_server: Any) -> None:
    batch = uuid.uuid4().hex[:8]
    names = [unique_name("kdel") for _ in range(3)]
    for i, n in enumerate(names):
        labels = {"batch": f"{batch}-{'b' if i else 'a'}"}
        bob.ok("apply", "-f", "-", stdin=_manifest(n, labels=labels))
    out = bob.ok("delete", "ws", "-l", f"batch={batch}-b")
    assert set(out.splitlines()) == {f'workspace.codehub.io "{n}" deleted' for n in names[1:]}
    async with client_of(api_server) as api:
        left = [o["metadata"]["name"] for o in (await api.list("bob"))["items"]]
    assert names[0] in left
    assert not set(names[1:]) & set(left)
    assert bob.ok("delete", "ws", "-l", f"batch={batch}-none").strip() == "No resources found"
    bob.ok("delete", "ws", names[0])
    # --all in a namespace of this test's own (an administrator may use any).
    ns = f"verbs-{batch}"
    for n in names:
        admin.ok("apply", "-n", ns, "-f", "-", stdin=_manifest(n))
    out = admin.ok("delete", "ws", "--all", "-n", ns)
    assert set(out.splitlines()) == {f'workspace.codehub.io "{n}" deleted' for n in names}
    async with client_of(api_server, "admin") as api:
        assert (await api.list(ns))["items"] == []


@pytest.mark.parametrize(
    ("what", "needle"),
    [
        ("workspaces.spec", "desired_state"),
        ("events", "involvedObject"),
        ("namespaces.status", "phase"),
        ("selfsubjectaccessreviews.spec", "resourceAttributes"),
        ("workspaces.metadata.managedFields", "fieldsV1"),
    ],
)
def test_explain_every_kind(bob: Kubectl, what: str, needle: str) -> None:
    assert needle in bob.ok("explain", what)
