"""The ``codehub`` CLI as a user runs it (``.venv/bin/codehub`` subprocesses) against the
real API server: apply/get/describe/delete/start/stop/archive/wait/recover/kubeconfig, and
bad input that must end as one line on stderr with nothing applied.

No operator runs here: where a test needs status changes (wait, recover), it writes
``/status`` with the operator's token, as the HealthMonitor and reconciler would.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from codehub.crd_like.client.api import ApiClient, ApiError

REPO = Path(__file__).resolve().parents[3]
CODEHUB = str(REPO / ".venv" / "bin" / "codehub")
KUBECTL = os.environ.get("CODEHUB_KUBECTL") or shutil.which("kubectl") or "/usr/bin/kubectl"
WAIT = 30.0  # a liveness bound for subprocess output, not a performance assertion
USER = "alice"


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _doc(name: str, desired: str = "PENDING", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "codehub.io/v1alpha1",
        "kind": "Workspace",
        "metadata": {"name": name},
        "spec": {"desired_state": desired, **spec},
    }


def _yaml(*docs: dict[str, Any]) -> str:
    return yaml.safe_dump_all(docs)


class Cli:
    def __init__(self, api_server: Any, home: Path, user: str = USER) -> None:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("CODEHUB_") and k not in ("KUBECONFIG",)
        }
        env.update(
            HOME=str(home),
            CODEHUB_SERVER=api_server.url,
            CODEHUB_TOKEN=api_server.tokens[user],
            CODEHUB_CA_FILE=api_server.ca_file,
        )
        self.env = env
        self.token = api_server.tokens[user]

    def argv(self, *args: str) -> list[str]:
        return [CODEHUB, *args]

    def run(
        self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.argv(*args),
            input=stdin,
            capture_output=True,
            text=True,
            env=env or self.env,
            timeout=120,
            check=False,
        )
        assert "Traceback" not in proc.stderr, proc.stderr
        assert self.token not in proc.stderr
        return proc

    def ok(self, *args: str, stdin: str | None = None) -> str:
        proc = self.run(*args, stdin=stdin)
        assert proc.returncode == 0, f"codehub {' '.join(args)} failed: {proc.stderr}"
        return proc.stdout

    def fails(self, *args: str, stdin: str | None = None) -> str:
        """Run a command that must fail with exactly one line on stderr; return that line."""
        proc = self.run(*args, stdin=stdin)
        assert proc.returncode != 0, proc.stdout
        lines = proc.stderr.splitlines()
        assert len(lines) == 1, proc.stderr
        return lines[0]

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.argv(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )


@pytest.fixture(scope="module")
def cli(api_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    return Cli(api_server, tmp_path_factory.mktemp("cli-home"))


def _client(api_server: Any, user: str = USER) -> ApiClient:
    return ApiClient(api_server.url, api_server.tokens[user], ca_file=api_server.ca_file)


async def _exists(api_server: Any, name: str) -> bool:
    async with _client(api_server) as api:
        try:
            await api.get(USER, name)
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
    return True


async def _cleanup(api_server: Any, *names: str) -> None:
    async with _client(api_server, "admin") as api:
        for name in names:
            try:
                await api.delete(USER, name)
            except ApiError as exc:
                if exc.status != 404:
                    raise


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


# -- apply ----------------------------------------------------------------------------


async def test_apply_multi_document_created_unchanged_configured(
    cli: Cli, api_server: Any, tmp_path: Path
) -> None:
    a, b = _name("capply"), _name("capply")
    f = tmp_path / "ws.yaml"
    f.write_text(_yaml(_doc(a), _doc(b, "STANDBY", display_name="B")))
    try:
        assert cli.ok("apply", "-f", str(f)).splitlines() == [
            f"workspace.codehub.io/{a} created",
            f"workspace.codehub.io/{b} created",
        ]
        assert cli.ok("apply", "-f", str(f)).splitlines() == [
            f"workspace.codehub.io/{a} unchanged",
            f"workspace.codehub.io/{b} unchanged",
        ]
        f.write_text(_yaml(_doc(a), _doc(b, "STANDBY", display_name="B2")))
        assert cli.ok("apply", "-f", str(f)).splitlines() == [
            f"workspace.codehub.io/{a} unchanged",
            f"workspace.codehub.io/{b} configured",
        ]
        async with _client(api_server) as api:
            assert (await api.get(USER, b))["spec"]["display_name"] == "B2"
    finally:
        await _cleanup(api_server, a, b)


async def test_apply_stdin_and_directory(cli: Cli, api_server: Any, tmp_path: Path) -> None:
    a, b, c = _name("cdir"), _name("cdir"), _name("cstdin")
    (tmp_path / "nested").mkdir()
    (tmp_path / "one.yaml").write_text(_yaml(_doc(a)))
    (tmp_path / "nested" / "two.json").write_text(json.dumps(_doc(b)))
    try:
        out = cli.ok("apply", "-f", str(tmp_path))
        assert sorted(out.splitlines()) == sorted(
            [f"workspace.codehub.io/{a} created", f"workspace.codehub.io/{b} created"]
        )
        out = cli.ok("apply", "-f", "-", stdin=_yaml(_doc(c)))
        assert out.strip() == f"workspace.codehub.io/{c} created"
    finally:
        await _cleanup(api_server, a, b, c)


async def test_one_bad_document_applies_nothing(cli: Cli, api_server: Any, tmp_path: Path) -> None:
    good, bad = _name("cgood"), _name("cbad")
    f = tmp_path / "mixed.yaml"
    f.write_text(_yaml(_doc(good), _doc(bad, "FLYING")))
    line = cli.fails("apply", "-f", str(f))
    assert "spec.desired_state" in line
    assert "FLYING" in line
    assert "nothing was applied" in line
    assert not await _exists(api_server, good)
    assert not await _exists(api_server, bad)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("apiVersion: codehub.io/v1alpha1\nkind: [oops\n", "invalid YAML"),
        (_yaml(_doc("Bad_Name")), "metadata.name"),
        (_yaml(_doc("x" * 64)), "metadata.name"),
        (_yaml({**_doc("kindless"), "kind": "Pod"}), "kind"),
        (_yaml(_doc("neg", standby_ttl_seconds=-3)), "spec.standby_ttl_seconds"),
    ],
)
def test_bad_input_is_one_line(cli: Cli, text: str, needle: str) -> None:
    line = cli.fails("apply", "-f", "-", stdin=text)
    assert needle in line


# -- get / describe -------------------------------------------------------------------


async def test_get_table_yaml_json_and_errors(cli: Cli, api_server: Any) -> None:
    name = _name("cget")
    cli.ok("apply", "-f", "-", stdin=_yaml(_doc(name, "STANDBY", image_ref="img:test")))
    try:
        table = cli.ok("get", "ws")
        lines = table.splitlines()
        assert lines[0].split() == ["NAME", "DESIRED", "OBSERVED", "OPERATION", "DISPLAY", "AGE"]
        row = next(line.split() for line in lines[1:] if line.split()[0] == name)
        assert row[1] == "STANDBY"
        wide = cli.ok("get", "ws", name, "-o", "wide").splitlines()
        assert wide[0].split()[6:] == [
            "IMAGE",
            "OP_ID",
            "ERRORS",
            "REASON",
            "LAST-ACTIVITY",
            "CONNS",
            "IDLE-ACTION",
        ]
        assert "img:test" in wide[1]
        doc = yaml.safe_load(cli.ok("get", "ws", name, "-o", "yaml"))
        assert (doc["kind"], doc["metadata"]["name"]) == ("Workspace", name)
        listed = json.loads(cli.ok("get", "ws", "-o", "json"))
        assert name in {i["metadata"]["name"] for i in listed["items"]}
        all_ns = cli.run("get", "ws", "-A", "--token", api_server.tokens["admin"])
        assert all_ns.returncode == 0, all_ns.stderr
        assert all_ns.stdout.splitlines()[0].split()[0] == "NAMESPACE"
        assert any(line.split()[:2] == [USER, name] for line in all_ns.stdout.splitlines())

        missing = cli.fails("get", "ws", "no-such-workspace")
        assert missing.startswith("Error from server (NotFound):")
        other = cli.fails("get", "ws", "-n", "bob")
        assert other.startswith("Error from server (Forbidden)") or "NotFound" in other
    finally:
        await _cleanup(api_server, name)


def test_bad_token_and_unreachable_server_are_one_line(cli: Cli, api_server: Any) -> None:
    secret = "not-a-valid-token-" + uuid.uuid4().hex
    line = cli.fails("get", "ws", "-n", USER, "--token", secret)
    assert line.startswith("Error from server (Unauthorized)")
    assert secret not in line
    env = {**cli.env, "CODEHUB_SERVER": "https://127.0.0.1:1"}
    proc = cli.run("get", "ws", "-n", USER, env=env)
    assert proc.returncode != 0
    assert proc.stderr.startswith("Unable to connect to the server:")
    assert len(proc.stderr.splitlines()) == 1


async def test_describe_shows_status_error_and_events(cli: Cli, api_server: Any) -> None:
    name = _name("cdesc")
    cli.ok("apply", "-f", "-", stdin=_yaml(_doc(name, "STANDBY", memo="note")))
    try:
        async with _client(api_server, "operator") as op:
            obj = await op.get(USER, name)
            await op.patch_status_merge(
                USER,
                name,
                {
                    "status": {
                        "observed_status": "STANDBY",
                        "display": "STANDBY",
                        "operation": "NONE",
                        "error_count": 1,
                        "error_info": {
                            "reason": "Unreachable",
                            "message": "engine did not answer",
                            "is_terminal": False,
                        },
                    }
                },
            )
            await op.post_event(
                USER,
                {
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": {"name": f"{name}.1", "namespace": USER},
                    "involvedObject": {
                        "apiVersion": "codehub.io/v1alpha1",
                        "kind": "Workspace",
                        "name": name,
                        "namespace": USER,
                        "uid": obj["metadata"]["uid"],
                    },
                    "reason": "Provisioned",
                    "message": "volume created",
                    "type": "Normal",
                    "source": {"component": "codehub-operator"},
                },
            )
        text = cli.ok("describe", "ws", name)
        assert f"Name:                   {name}" in text
        assert "memo:" in text
        assert "Unreachable" in text
        assert "engine did not answer" in text
        events = text[text.index("Events:") :]
        assert "Provisioned" in events
        assert "volume created" in events
    finally:
        await _cleanup(api_server, name)


# -- watch ----------------------------------------------------------------------------


def _reader(stream: Any) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)
        lines.put("")  # end of stream

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _drain(lines: queue.Queue[str]) -> list[str]:
    """Every remaining line up to the end of the stream (bounded by WAIT per line)."""
    out: list[str] = []
    while True:
        line = lines.get(timeout=WAIT)
        if line == "":
            return out
        out.append(line)


def _wait_line(lines: queue.Queue[str], pred: Callable[[str], bool]) -> str:
    seen: list[str] = []
    while True:
        try:
            line = lines.get(timeout=WAIT)
        except queue.Empty:
            raise AssertionError(f"no matching line within {WAIT}s; got {seen!r}") from None
        if line == "":
            raise AssertionError(f"output ended without a matching line; got {seen!r}")
        seen.append(line)
        if pred(line):
            return line


async def test_get_watch_sees_change_by_another_client(cli: Cli, api_server: Any) -> None:
    name = _name("cwatch")
    cli.ok("apply", "-f", "-", stdin=_yaml(_doc(name)))
    proc = cli.popen("get", "ws", "-w")
    try:
        lines = _reader(proc.stdout)
        _wait_line(lines, lambda s: s.split()[:2] == [name, "PENDING"])
        async with _client(api_server) as api:
            await api.patch_merge(USER, name, {"spec": {"desired_state": "STANDBY"}})
        _wait_line(lines, lambda s: s.split()[:2] == [name, "STANDBY"])
    finally:
        _stop(proc)
        await _cleanup(api_server, name)


# -- desired state, wait, recover, delete ---------------------------------------------


async def test_start_stop_archive_set_desired_state(cli: Cli, api_server: Any) -> None:
    name = _name("cverb")
    cli.ok("apply", "-f", "-", stdin=_yaml(_doc(name, "STANDBY")))
    try:
        async with _client(api_server) as api:
            for verb, desired in (("archive", "PENDING"), ("stop", "STANDBY")):
                out = cli.ok(verb, name)
                assert out.startswith(f"workspace.codehub.io/{name} desired_state")
                assert (await api.get(USER, name))["spec"]["desired_state"] == desired
            assert "unchanged" in cli.ok("stop", name)
        line = cli.fails("start", "no-such-workspace")
        assert "NotFound" in line
    finally:
        await _cleanup(api_server, name)


async def test_wait_follows_progress_until_running(cli: Cli, api_server: Any) -> None:
    name = _name("cwait")
    cli.ok("apply", "-f", "-", stdin=_yaml(_doc(name, "STANDBY")))
    try:
        proc = cli.popen("wait", "ws", name, "--for=display=RUNNING", "--timeout=120s")
        try:
            errs = _reader(proc.stderr)
            _wait_line(errs, lambda s: "waiting for" in s)
            async with _client(api_server, "operator") as op:
                for status in (
                    {"observed_status": "STANDBY", "display": "STANDBY", "operation": "STARTING"},
                    {"observed_status": "RUNNING", "display": "RUNNING", "operation": "NONE"},
                ):
                    await op.patch_status_merge(USER, name, {"status": status})
            progress = _drain(errs)
            assert proc.wait(timeout=WAIT) == 0
            assert proc.stdout is not None
            out = proc.stdout.read()
        finally:
            _stop(proc)
        assert f"workspace.codehub.io/{name} condition met (display=RUNNING)" in out
        assert any("operation=STARTING" in line for line in progress), progress
        assert "display=RUNNING" in progress[-1]
    finally:
        await _cleanup(api_server, name)


async def test_wait_timeout_and_error_end_non_zero(cli: Cli, api_server: Any) -> None:
    name = _name("cwaitfail")
    cli.ok("apply", "-f", "-", stdin=_yaml(_doc(name, "STANDBY")))
    try:
        proc = cli.run("wait", "ws", name, "--for=display=RUNNING", "--timeout=2s")
        assert proc.returncode != 0
        assert "timed out after 2s" in proc.stderr.splitlines()[-1]
        async with _client(api_server, "operator") as op:
            await op.patch_status_merge(
                USER,
                name,
                {
                    "status": {
                        "observed_status": "ERROR",
                        "display": "ERROR",
                        "error_count": 4,
                        "error_info": {
                            "reason": "RetryExceeded",
                            "message": "image pull failed",
                            "is_terminal": True,
                        },
                    }
                },
            )
        proc = cli.run("wait", "ws", name, "--for=display=RUNNING", "--timeout=60s")
        assert proc.returncode != 0
        last = proc.stderr.splitlines()[-1]
        assert "is in ERROR" in last
        assert "RetryExceeded" in last
        assert "codehub recover" in last
    finally:
        await _cleanup(api_server, name)


async def test_recover_is_for_administrators_and_keeps_op_id(cli: Cli, api_server: Any) -> None:
    name = _name("crecover")
    cli.ok("apply", "-f", "-", stdin=_yaml(_doc(name, "STANDBY")))
    try:
        async with _client(api_server, "operator") as op:
            await op.patch_status_merge(
                USER,
                name,
                {
                    "status": {
                        "observed_status": "ERROR",
                        "display": "ERROR",
                        "operation": "ARCHIVING",
                        "op_id": "op-keep-me",
                        "error_count": 1,
                        "error_info": {
                            "reason": "DataLost",
                            "message": "checksum mismatch",
                            "is_terminal": True,
                        },
                    }
                },
            )
        denied = cli.fails("recover", name)
        assert denied.startswith("Error from server (Forbidden)")
        out = cli.ok("recover", name, "-n", USER, "--token", api_server.tokens["admin"])
        assert "recovered" in out
        assert "DataLost" in out
        assert "op-keep-me" in out
        async with _client(api_server) as api:
            status = (await api.get(USER, name))["status"]
        assert status.get("error_info") is None
        assert status["error_count"] == 0
        assert status["operation"] == "NONE"
        assert status["op_id"] == "op-keep-me"
    finally:
        await _cleanup(api_server, name)


async def test_delete_wait(cli: Cli, api_server: Any) -> None:
    name = _name("cdel")
    cli.ok("apply", "-f", "-", stdin=_yaml(_doc(name)))
    out = cli.ok("delete", "ws", name, "--wait", "--timeout=60s")
    assert out.strip() == f"workspace.codehub.io/{name} deleted"
    assert not await _exists(api_server, name)
    line = cli.fails("delete", "ws", name)
    assert line.startswith("Error from server (NotFound)")


# -- kubeconfig -----------------------------------------------------------------------


def _kubectl(
    kubeconfig: Path, env: dict[str, str], *args: str
) -> subprocess.CompletedProcess[str] | None:
    if not Path(KUBECTL).exists():
        return None
    return subprocess.run(
        [KUBECTL, "--request-timeout=30s", *args],
        capture_output=True,
        text=True,
        env={**env, "KUBECONFIG": str(kubeconfig)},
        timeout=120,
        check=False,
    )


async def test_kubeconfig_serves_codehub_and_kubectl(
    cli: Cli, api_server: Any, tmp_path: Path
) -> None:
    name = _name("ckube")
    target = tmp_path / "codehub.kubeconfig"
    cli.ok("kubeconfig", "-o", str(target))
    assert target.stat().st_mode & 0o777 == 0o600
    conf = yaml.safe_load(target.read_text())
    assert conf["contexts"][0]["context"]["namespace"] == USER
    bare = {k: v for k, v in cli.env.items() if not k.startswith("CODEHUB_")}
    try:
        proc = cli.run(
            "--config", str(target), "apply", "-f", "-", stdin=_yaml(_doc(name)), env=bare
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == f"workspace.codehub.io/{name} created"
        kube = _kubectl(target, bare, "get", "ws", name, "-o", "name")
        if kube is not None:
            assert kube.returncode == 0, kube.stderr
            assert kube.stdout.strip() == f"workspace.codehub.io/{name}"
    finally:
        await _cleanup(api_server, name)
