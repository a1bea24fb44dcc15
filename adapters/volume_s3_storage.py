"""StorageProvider on Docker volumes and S3, crash-only archive and restore (docs/storage.md).

Data path (docs/adr/0002-archive-data-path.md, docs/adr/0008-archive-data-path-performance.md):
the archive job runs ``tar c | gzip`` on the volume; the compressed bytes travel over the
Docker attach socket to this process, which hashes them, uploads them (multipart, a few
parts in flight, bounded memory) and checks every member against the archive policy on
an inflated copy. Only when the check passed and the job exited well is the upload
completed; a tree the policy would trim (FIFOs, reserved names, ...) is archived again
the older way: plain tar from the job, filtered and compressed here. Restore downloads to
a temporary file, verifies sha256 before touching the volume, validates every member and
streams a clean tar into the job's stdin. Job containers therefore never hold S3
credentials and need no network. The byte plumbing lives in ``storage_streams``, the job
containers and their scripts in ``storage_jobs``.

Restore extracts into ``/data/.codehub-restore.staging`` and only then swaps: it drops a
marker file, removes everything else, moves the staged tree in, fixes directory modes and
removes the marker. A volume with the marker is an unfinished restore (``archive``
refuses it); a rerun starts from scratch, so a crash anywhere is repaired by repeating.
"""

from __future__ import annotations

import asyncio
import logging
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable, Mapping
from typing import TypeVar

import docker
import docker.errors

from codehub.adapters import naming
from codehub.adapters.archive_format import (
    MemberRefusedError,
    NeedsFilteringError,
    StreamStats,
    Writable,
    reemit_for_restore,
)
from codehub.adapters.config import DockerConfig, S3Config
from codehub.adapters.docker_client import (
    DockerEngine,
    label_filter,
    scoped_labels,
    translate_error,
)
from codehub.adapters.errors import ActionFailedError, CodehubError, DataLostError, ErrorCode
from codehub.adapters.interfaces import ProgressCallback, StorageProvider
from codehub.adapters.s3_object_store import PART_SIZE, S3Access
from codehub.adapters.storage_archive_paths import ArchivePaths
from codehub.adapters.storage_jobs import (
    CLEANUP_SCRIPT,
    RESTORE_SCRIPT,
    ROLE_JOB,
    JobResult,
    JobRunner,
    job_error,
    remove_container,
)
from codehub.adapters.storage_streams import (
    CountingReader,
    Progress,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

ROLE_VOLUME = "workspace"
#: Parts of an archive on the wire at once (memory: one more part than this).
UPLOAD_PARALLEL = 3


class VolumeS3StorageProvider(ArchivePaths, StorageProvider):
    """Home volumes ``ws-{uid}-home`` and their archives in one S3 bucket."""

    def __init__(
        self,
        docker_config: DockerConfig,
        s3_config: S3Config,
        *,
        engine: DockerEngine | None = None,
        s3: S3Access | None = None,
        temp_dir: str | None = None,
        compress_level: int = 6,
        part_size: int = PART_SIZE,
        upload_parallel: int = UPLOAD_PARALLEL,
    ) -> None:
        self.config = docker_config
        self.engine = engine or DockerEngine(docker_config)
        self._owns_engine = engine is None
        self.s3 = s3 or S3Access(s3_config)
        self.temp_dir = temp_dir
        self.compress_level = compress_level
        self.part_size = part_size
        self.upload_parallel = upload_parallel
        self._secrets = (s3_config.secret_key,)
        self.jobs = JobRunner(docker_config, self.engine, self._secrets)

    @property
    def on_job_started(self) -> Callable[[str, str], None] | None:
        """Test hook: called with (kind, container id) right after a job starts."""
        return self.jobs.on_job_started

    @on_job_started.setter
    def on_job_started(self, hook: Callable[[str, str], None] | None) -> None:
        self.jobs.on_job_started = hook

    @property
    def engine_calls(self) -> int:
        return self.engine.engine_calls

    # ------------------------------------------------------------------ helpers

    def _docker(
        self,
        fn: Callable[[docker.DockerClient], T],
        *,
        action: str,
        subject: str = "",
        not_found_code: ErrorCode | None = None,
        api_error_code: ErrorCode | None = None,
    ) -> T:
        try:
            return fn(self.engine.client_sync())
        except CodehubError:
            raise
        except Exception as exc:
            raise translate_error(
                exc,
                action=action,
                subject=subject,
                not_found_code=not_found_code,
                api_error_code=api_error_code,
                secrets=self._secrets,
            ) from exc

    def _volume_labels(self, uid: str, labels: Mapping[str, str] | None) -> dict[str, str]:
        return scoped_labels(
            self.config,
            dict(labels or {}),
            naming.workspace_labels(uid),
            {naming.LABEL_ROLE: ROLE_VOLUME},
        )

    def _volume_exists_sync(self, uid: str) -> bool:
        def inspect(client: docker.DockerClient) -> bool:
            try:
                client.api.inspect_volume(naming.volume_name(uid))
            except docker.errors.NotFound:
                return False
            return True

        return self._docker(inspect, action="inspect volume", subject=naming.volume_name(uid))

    def _create_volume_sync(self, uid: str, labels: Mapping[str, str] | None) -> None:
        name = naming.volume_name(uid)
        self._docker(
            lambda c: c.api.create_volume(name, labels=self._volume_labels(uid, labels)),
            action="create volume",
            subject=name,
            api_error_code=ErrorCode.UNKNOWN,
        )

    def _job_error(self, uid: str, kind: str, result: JobResult) -> CodehubError:
        return job_error(uid, kind, result, self.config.job_timeout)

    # ------------------------------------------------------------------ provision

    def _provision_sync(self, uid: str, labels: Mapping[str, str] | None) -> None:
        # The volume only: its root is handed to 1000:1000 by the first container that
        # mounts it, a job or the workspace (home_ownership).
        self._create_volume_sync(uid, labels)

    async def provision(self, uid: str, labels: Mapping[str, str] | None = None) -> None:
        await asyncio.to_thread(self._provision_sync, uid, labels)

    # ------------------------------------------------------------------ archive

    def _archive_sync(
        self, uid: str, op_id: str, on_progress: ProgressCallback | None = None
    ) -> str:
        key = naming.archive_key(uid, op_id)
        meta = naming.meta_key(key)
        if self.s3.head(key) is not None and self.s3.head(meta) is not None:
            return key  # crash-only step 1: already done
        if not self._volume_exists_sync(uid):
            raise DataLostError(
                f"volume {naming.volume_name(uid)} of {uid} does not exist; nothing to archive",
                code=ErrorCode.VOLUME_NOT_FOUND,
                context={"uid": uid, "op_id": op_id},
            )
        started = time.monotonic()
        progress = Progress(on_progress)
        try:
            digest, raw_size, size, stats = self._archive_compressed(uid, op_id, key, progress)
            path = "job-gzip"
        except NeedsFilteringError as exc:
            # Rare trees (FIFOs, a stale restore staging directory, ...): the job sends
            # plain tar and this process filters, compresses and uploads it.
            log.info("archive uid=%s op_id=%s: %s; filtering in the provider", uid, op_id, exc)
            progress.restart()
            digest, raw_size, size, stats = self._archive_filtered(uid, op_id, key, progress)
            path = "filtered"
        # The .meta goes last: its presence says the archive is complete (docs/storage.md).
        self.s3.put_bytes(meta, f"sha256:{digest}".encode())
        progress.finish(raw_size)
        log.info(
            "archive uid=%s op_id=%s path=%s members=%d skipped=%d raw_bytes=%d gz_bytes=%d "
            "seconds=%.2f",
            uid,
            op_id,
            path,
            stats.members,
            stats.skipped,
            raw_size,
            size,
            time.monotonic() - started,
        )
        return key

    async def archive(
        self, uid: str, op_id: str, *, on_progress: ProgressCallback | None = None
    ) -> str:
        """Progress counts uncompressed tar bytes; the total is the job's pre-count."""
        return await asyncio.to_thread(self._archive_sync, uid, op_id, on_progress)

    # ------------------------------------------------------------------ restore

    def _expected_sha(self, uid: str, archive_key: str) -> tuple[str, int]:
        """The checksum ``.meta`` promises, and the archive object's size."""
        size = self.s3.head(archive_key)
        if size is None:
            raise DataLostError(
                f"archive {archive_key} of {uid} not found",
                code=ErrorCode.ARCHIVE_NOT_FOUND,
                context={"uid": uid, "archive_key": archive_key},
            )
        meta = self.s3.get_bytes(naming.meta_key(archive_key))
        if meta is None:
            raise DataLostError(
                f"checksum object of {archive_key} not found",
                code=ErrorCode.META_NOT_FOUND,
                context={"uid": uid, "archive_key": archive_key},
            )
        text = meta.decode("ascii", "replace").strip()
        hexdigest = text.removeprefix("sha256:")
        if not text.startswith("sha256:") or len(hexdigest) != 64:
            raise DataLostError(
                f"checksum object of {archive_key} is malformed",
                code=ErrorCode.CHECKSUM_MISMATCH,
                context={"uid": uid, "archive_key": archive_key},
            )
        return hexdigest.lower(), size

    def _restore_sync(
        self, uid: str, archive_key: str, on_progress: ProgressCallback | None = None
    ) -> None:
        expected, size = self._expected_sha(uid, archive_key)
        progress = Progress(on_progress, 2 * size)
        with tempfile.TemporaryFile(dir=self.temp_dir, prefix="codehub-restore-") as tmp:
            got = self.s3.download(archive_key, tmp, on_bytes=progress.add)
            if got is None:
                raise DataLostError(
                    f"archive {archive_key} of {uid} not found",
                    code=ErrorCode.ARCHIVE_NOT_FOUND,
                    context={"uid": uid, "archive_key": archive_key},
                )
            actual, _size = got
            if actual != expected:
                raise DataLostError(
                    f"archive {archive_key} of {uid} fails its checksum",
                    code=ErrorCode.CHECKSUM_MISMATCH,
                    context={
                        "uid": uid,
                        "archive_key": archive_key,
                        "expected": expected,
                        "actual": actual,
                    },
                )
            # Only now does the volume get touched.
            self._provision_sync(uid, None)
            tmp.seek(0)

            def feed(stdin: Writable) -> StreamStats:
                return reemit_for_restore(CountingReader(tmp, progress.add), stdin, compressed=True)

            result, data_error, _stats = self.jobs.run(
                uid, "restore", RESTORE_SCRIPT, read_only=False, feed_stdin=feed
            )
        if isinstance(data_error, MemberRefusedError):
            self._cleanup_staging(uid)
            raise DataLostError(
                f"archive {archive_key} of {uid} refused: {data_error.detail}",
                code=ErrorCode.TAR_EXTRACT_FAILED,
                context={"uid": uid, "archive_key": archive_key},
            ) from data_error
        if isinstance(data_error, tarfile.TarError | EOFError | zlib.error):
            self._cleanup_staging(uid)
            raise DataLostError(
                f"archive {archive_key} of {uid} is not a readable tar.gz "
                f"({type(data_error).__name__})",
                code=ErrorCode.TAR_EXTRACT_FAILED,
                context={"uid": uid, "archive_key": archive_key},
            ) from data_error
        if result.timed_out or result.exit_code != 0 or result.fields.get("RESULT") != "OK":
            raise self._job_error(uid, "restore", result) from data_error
        if data_error is not None:
            raise ActionFailedError(
                f"restore of {uid}: streaming into the job failed ({type(data_error).__name__})",
                code=ErrorCode.TAR_EXTRACT_FAILED,
                context={"uid": uid, "archive_key": archive_key},
            ) from data_error
        progress.finish()

    def _cleanup_staging(self, uid: str) -> None:
        try:
            self.jobs.run(uid, "cleanup", CLEANUP_SCRIPT, read_only=False)
        except CodehubError:
            log.warning("cleanup of restore staging failed uid=%s (the next restore retries)", uid)

    async def restore(
        self, uid: str, archive_key: str, *, on_progress: ProgressCallback | None = None
    ) -> None:
        """Progress counts compressed bytes twice: downloaded (and hashed), then fed to
        the extracting job; the total is twice the archive object's size."""
        await asyncio.to_thread(self._restore_sync, uid, archive_key, on_progress)

    # ------------------------------------------------------------------ volumes

    def _delete_volume_sync(self, uid: str) -> None:
        name = naming.volume_name(uid)

        def remove(client: docker.DockerClient) -> None:
            jobs = client.api.containers(
                all=True,
                filters={
                    "label": label_filter(
                        self.config,
                        {naming.LABEL_ROLE: ROLE_JOB, naming.LABEL_WORKSPACE_ID: uid},
                    ),
                    "status": ["created", "exited", "dead"],
                },
            )
            for job in jobs:
                remove_container(client, job["Id"])
            try:
                client.api.remove_volume(name)
            except docker.errors.NotFound:
                return
            except docker.errors.APIError as exc:
                if exc.status_code == 409:
                    raise ActionFailedError(
                        f"volume {name} is still in use by a container",
                        code=ErrorCode.UNKNOWN,
                        context={"uid": uid, "volume": name},
                    ) from exc
                raise

        self._docker(remove, action="remove volume", subject=name)

    async def delete_volume(self, uid: str) -> None:
        await asyncio.to_thread(self._delete_volume_sync, uid)

    async def volume_exists(self, uid: str) -> bool:
        return await asyncio.to_thread(self._volume_exists_sync, uid)

    def _list_volumes_sync(self) -> set[str]:
        def listing(client: docker.DockerClient) -> set[str]:
            answer = client.api.volumes(
                filters={"label": label_filter(self.config, {naming.LABEL_ROLE: ROLE_VOLUME})}
            )
            uids: set[str] = set()
            for vol in answer.get("Volumes") or []:
                uid = (vol.get("Labels") or {}).get(naming.LABEL_WORKSPACE_ID)
                if uid and vol.get("Name") == naming.volume_name(uid):
                    uids.add(uid)
            return uids

        return self._docker(listing, action="list volumes")

    async def list_volumes(self) -> set[str]:
        return await asyncio.to_thread(self._list_volumes_sync)

    async def close(self) -> None:
        if self._owns_engine:
            await self.engine.close()
