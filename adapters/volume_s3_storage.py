"""StorageProvider on Docker volumes and S3, crash-only archive and restore (docs/storage.md).

Data path (docs/adr/0002-archive-data-path.md): the job container only runs ``tar`` on
the volume; bytes travel over the Docker attach socket to this process, which filters
members, gzips, hashes and uploads (multipart, bounded memory) — and on restore
downloads to a temporary file, verifies sha256 before touching the volume, validates
every member and streams a clean tar into the job's stdin. Job containers therefore
never hold S3 credentials and need no network. The byte plumbing lives in
``storage_streams``, the job containers and their scripts in ``storage_jobs``.

Restore extracts into ``/data/.codehub-restore.staging`` and only then swaps: it drops a
marker file, removes everything else, moves the staged tree in, fixes directory modes and
removes the marker. A volume with the marker is an unfinished restore (``archive``
refuses it); a rerun starts from scratch, so a crash anywhere is repaired by repeating.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NoReturn, TypeVar

import docker
import docker.errors

from codehub.adapters import naming
from codehub.adapters.archive_format import (
    MemberRefusedError,
    Readable,
    StreamStats,
    Writable,
    filter_for_archive,
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
from codehub.adapters.interfaces import StorageProvider
from codehub.adapters.s3_object_store import PART_SIZE, S3Access
from codehub.adapters.storage_jobs import (
    ARCHIVE_SCRIPT,
    CLEANUP_SCRIPT,
    PROVISION_SCRIPT,
    RESTORE_SCRIPT,
    ROLE_JOB,
    JobResult,
    JobRunner,
    job_error,
    remove_container,
)
from codehub.adapters.storage_streams import QUEUE_CHUNKS, GzipHashSink, QueueReader, UploadAborted

log = logging.getLogger(__name__)
T = TypeVar("T")

ROLE_VOLUME = "workspace"


class VolumeS3StorageProvider(StorageProvider):
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
    ) -> None:
        self.config = docker_config
        self.engine = engine or DockerEngine(docker_config)
        self._owns_engine = engine is None
        self.s3 = s3 or S3Access(s3_config)
        self.temp_dir = temp_dir
        self.compress_level = compress_level
        self.part_size = part_size
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
        self._create_volume_sync(uid, labels)
        # The first mount at /data of the job image copies the image's /data ownership
        # (1000:1000) onto the fresh volume's root: no root job needed.
        result, _, _ = self.jobs.run(uid, "provision", PROVISION_SCRIPT, read_only=False)
        if result.exit_code != 0 or result.fields.get("RESULT") != "OK":
            raise self._job_error(uid, "provision", result)

    async def provision(self, uid: str, labels: Mapping[str, str] | None = None) -> None:
        await asyncio.to_thread(self._provision_sync, uid, labels)

    # ------------------------------------------------------------------ archive

    def _archive_sync(self, uid: str, op_id: str) -> str:
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
        q: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=QUEUE_CHUNKS)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="archive-upload") as pool:
            uploader = pool.submit(self.s3.put_stream, key, QueueReader(q), self.part_size)
            sink = GzipHashSink(q, uploader, self.compress_level)

            def consume(stdout: Readable) -> StreamStats:
                return filter_for_archive(stdout, sink)

            try:
                result, data_error, stats = self.jobs.run(
                    uid, "archive", ARCHIVE_SCRIPT, read_only=True, consume_stdout=consume
                )
            except BaseException as exc:
                sink.fail(exc)
                raise
            ok = (
                data_error is None and result.exit_code == 0 and result.fields.get("RESULT") == "OK"
            )
            if not ok:
                sink.fail(RuntimeError("archive job failed"))
                self._raise_archive_failure(uid, op_id, result, data_error, uploader)
            with contextlib.suppress(UploadAborted):
                sink.finish()
            uploader.result()  # raises the translated S3 error, if any
        # The .meta goes last: its presence says the archive is complete (docs/storage.md).
        self.s3.put_bytes(meta, f"sha256:{sink.sha256.hexdigest()}".encode())
        elapsed = time.monotonic() - started
        log.info(
            "archive uid=%s op_id=%s members=%d skipped=%d raw_bytes=%d gz_bytes=%d seconds=%.2f",
            uid,
            op_id,
            stats.members,
            stats.skipped,
            sink.raw_size,
            sink.size,
            elapsed,
        )
        return key

    def _raise_archive_failure(
        self,
        uid: str,
        op_id: str,
        result: JobResult,
        data_error: BaseException | None,
        uploader: Future[None],
    ) -> NoReturn:
        """The most telling error of a failed archive: S3's, the job's, then the stream's."""
        upload_error = uploader.exception()
        if isinstance(upload_error, CodehubError) and not isinstance(
            upload_error.__cause__, UploadAborted
        ):
            raise upload_error from data_error
        if result.timed_out or result.exit_code != 0 or "RESULT" not in result.fields:
            raise self._job_error(uid, "archive", result) from data_error
        if isinstance(data_error, CodehubError):
            raise data_error
        raise ActionFailedError(
            f"archive of {uid}: the tar stream could not be read ({type(data_error).__name__})",
            code=ErrorCode.UNKNOWN,
            context={"uid": uid, "op_id": op_id},
        ) from data_error

    async def archive(self, uid: str, op_id: str) -> str:
        return await asyncio.to_thread(self._archive_sync, uid, op_id)

    # ------------------------------------------------------------------ restore

    def _expected_sha(self, uid: str, archive_key: str) -> str:
        if self.s3.head(archive_key) is None:
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
        return hexdigest.lower()

    def _restore_sync(self, uid: str, archive_key: str) -> None:
        expected = self._expected_sha(uid, archive_key)
        with tempfile.TemporaryFile(dir=self.temp_dir, prefix="codehub-restore-") as tmp:
            got = self.s3.download(archive_key, tmp)
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
                return reemit_for_restore(tmp, stdin, compressed=True)

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

    def _cleanup_staging(self, uid: str) -> None:
        try:
            self.jobs.run(uid, "cleanup", CLEANUP_SCRIPT, read_only=False)
        except CodehubError:
            log.warning("cleanup of restore staging failed uid=%s (the next restore retries)", uid)

    async def restore(self, uid: str, archive_key: str) -> None:
        await asyncio.to_thread(self._restore_sync, uid, archive_key)

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
