"""CODEHUB_SCOPE_LABELS reaches the adapters through Settings, not a side read of os.environ."""

import pytest

from codehub.operator.settings import Settings, SettingsError


def test_scope_labels_parsed_and_passed_to_docker_config() -> None:
    s = Settings.from_env({"CODEHUB_SCOPE_LABELS": "codehub.io/test-run=abc, team = x"})
    assert s.scope_labels == {"codehub.io/test-run": "abc", "team": "x"}
    assert s.docker_config().scope_labels == {"codehub.io/test-run": "abc", "team": "x"}
    assert s.docker_config({"only": "this"}).scope_labels == {"only": "this"}


def test_scope_labels_default_empty() -> None:
    assert Settings.from_env({}).docker_config().scope_labels == {}


@pytest.mark.parametrize("raw", ["novalue", "=v", "a=b,oops"])
def test_bad_scope_labels_name_the_variable(raw: str) -> None:
    with pytest.raises(SettingsError, match="CODEHUB_SCOPE_LABELS"):
        Settings.from_env({"CODEHUB_SCOPE_LABELS": raw})
