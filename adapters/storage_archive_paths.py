"""The two archive data paths of VolumeS3StorageProvider (docs/storage.md).

docs/adr/0008-archive-data-path-performance.md: the job runs ``tar c | gzip`` and this
process only hashes, uploads and checks the members on an inflated copy (the usual path);
a tree the archive member policy would trim is archived again with plain tar from the
job, filtered and compressed here (the older path, docs/adr/0002-archive-data-path.md).
Both upload through a bounded queue and complete the object only after the job exited
well, so a partial archive never exists under its key.
"""

from __future__ import annotations

import contextlib
import queue
import re
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NoReturn

from codehub.adapters.archive_format import (
    NeedsFilteringError,
    Readable,
    StreamStats,
    filter_for_archive,
    verify_for_archive,
)
from codehub.adapters.config import DockerConfig
from codehub.adapters.errors import ActionFailedError, CodehubError, ErrorCode
from codehub.adapters.s3_object_store import S3Access
from codehub.adapters.storage_jobs import (
    ARCHIVE_SCRIPT,
    JobResult,
    JobRunner,
    archive_gz_script,
    job_error,
)
from codehub.adapters.storage_streams import (
    CHUNK,
    QUEUE_CHUNKS,
    CountingReader,
    GzipHashSink,
    InflateReader,
    Progress,
    QueueReader,
    UploadAborted,
    VerifiedUploadSink,
)

_EXPECTED = re.compile(rb"EXPECTED_BYTES=(\d+)")

#: (sha256 hex of the object, uncompressed tar bytes, object bytes, member counts)
ArchiveOutcome = tuple[str, int, int, StreamStats]


class ArchivePaths:
    """Mixed into the provider: needs its jobs, S3 access and tuning attributes."""

    config: DockerConfig
    jobs: JobRunner
    s3: S3Access
    compress_level: int
    part_size: int
    upload_parallel: int

    def _expected_bytes_hook(self, progress: Progress) -> Callable[[bytes], None]:
        def on_stderr(payload: bytes) -> None:
            found = _EXPECTED.search(payload)
            if found:
                progress.set_total(int(found.group(1)))

        return on_stderr

    def _archive_compressed(
        self, uid: str, op_id: str, key: str, progress: Progress
    ) -> ArchiveOutcome:
        """``tar c | gzip`` in the job; here only hashing, the member check and upload.

        The check inflates a copy of the stream and applies the archive member policy;
        the upload is completed only once the check passed and the job exited well.
        """
        q: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=QUEUE_CHUNKS)
        inflated: list[InflateReader] = []

        def verify(reader: Readable) -> StreamStats:
            inflated.append(InflateReader(reader, progress.add))
            return verify_for_archive(inflated[0])

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="archive-upload") as pool:
            uploader = pool.submit(
                self.s3.put_stream, key, QueueReader(q), self.part_size, self.upload_parallel
            )
            sink = VerifiedUploadSink(q, uploader, verify)

            def consume(stdout: Readable) -> StreamStats:
                while chunk := stdout.read(CHUNK):
                    sink.write(chunk)
                stats: StreamStats = sink.end_of_stream()
                return stats

            stats = self._run_archive_job(
                uid,
                op_id,
                archive_gz_script(self.compress_level),
                consume,
                sink.fail,
                uploader,
                self._expected_bytes_hook(progress),
            )
            sink.complete()
            uploader.result()  # raises the translated S3 error, if any
        return sink.sha256.hexdigest(), inflated[0].size, sink.size, stats

    def _archive_filtered(
        self, uid: str, op_id: str, key: str, progress: Progress
    ) -> ArchiveOutcome:
        """Plain ``tar c`` in the job; the filter, zlib and upload in this process."""
        q: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=QUEUE_CHUNKS)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="archive-upload") as pool:
            uploader = pool.submit(
                self.s3.put_stream, key, QueueReader(q), self.part_size, self.upload_parallel
            )
            sink = GzipHashSink(q, uploader, self.compress_level)

            def consume(stdout: Readable) -> StreamStats:
                return filter_for_archive(CountingReader(stdout, progress.add), sink)

            stats = self._run_archive_job(
                uid, op_id, ARCHIVE_SCRIPT, consume, sink.fail, uploader, None
            )
            with contextlib.suppress(UploadAborted):
                sink.finish()
            uploader.result()  # raises the translated S3 error, if any
        return sink.sha256.hexdigest(), sink.raw_size, sink.size, stats

    def _run_archive_job(
        self,
        uid: str,
        op_id: str,
        script: str,
        consume: Callable[[Readable], StreamStats],
        fail: Callable[[BaseException], None],
        uploader: Future[None],
        on_stderr: Callable[[bytes], None] | None,
    ) -> StreamStats:
        """Run the archive job; on any failure abort the upload and raise the best error."""
        try:
            result, data_error, stats = self.jobs.run(
                uid,
                "archive",
                script,
                read_only=True,
                consume_stdout=consume,
                on_stderr=on_stderr,
            )
        except BaseException as exc:
            fail(exc)
            raise
        if isinstance(data_error, NeedsFilteringError):
            fail(data_error)
            raise data_error
        if data_error is not None or not result.ok:
            fail(RuntimeError("archive job failed"))
            self._raise_archive_failure(uid, op_id, result, data_error, uploader)
        assert isinstance(stats, StreamStats)
        return stats

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
            raise job_error(uid, "archive", result, self.config.job_timeout) from data_error
        if isinstance(data_error, CodehubError):
            raise data_error
        raise ActionFailedError(
            f"archive of {uid}: the tar stream could not be read ({type(data_error).__name__})",
            code=ErrorCode.UNKNOWN,
            context={"uid": uid, "op_id": op_id},
        ) from data_error
