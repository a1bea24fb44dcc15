"""``codehub open``: the CLI prints a single-use sign-in link that the proxy accepts once."""

from __future__ import annotations

import asyncio

import pytest
from proxykit import Cluster

from codehub.operator.cli import main


async def test_codehub_open_prints_a_link_that_works_once(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    await cluster.workspace("alice", "ws")
    replica = cluster.replicas[0]
    argv = ["open", "ws", "-n", "alice", "--server", replica.base, "--token", "alice-t"]
    code = await asyncio.to_thread(main, argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    url = captured.out.strip()
    assert url.startswith(replica.base + "/w/-/link/"), url
    assert "single-use" in captured.err
    path = url[len(replica.base) :]
    first = await replica.client.get(path, allow_redirects=False)
    assert first.status == 303
    assert first.headers["Location"] == "/w/alice/ws/"
    assert "codehub_session=" in first.headers["Set-Cookie"]
    second = await replica.client.get(path, allow_redirects=False)
    assert second.status == 401


async def test_codehub_open_of_someone_elses_workspace_fails(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    await cluster.workspace("alice", "ws")
    replica = cluster.replicas[0]
    argv = ["open", "ws", "-n", "alice", "--server", replica.base, "--token", "bob-t"]
    code = await asyncio.to_thread(main, argv)
    captured = capsys.readouterr()
    assert code == 1
    assert captured.out == ""
    assert "not found" in captured.err
