"""Who hands a fresh home volume to 1000:1000 (adapters/home_ownership.py), without Docker.

The engine's side (copy-up on the first mount) is tested against the real engine in
tests/integration/adapters/test_instance_home_ownership.py; here: the ownership rule read
from a tar header, and that an image is checked once and then trusted.
"""

from __future__ import annotations

import io
import tarfile
from typing import Any

import docker.errors
import pytest

from codehub.adapters.config import DockerConfig
from codehub.adapters.home_ownership import HomeOwnership, owned_by_workspace_user


def header(
    kind: bytes = tarfile.DIRTYPE, uid: int = 1000, gid: int = 1000, mode: int = 0o755
) -> tarfile.TarInfo:
    info = tarfile.TarInfo("coder")
    info.type, info.uid, info.gid, info.mode = kind, uid, gid, mode
    return info


@pytest.mark.parametrize(
    ("info", "owned"),
    [
        (header(), True),
        (header(mode=0o700), True),
        (None, False),  # the image has no /home/coder
        (header(uid=0, gid=0), False),
        (header(gid=0), False),
        (header(mode=0o555), False),  # owned, but the owner cannot write
        (header(kind=tarfile.REGTYPE), False),
        (header(kind=tarfile.SYMTYPE), False),
    ],
)
def test_owned_by_workspace_user(info: tarfile.TarInfo | None, owned: bool) -> None:
    assert owned_by_workspace_user(info) is owned


class _Response:
    def __init__(self, info: tarfile.TarInfo | None) -> None:
        self.status_code = 404 if info is None else 200
        self._data = info.tobuf() if info is not None else b""

    def iter_content(self, size: int) -> Any:
        stream = io.BytesIO(self._data)
        while chunk := stream.read(size):
            yield chunk

    def close(self) -> None:
        pass


class _Api:
    """The few low-level calls HomeOwnership makes, recorded."""

    def __init__(self, home: dict[str, tarfile.TarInfo | None]) -> None:
        self.home = home  # image id -> header of its /home/coder (None: absent)
        self.created: list[tuple[str, str]] = []  # (image, kind label)
        self.removed: list[str] = []
        self._containers: dict[str, str] = {}

    def inspect_image(self, ref: str) -> dict[str, str]:
        if ref not in self.home:
            raise docker.errors.ImageNotFound(ref)
        return {"Id": ref}

    def create_host_config(self, **kwargs: Any) -> dict[str, Any]:
        return kwargs

    def create_container(self, image: str, **kwargs: Any) -> dict[str, str]:
        cid = f"c{len(self.created)}"
        self.created.append((image, kwargs["labels"]["codehub.io/job"]))
        self._containers[cid] = image
        return {"Id": cid}

    def remove_container(self, cid: str, **_: Any) -> None:
        self.removed.append(cid)

    def _url(self, template: str, cid: str) -> str:
        return cid

    def _get(self, cid: str, **_: Any) -> _Response:
        return _Response(self.home[self._containers[cid]])

    def _raise_for_status(self, response: _Response) -> None:
        pass


class _Client:
    def __init__(self, api: _Api) -> None:
        self.api = api


def test_an_owning_image_is_checked_once_then_trusted() -> None:
    api = _Api({"ws-image": header()})
    home = HomeOwnership(DockerConfig())
    client: Any = _Client(api)
    assert home.prepare(client, "u1", "ws-image", None) is True
    assert home.prepare(client, "u2", "ws-image", "ws-image") is True
    assert api.created == [("ws-image", "home-check")]
    assert api.removed == ["c0"]


@pytest.mark.parametrize("home_dir", [None, header(uid=0, gid=0)])
def test_other_images_get_a_job_copy_up_on_every_start(home_dir: tarfile.TarInfo | None) -> None:
    api = _Api({"other": home_dir})
    home = HomeOwnership(DockerConfig(job_image="job-image"))
    client: Any = _Client(api)
    assert home.prepare(client, "u1", "other", None) is False
    assert home.prepare(client, "u2", "other", None) is False
    assert api.created == [
        ("other", "home-check"),
        ("job-image", "home-owner"),
        ("job-image", "home-owner"),
    ]
    assert sorted(api.removed) == ["c0", "c1", "c2"]


def test_an_image_not_present_yet_is_left_to_the_pull() -> None:
    api = _Api({})
    home = HomeOwnership(DockerConfig())
    client: Any = _Client(api)
    assert home.prepare(client, "u1", "missing", None) is True
    assert api.created == []


def test_a_check_that_cannot_tell_means_the_job_copy_up() -> None:
    class Broken(_Api):
        def _get(self, cid: str, **_: Any) -> _Response:
            raise OSError("engine went away mid-read")

    api = Broken({"img": header()})
    home = HomeOwnership(DockerConfig(job_image="job-image"))
    client: Any = _Client(api)
    assert home.prepare(client, "u1", "img", None) is False
    assert api.created == [("img", "home-check"), ("job-image", "home-owner")]
    assert sorted(api.removed) == ["c0", "c1"]
