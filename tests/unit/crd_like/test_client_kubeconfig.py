"""render_kubeconfig output is what kubectl reads, and parse_kubeconfig reads it back."""

from __future__ import annotations

import base64

import pytest
import yaml

from codehub.crd_like.client.kubeconfig import KubeconfigError, parse_kubeconfig, render_kubeconfig

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_render_has_kubectl_shape() -> None:
    doc = yaml.safe_load(render_kubeconfig("https://127.0.0.1:8443/", "tok", PEM, "alice"))
    assert doc["kind"] == "Config"
    assert doc["current-context"] == "codehub"
    cluster = doc["clusters"][0]["cluster"]
    assert cluster["server"] == "https://127.0.0.1:8443"
    assert base64.b64decode(cluster["certificate-authority-data"]).decode() == PEM
    assert doc["users"][0]["user"] == {"token": "tok"}
    assert doc["contexts"][0]["context"]["namespace"] == "alice"


def test_round_trip() -> None:
    conn = parse_kubeconfig(render_kubeconfig("https://h:1", "tok", PEM, "bob"))
    assert (conn.server, conn.token, conn.ca_pem, conn.namespace) == (
        "https://h:1",
        "tok",
        PEM,
        "bob",
    )
    assert "tok" not in repr(conn)


def test_without_ca_and_namespace() -> None:
    conn = parse_kubeconfig(render_kubeconfig("http://h:1", "t", None, None))
    assert conn.ca_pem is None
    assert conn.namespace is None


@pytest.mark.parametrize(
    "text",
    ["[1, 2]", "apiVersion: v1\n", "current-context: x\ncontexts: []\n", "a: [unclosed"],
)
def test_unusable_kubeconfig(text: str) -> None:
    with pytest.raises(KubeconfigError):
        parse_kubeconfig(text)
