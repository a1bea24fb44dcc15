"""Who hands a fresh home volume to uid 1000: the first container that mounts it.

Docker copies an image's directory, owner and mode included, onto an *empty* named
volume the first time a container mounting it there is created (copy-up). Provisioning
therefore only creates the volume; the root's owner comes from the first mount:

- a storage job (restore, archive): the job image's ``/data`` is 1000:1000;
- the workspace container: its image's ``/home/coder``. Images built for codehub have it
  owned by 1000 (scripts/images/); for any other image (no ``/home/coder``, or one owned
  by someone else), :class:`HomeOwnership` creates (never starts) a job container on the
  volume first, as provisioning used to, and the workspace mounts the volume without
  copy-up, so the workspace user can always write its home.

Whether an image's ``/home/coder`` is a directory owned by 1000:1000 and writable by it
is read once per image id, from the first tar header of a created (never started)
container's archive of that path, and kept for the life of the process. The volume is
never inspected: copy-up only happens on an empty volume, and a volume that is not empty
was mounted before, so its root was owned then.
docs/adr/0009-lifecycle-and-scale-performance.md has the measurements.
"""

from __future__ import annotations

import contextlib
import logging
import tarfile
import threading
from typing import Any

import docker
import docker.errors

from codehub.adapters import naming
from codehub.adapters.config import DockerConfig
from codehub.adapters.docker_client import scoped_labels
from codehub.adapters.storage_jobs import DATA, LABEL_JOB_KIND, ROLE_JOB

log = logging.getLogger(__name__)

OWNER = "1000:1000"


def root_header(api: Any, cid: str, path: str) -> tarfile.TarInfo | None:
    """The tar header of ``path`` itself in a created container (owner and mode), or
    None when the path does not exist. Only the first 512-byte block is read."""
    response = api._get(
        api._url("/containers/{0}/archive", cid), params={"path": path}, stream=True
    )
    try:
        if response.status_code == 404:
            return None
        api._raise_for_status(response)
        head = b""
        for chunk in response.iter_content(512):
            head += chunk
            if len(head) >= 512:
                break
    finally:
        response.close()
    return tarfile.TarInfo.frombuf(head[:512], "utf-8", "surrogateescape")


def owned_by_workspace_user(info: tarfile.TarInfo | None) -> bool:
    return bool(info and info.isdir() and f"{info.uid}:{info.gid}" == OWNER and info.mode & 0o200)


def remove_quietly(client: docker.DockerClient, cid: str, *, anonymous: bool = False) -> None:
    """Remove ``cid``; ``anonymous`` also removes the anonymous volumes an image's
    ``VOLUME`` lines made (never a named volume)."""
    with contextlib.suppress(docker.errors.NotFound):
        client.api.remove_container(cid, force=True, v=anonymous)


class HomeOwnership:
    """Makes sure the workspace container's first mount of a fresh volume gives its root
    to 1000:1000, without any container of its own for images whose ``/home/coder`` does
    (after the first check of the image)."""

    def __init__(self, config: DockerConfig) -> None:
        self.config = config
        self._owns_home: dict[str, bool] = {}
        self._lock = threading.Lock()

    def image_owns_home(self, client: docker.DockerClient, image_id: str, uid: str) -> bool:
        """Whether ``image_id``'s /home/coder hands a fresh volume to 1000 (cached)."""
        with self._lock:
            known = self._owns_home.get(image_id)
        if known is not None:
            return known
        api = client.api
        created = api.create_container(
            image_id,
            command=["true"],
            user=naming.WORKSPACE_USER,
            labels=self._labels(uid, "home-check"),
            host_config=api.create_host_config(network_mode="none"),
        )
        cid = str(created["Id"])
        try:
            owns = owned_by_workspace_user(root_header(api, cid, naming.HOME_MOUNT))
        finally:
            remove_quietly(client, cid, anonymous=True)
        log.info("image %s: %s owned by %s: %s", image_id[:19], naming.HOME_MOUNT, OWNER, owns)
        with self._lock:
            self._owns_home[image_id] = owns
        return owns

    @staticmethod
    def image_id(client: docker.DockerClient, image_ref: str) -> str | None:
        """The id of ``image_ref`` on this engine, or None when it is not present."""
        try:
            return str(client.api.inspect_image(image_ref)["Id"])
        except docker.errors.ImageNotFound:
            return None

    def prepare(
        self, client: docker.DockerClient, uid: str, image_ref: str, image_id: str | None
    ) -> bool:
        """Before the workspace container of ``uid`` is created from ``image_ref``
        (``image_id``: its id if the caller looked it up, None to look it up here).

        True: the image's own copy-up gives the root to 1000, mount as usual. False: a
        job container's copy-up did it, and the workspace must mount the volume without
        copy-up (``no_copy``), or the image's own ``/home/coder`` would be copied over it.
        An image not present yet gives True and is left to the caller, which pulls it and
        calls this again. A failing check is logged and treated as False: never wrong,
        only slower.
        """
        image_id = image_id or self.image_id(client, image_ref)
        if image_id is None:
            return True
        try:
            if self.image_owns_home(client, image_id, uid):
                return True
        except (docker.errors.APIError, tarfile.TarError, OSError) as exc:
            log.warning("image %s: %s not checked (%s)", image_ref, naming.HOME_MOUNT, exc)
        self._job_image_copy_up(client, uid)
        return False

    def _job_image_copy_up(self, client: docker.DockerClient, uid: str) -> None:
        """Create and remove a job container on the volume: the job image's ``/data``
        (1000:1000) is copied onto the volume's root if the volume is still empty."""
        api = client.api
        volume = naming.volume_name(uid)
        created = api.create_container(
            self.config.job_image,
            command=["true"],
            user=naming.WORKSPACE_USER,
            labels=self._labels(uid, "home-owner"),
            host_config=api.create_host_config(
                binds={volume: {"bind": DATA, "mode": "rw"}},
                network_mode="none",
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
            ),
        )
        remove_quietly(client, str(created["Id"]))

    def _labels(self, uid: str, kind: str) -> dict[str, str]:
        return scoped_labels(
            self.config,
            naming.workspace_labels(uid),
            {naming.LABEL_ROLE: ROLE_JOB, LABEL_JOB_KIND: kind},
        )
