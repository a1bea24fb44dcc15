"""``dev up``'s demo workspace against a small fake API: a demo found asleep (its idle
TTL acted while the stack was down, or acts while ``dev up`` waits) is started again, and
a demo that keeps being stopped ends in a clear error instead of a five-minute wait."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from support.api import serve_app

from codehub.crd_like.identity import DESIRED_SOURCE_ANNOTATION
from codehub.operator.cli.dev import demo
from codehub.operator.cli.dev.state import DevStackError

TOKEN = "t0ken"


class FakeDemo:
    """One workspace. A PATCH of desired RUNNING makes the next GET show it running,
    unless ``sleeps_left`` says the idle TTL puts it to sleep again first."""

    def __init__(self, desired: str, sleeps_left: int = 0) -> None:
        self.desired = desired
        self.source = "ttl"
        self.sleeps_left = sleeps_left
        self.patches: list[Any] = []

    def body(self) -> dict[str, Any]:
        running = self.desired == "RUNNING"
        level = "RUNNING" if running else self.desired
        return {
            "metadata": {
                "name": "demo",
                "namespace": "dev",
                "annotations": {DESIRED_SOURCE_ANNOTATION: self.source},
            },
            "spec": {"desired_state": self.desired},
            "status": {"observed_status": level, "display": level, "operation": "NONE"},
        }

    async def handle(self, request: web.Request) -> web.Response:
        assert request.headers.get("Authorization") == f"Bearer {TOKEN}"
        if request.method == "PATCH":
            patch = json.loads(await request.read())
            self.patches.append(patch)
            self.desired = patch["spec"]["desired_state"]
            self.source = "api"
        elif self.desired == "RUNNING" and self.sleeps_left:
            self.sleeps_left -= 1
            self.desired, self.source = "STANDBY", "ttl"
        return web.json_response(self.body())


async def _serve(fake: FakeDemo) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route(
        "*", "/apis/codehub.io/v1alpha1/namespaces/{ns}/workspaces/{name}", fake.handle
    )
    runner, url = await serve_app(app)
    try:
        yield url
    finally:
        await runner.cleanup()


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "POLL", 0.0)


async def test_a_demo_found_asleep_is_started(
    quick: None, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeDemo("STANDBY")
    async for url in _serve(fake):
        ns, name = await demo.apply_demo(url, TOKEN, "")
        obj = await demo.follow(url, TOKEN, "", ns, name, demo.Freshness())
    assert (ns, name) == ("dev", "demo")
    assert fake.patches == [{"spec": {"desired_state": "RUNNING"}}]
    assert obj["status"]["display"] == "RUNNING"
    assert "desired_state is STANDBY, set by ttl: starting it" in capsys.readouterr().out


async def test_a_running_demo_is_left_alone(quick: None) -> None:
    fake = FakeDemo("RUNNING")
    async for url in _serve(fake):
        await demo.apply_demo(url, TOKEN, "")
        await demo.follow(url, TOKEN, "", "dev", "demo", demo.Freshness())
    assert fake.patches == []


async def test_put_to_sleep_while_starting_it_is_started_again(quick: None) -> None:
    fake = FakeDemo("RUNNING", sleeps_left=2)
    async for url in _serve(fake):
        obj = await demo.follow(url, TOKEN, "", "dev", "demo", demo.Freshness())
    assert len(fake.patches) == 2
    assert obj["spec"]["desired_state"] == "RUNNING"


async def test_a_demo_that_keeps_being_stopped_is_an_error_not_a_wait(quick: None) -> None:
    fake = FakeDemo("RUNNING", sleeps_left=100)
    async for url in _serve(fake):
        with pytest.raises(DevStackError, match="put to sleep 4 times"):
            await demo.follow(url, TOKEN, "", "dev", "demo", demo.Freshness())
    assert len(fake.patches) == demo.WAKES
