"""CLI argument parsing, connection resolution, apply diffing and top-level error handling."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import pytest

from codehub.crd_like.client.kubeconfig import render_kubeconfig
from codehub.operator import cli
from codehub.operator.cli import arguments, config, connection, resources, services, waiting
from codehub.operator.cli.console import CliError
from codehub.operator.cli.parser import build_parser
from codehub.operator.settings import Settings

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_connection_flags_before_or_after_subcommand() -> None:
    a = parse("--server", "https://a:1", "get", "ws", "-n", "x")
    b = parse("get", "ws", "--server", "https://a:1", "-n", "x")
    assert a.server == b.server == "https://a:1"
    assert a.namespace == b.namespace == "x"
    assert not hasattr(parse("get", "ws"), "server")


def test_get_options() -> None:
    args = parse("get", "ws", "w1", "-o", "wide", "-w")
    assert (args.resource, args.name, args.output, args.watch) == ("ws", "w1", "wide", True)
    assert parse("get", "workspaces", "-A").all_namespaces


def test_wait_and_durations() -> None:
    args = parse("wait", "ws", "w1", "--for=display=RUNNING", "--timeout=5m")
    assert args.for_ == "display=RUNNING"
    assert args.timeout == 300.0
    assert arguments.parse_duration("90") == 90.0
    assert arguments.parse_duration("1h30m") == 5400.0
    assert arguments.parse_duration("2.5s") == 2.5
    for bad in ("", "5x", "10m5"):
        with pytest.raises(ValueError):
            arguments.parse_duration(bad)


def test_listen_parsing() -> None:
    assert parse("server", "--listen", "127.0.0.1:9000").listen == ("127.0.0.1", 9000)
    assert parse("server").listen == ("127.0.0.1", 8443)
    assert cli.main(["server", "--listen", "nope"]) == 2


def test_usage_error_returns_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["frobnicate"]) == 2
    assert cli.main(["wait", "ws", "w1"]) == 2  # --for is required
    assert "Traceback" not in capsys.readouterr().err


def test_resource_aliases() -> None:
    assert arguments.resource_and_names("ws/w1", []) == ["w1"]
    assert arguments.resource_and_names("workspace.codehub.io", ["a", "b"]) == ["a", "b"]
    with pytest.raises(CliError, match="doesn't have a resource type"):
        arguments.resource_and_names("pods", ["x"])


@pytest.mark.parametrize(
    ("text", "obj", "expected"),
    [
        ("display=RUNNING", {"status": {"display": "RUNNING"}}, True),
        ("display=running", {"status": {"observed_status": "RUNNING"}}, True),
        ("display=ARCHIVED", {"status": {"observed_status": "PENDING", "archive_key": "k"}}, True),
        ("status.operation=NONE", {"status": {"operation": "STARTING"}}, False),
        ("observed_status=STANDBY", {"status": {"observed_status": "STANDBY"}}, True),
        ("spec.desired_state=PENDING", {"spec": {"desired_state": "PENDING"}}, True),
        ("delete", None, True),
        ("delete", {"status": {}}, False),
    ],
)
def test_conditions(text: str, obj: dict[str, object] | None, expected: bool) -> None:
    _label, check = waiting.parse_condition(text)
    assert check(obj) is expected


def test_bad_condition() -> None:
    with pytest.raises(CliError):
        waiting.parse_condition("colour=blue")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("display=FOO", "display is never 'FOO'; it is one of PENDING, ARCHIVED, STANDBY"),
        ("observed=ARCHIVED", "observed is never 'ARCHIVED'"),
        ("operation=STOP", "operation is never 'STOP'; it is one of NONE"),
        ("spec.desired_state=ERROR", "desired_state is never 'ERROR'"),
    ],
)
def test_a_value_the_field_never_takes_is_refused_at_once(text: str, message: str) -> None:
    """Accepting it would wait out the whole timeout for nothing."""
    with pytest.raises(CliError, match=re.escape(message)):
        waiting.parse_condition(text)


def test_connection_precedence(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(render_kubeconfig("https://cfg:1", "cfg-token", PEM, "alice"))
    args = parse("--config", str(cfg), "get", "ws")
    conn = connection.resolve_connection(args, {})
    assert (conn.server, conn.token, conn.ca_pem, conn.namespace) == (
        "https://cfg:1",
        "cfg-token",
        PEM,
        "alice",
    )
    env = {"CODEHUB_TOKEN": "env-token", "CODEHUB_NAMESPACE": "bob"}
    conn = connection.resolve_connection(args, env)
    assert (conn.token, conn.namespace) == ("env-token", "bob")
    flagged = parse("--config", str(cfg), "--token", "flag-token", "get", "ws")
    assert connection.resolve_connection(flagged, env).token == "flag-token"


def test_config_token_never_sent_to_another_server(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(render_kubeconfig("https://cfg:1", "cfg-token", PEM, "alice"))
    args = parse("--config", str(cfg), "--server", "https://elsewhere:2", "get", "ws")
    conn = connection.resolve_connection(args, {})
    assert conn.server == "https://elsewhere:2"
    assert conn.token == ""
    assert conn.ca_pem is None


def test_no_server_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = parse("get", "ws")
    with pytest.raises(CliError, match="does not exist"):
        connection.resolve_connection(args, {"CODEHUB_CONFIG": str(tmp_path / "absent.yaml")})
    monkeypatch.setattr(connection, "DEFAULT_CONFIG", str(tmp_path / "default.yaml"))
    with pytest.raises(CliError, match="no server configured"):
        connection.resolve_connection(args, {})


def test_apply_patch_only_changed_fields() -> None:
    current = {
        "metadata": {"name": "w", "labels": {"a": "1"}},
        "spec": {
            "desired_state": "RUNNING",
            "standby_ttl_seconds": 300,
            "resources": {"cpu": "1", "memory": "1Gi"},
        },
    }
    same = {"metadata": {"name": "w", "labels": {"a": "1"}}, "spec": {"desired_state": "RUNNING"}}
    assert resources.apply_patch(current, same) == {}
    changed = {
        "metadata": {"name": "w", "labels": {"a": "2", "b": "x"}},
        "spec": {"desired_state": "STANDBY", "resources": {"cpu": "1", "memory": "2Gi"}},
    }
    assert resources.apply_patch(current, changed) == {
        "metadata": {"labels": {"a": "2", "b": "x"}},
        "spec": {"desired_state": "STANDBY", "resources": {"memory": "2Gi"}},
    }


def test_api_config_from_settings() -> None:
    settings = Settings(
        database_url="postgresql://x/y",
        max_running_per_user=5,
        token_file="/t.csv",
        default_image="img:2",
    )
    config = services.api_config_from_settings(settings)
    assert config.database_url == "postgresql://x/y"
    assert config.max_running_per_user == 5
    assert config.token_file == "/t.csv"
    assert config.default_image == "img:2"


def test_bad_manifest_is_one_line_and_nothing_contacted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "ws.yaml"
    f.write_text(
        "apiVersion: codehub.io/v1alpha1\nkind: Workspace\nmetadata: {name: ok}\n---\n"
        "apiVersion: codehub.io/v1alpha1\nkind: Workspace\nmetadata: {name: bad}\n"
        "spec: {desired_state: FLYING}\n"
    )
    # An unroutable server: reaching it would fail differently, proving nothing was sent.
    code = cli.main(["apply", "-f", str(f), "--server", "https://127.0.0.1:1", "--token", "t"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1
    assert "spec.desired_state" in err
    assert "nothing was applied" in err
    assert "Traceback" not in err


def test_connection_refused_is_one_line_without_token(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(
        ["get", "ws", "-n", "a", "--server", "https://127.0.0.1:1", "--token", "very-secret-token"]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("Unable to connect to the server:")
    assert err.count("\n") == 1
    assert "very-secret-token" not in err


def test_missing_component_is_clear(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes the import fail as if the module were not in the build.
    monkeypatch.setitem(sys.modules, "codehub.operator.cli.dev", None)
    assert cli.main(["dev", "down"]) == 1
    err = capsys.readouterr().err
    assert "`codehub dev down` is not available in this build" in err
    assert "codehub.operator.cli.dev is missing" in err
    assert "Traceback" not in err


def test_unexpected_exception_suggests_debug(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(args: argparse.Namespace) -> int:
        raise RuntimeError("kaboom\nsecond line")

    monkeypatch.setattr(config, "cmd_crd", boom)
    assert cli.main(["crd"]) == 1
    err = capsys.readouterr().err
    assert (
        err == "error: unexpected RuntimeError: kaboom second line (run with --debug for details)\n"
    )
    assert cli.main(["crd", "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_crd_prints_the_definition(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["crd"]) == 0
    assert "kind: CustomResourceDefinition" in capsys.readouterr().out


def test_api_config_takes_server_knobs_from_env() -> None:
    settings = Settings(database_url="postgresql://x/y", max_running_global=7)
    config = services.api_config_from_settings(
        settings, {"CODEHUB_BOOKMARK_INTERVAL": "5", "MAX_RUNNING_GLOBAL": "999"}
    )
    assert config.bookmark_interval == 5.0
    assert config.max_running_global == 7  # Settings is the one source for shared values
    with pytest.raises(CliError, match="CODEHUB_BOOKMARK_INTERVAL"):
        services.api_config_from_settings(settings, {"CODEHUB_BOOKMARK_INTERVAL": "soon"})


def test_parse_labels() -> None:
    assert services.parse_labels(["a=1,b=2", "", "c = 3"]) == {"a": "1", "b": "2", "c": "3"}
    with pytest.raises(CliError):
        services.parse_labels(["novalue"])


def test_connection_flags_override_settings() -> None:
    args = parse("coordinator", "--server", "https://s:1", "--token", "tok-123456789")
    settings = services.with_connection_flags(Settings(server="https://env:2", token="e"), args)
    assert (settings.server, settings.token, settings.ca_file) == (
        "https://s:1",
        "tok-123456789",
        None,
    )
    assert parse("coordinator", "--scope-label", "k=v").scope_label == ["k=v"]
