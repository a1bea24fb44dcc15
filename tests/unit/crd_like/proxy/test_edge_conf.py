"""The native edge's nginx configuration (rendered text, and ``nginx -t`` where installed)
and how the server recognises the edge."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from codehub.crd_like.proxy.edge_conf import KEEPALIVE_REQUESTS, EdgeConfig, render
from codehub.crd_like.proxy.edge_run import EdgeProcess, nginx_binary
from codehub.crd_like.proxy.edge_trust import EDGE_SECRET_KEY, SECRET_HEADER, from_edge
from codehub.crd_like.server.tls import ensure_certificate


def config(tmp_path: Path, **kw: object) -> EdgeConfig:
    cert, key = ensure_certificate(tmp_path / "state")
    base = EdgeConfig(
        listen="127.0.0.1:18443",
        app="127.0.0.1:18080",
        cert=cert,
        key=key,
        secret="s3cret",
        workdir=tmp_path / "edge",
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_auth_cache_is_keyed_by_credential_upgrade_and_target(tmp_path: Path) -> None:
    without = render(config(tmp_path))
    assert "proxy_cache " not in without
    text = render(config(tmp_path, auth_cache=1))
    # The whole Cookie header: the answer carries the cookies the app gets.
    key = 'proxy_cache_key "$http_authorization|$http_cookie|$http_upgrade|$request_uri"'
    assert key in text
    assert "proxy_cache_valid 200 1s;" in text
    assert "proxy_cache_valid 401" not in text
    # A cache lock's waiters poll every 500 ms: each expiry would stall concurrent requests.
    assert "proxy_cache_lock" not in text
    assert "open_file_cache max=1024 inactive=2s;" in text  # a hit is one pread


def test_workers_and_long_keep_alive(tmp_path: Path) -> None:
    assert "worker_processes 1;" in render(config(tmp_path))
    assert "worker_processes auto;" in render(config(tmp_path, workers=0))
    text = render(config(tmp_path, upstreams=("127.0.0.1:32768",)))
    # Client connections, the server's pool and each workspace pool: not nginx's 1000.
    assert text.count(f"keepalive_requests {KEEPALIVE_REQUESTS};") == 3


def test_pools_and_their_map(tmp_path: Path) -> None:
    text = render(config(tmp_path, upstreams=("127.0.0.1:32768", "127.0.0.1:32769")))
    pool = "upstream codehub_w0 { server 127.0.0.1:32768; keepalive 16; keepalive_requests"
    assert pool in text
    assert '"127.0.0.1:32769" codehub_w1;' in text
    assert "proxy_pass http://$codehub_pool$codehub_path;" in text


def test_credentials_stay_out_of_logs_and_upstreams(tmp_path: Path) -> None:
    text = render(config(tmp_path))
    assert "~^/w/-/link/ /w/-/link/REDACTED;" in text
    assert '$request_method $codehub_log_uri"' in text
    assert 'proxy_set_header Authorization "";' in text
    assert "proxy_set_header Cookie $codehub_cookie;" in text
    assert "location ^~ /w/-/edge- {\n      return 404;" in text


def test_plain_http_listener_for_benchmarks(tmp_path: Path) -> None:
    text = render(config(tmp_path, cert=None, key=None))
    assert "listen 127.0.0.1:18443;" in text
    assert "ssl_certificate" not in text


@pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed")
@pytest.mark.parametrize("cache", [0, 1])
def test_nginx_accepts_the_configuration(tmp_path: Path, cache: int) -> None:
    process = EdgeProcess(config(tmp_path, auth_cache=cache, upstreams=("127.0.0.1:32768",)))
    process._write()
    d = process.cfg.workdir
    done = subprocess.run(
        [
            str(nginx_binary()),
            "-t",
            "-e",
            str(d / "error.log"),
            "-p",
            str(d),
            "-c",
            str(d / "nginx.conf"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert (d / "nginx.conf").stat().st_mode & 0o077 == 0, "the configuration holds the secret"


def test_the_edge_is_recognised_by_its_secret_only() -> None:
    app = web.Application()
    app[EDGE_SECRET_KEY] = b"s3cret"
    assert from_edge(make_mocked_request("GET", "/", headers={SECRET_HEADER: "s3cret"}, app=app))
    assert not from_edge(make_mocked_request("GET", "/", headers={SECRET_HEADER: "no"}, app=app))
    assert not from_edge(make_mocked_request("GET", "/", app=app))
    unset = web.Application()
    unset[EDGE_SECRET_KEY] = b""
    assert not from_edge(make_mocked_request("GET", "/", headers={SECRET_HEADER: ""}, app=unset))
