"""The fake InstanceController keeps the real one's contract, so unit tests and the
scale benchmark built on it exercise the operator against realistic behaviour."""

from __future__ import annotations

import aiohttp
import pytest

from codehub.adapters.errors import ActionFailedError, ErrorCode, UnreachableError
from codehub.adapters.fake_instance import FakeInstanceController
from codehub.adapters.interfaces import InstanceSpec, Resources

IMAGE = "codehub/workspace-test:local"


def spec(uid: str, image: str = IMAGE) -> InstanceSpec:
    return InstanceSpec(uid=uid, image_ref=image, resources=Resources(cpu="1", memory="1Gi"))


async def test_start_requires_volume() -> None:
    fake = FakeInstanceController()
    with pytest.raises(ActionFailedError) as info:
        await fake.start(spec("a"))
    assert info.value.code is ErrorCode.VOLUME_NOT_FOUND
    assert not await fake.is_running("a")
    assert "a" not in await fake.list_instances()


async def test_start_idempotent_and_recreates_stopped() -> None:
    fake = FakeInstanceController()
    fake.add_volume("a")
    await fake.start(spec("a"))
    first = fake.container_id_sync("a")
    await fake.start(spec("a"))
    assert fake.container_id_sync("a") == first
    await fake.stop_behind_back("a")
    assert not await fake.is_running("a")
    await fake.start(spec("a"))
    assert await fake.is_running("a")
    assert fake.container_id_sync("a") != first


async def test_start_with_other_image_recreates() -> None:
    fake = FakeInstanceController()
    fake.add_volume("a")
    await fake.start(spec("a"))
    first = fake.container_id_sync("a")
    await fake.start(spec("a", "other:1"))
    assert fake.container_id_sync("a") != first
    assert fake.containers["a"].image_ref == "other:1"


async def test_created_but_never_started_recovers() -> None:
    fake = FakeInstanceController()
    fake.add_volume("a")
    fake.create_without_start("a", IMAGE)
    assert (await fake.list_instances())["a"].running is False
    await fake.start(spec("a"))
    assert await fake.is_running("a")


async def test_missing_image() -> None:
    fake = FakeInstanceController(missing_images={"nope:1"})
    fake.add_volume("a")
    with pytest.raises(ActionFailedError) as info:
        await fake.start(spec("a", "nope:1"))
    assert info.value.code is ErrorCode.IMAGE_PULL_FAILED
    with pytest.raises(ActionFailedError):
        await fake.start(spec("a", "registry.local/does-not-exist:1"))


async def test_delete_twice_and_missing() -> None:
    fake = FakeInstanceController()
    fake.add_volume("a")
    await fake.start(spec("a"))
    await fake.delete("a")
    await fake.delete("a")
    await fake.delete("never-existed")
    assert await fake.list_instances() == {}
    assert await fake.upstream("a") is None


async def test_fail_next_is_consumed_once_and_before_effects() -> None:
    fake = FakeInstanceController()
    fake.add_volume("a")
    fake.fail_next("start", UnreachableError("engine down"))
    with pytest.raises(UnreachableError):
        await fake.start(spec("a"))
    assert "a" not in fake.containers
    await fake.start(spec("a"))
    assert await fake.is_running("a")


def test_fail_next_rejects_unknown_method() -> None:
    with pytest.raises(ValueError):
        FakeInstanceController().fail_next("strat", RuntimeError())


async def test_volume_check_callable_async() -> None:
    present: set[str] = set()

    async def exists(uid: str) -> bool:
        return uid in present

    fake = FakeInstanceController(volume_exists=exists)
    with pytest.raises(ActionFailedError):
        await fake.start(spec("a"))
    present.add("a")
    await fake.start(spec("a"))
    assert await fake.is_running("a")


async def test_listing_is_one_engine_call_whatever_n() -> None:
    fake = FakeInstanceController()
    for i in range(50):
        fake.add_volume(f"u{i}")
        await fake.start(spec(f"u{i}"))
    before = fake.engine_calls
    listing = await fake.list_instances()
    assert fake.engine_calls - before == 1
    assert set(listing) == {f"u{i}" for i in range(50)}
    assert all(info.running and info.upstream for info in listing.values())


async def test_removed_behind_back_disappears_from_listing() -> None:
    fake = FakeInstanceController()
    fake.add_volume("a")
    await fake.start(spec("a"))
    await fake.remove_behind_back("a")
    assert "a" not in await fake.list_instances()


async def test_serve_http_answers_health_and_websocket() -> None:
    fake = FakeInstanceController(serve_http=True)
    fake.add_volume("a")
    await fake.start(spec("a"))
    url = await fake.upstream("a")
    assert url is not None
    assert url.startswith("http://127.0.0.1:")
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/healthz") as response:
                assert response.status == 200
            async with session.ws_connect(f"{url}/ws") as ws:
                await ws.send_str("ping")
                assert (await ws.receive_str()) == "ping"
        await fake.delete("a")
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientConnectionError):
                await session.get(f"{url}/healthz")
    finally:
        await fake.close()


async def test_hooks_run_around_a_call_and_can_be_removed() -> None:
    from codehub.adapters.fake_instance import FakeInstanceController as Fake

    fake = Fake()
    seen: list[str] = []

    async def before(uid: str) -> None:
        seen.append(f"before {uid} {uid in fake.containers}")

    async def after(uid: str) -> None:
        seen.append(f"after {uid}")

    fake.create_without_start("u1", "img")
    fake.hook("delete", before=before, after=after)
    await fake.delete("u1")
    assert seen == ["before u1 True", "after u1"]
    fake.unhook("delete")
    await fake.delete("u1")
    assert len(seen) == 2
    assert fake.calls["delete"] == 2


async def test_hook_refuses_an_unknown_method() -> None:
    import pytest

    from codehub.adapters.fake_instance import FakeInstanceController as Fake

    with pytest.raises(ValueError, match="no async method"):
        Fake().hook("nope")


async def test_inspect_classifies_like_the_listing() -> None:
    from codehub.adapters.fake_instance import FakeInstanceController as Fake

    fake = Fake()
    fake.create_without_start("u1", "img")
    assert await fake.inspect("missing") is None
    single = await fake.inspect("u1")
    assert single == (await fake.list_instances())["u1"]
    assert single is not None
    assert single.running is False
