"""StorageProvider on Docker volumes and S3, crash-only archive and restore (SPEC §8).

Data path (docs/adr/0002-archive-data-path.md): the job container only runs ``tar`` on
the volume; bytes travel over the Docker attach socket to this process, which filters
members, gzips, hashes and uploads (multipart, bounded memory) — and on restore
downloads to a temporary file, verifies sha256 before touching the volume, validates
every member and streams a clean tar into the job's stdin. Job containers therefore
never hold S3 credentials and need no network.

Restore extracts into ``/data/.codehub-restore.staging`` and only then swaps: it drops a
marker file, removes everything else, moves the staged tree in, fixes directory modes and
removes the marker. A volume with the marker is an unfinished restore (``archive``
refuses it); a rerun starts from scratch, so a crash anywhere is repaired by repeating.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import logging
import queue
import socket
import struct
import tarfile
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import docker
import docker.errors

from codehub.adapters import naming
from codehub.adapters.archive_format import (
    MARKER_FILE,
    MODES_FILE,
    STAGING_DIR,
    MemberRefusedError,
    Readable,
    StreamStats,
    Writable,
    filter_for_archive,
    parse_job_log,
    reemit_for_restore,
)
from codehub.adapters.config import DockerConfig, S3Config
from codehub.adapters.docker_client import (
    DockerEngine,
    label_filter,
    scoped_labels,
    translate_error,
)
from codehub.adapters.errors import (
    ActionFailedError,
    CodehubError,
    DataLostError,
    ErrorCode,
    OperationTimeoutError,
)
from codehub.adapters.interfaces import StorageProvider
from codehub.adapters.s3_object_store import PART_SIZE, S3Access

log = logging.getLogger(__name__)
T = TypeVar("T")

ROLE_VOLUME = "workspace"
ROLE_JOB = "job"
LABEL_JOB_KIND = "codehub.io/job"
DATA = "/data"
_CHUNK = 1 << 20
_STDERR_LIMIT = 64 * 1024
#: Compressed 1 MiB chunks between compressor and uploader: one part's worth, so the
#: producer keeps going while the previous part is on the wire.
_QUEUE_CHUNKS = 16

_FAIL_FN = 'fail() { echo "RESULT=FAIL CODEHUB_ERROR=$1 STEP=$2" >&2; exit 1; }'
_UNLOCK_FN = (
    # Read-only directories (Go module cache and the like) must become writable before
    # rm -rf can empty them; the job owns everything in the volume.
    'unlock() { find "$@" -type d ! -perm -700 -exec chmod u+rwx {} + 2>/dev/null; }'
)

PROVISION_SCRIPT = f"""
set -u
{_FAIL_FN}
[ "$(stat -c %u:%g {DATA})" = "1000:1000" ] || fail UNKNOWN volume_root_not_owned_by_1000
[ -w {DATA} ] || fail UNKNOWN volume_root_not_writable
echo "RESULT=OK" >&2
"""

ARCHIVE_SCRIPT = f"""
set -u
{_FAIL_FN}
[ -e {DATA}/{MARKER_FILE} ] && fail UNKNOWN unfinished_restore_on_volume
cd {DATA} || fail VOLUME_NOT_FOUND cd
tar cf - . 2>/tmp/tar.err
rc=$?
grep -v "socket ignored" /tmp/tar.err | tail -n 5 | sed 's/^/TAR_STDERR: /' >&2
[ "$rc" -eq 0 ] || fail UNKNOWN "tar_exit_$rc"
echo "RESULT=OK" >&2
"""

RESTORE_SCRIPT = f"""
set -u
umask 0
{_FAIL_FN}
{_UNLOCK_FN}
S={DATA}/{STAGING_DIR}
M={DATA}/{MARKER_FILE}
if [ -e "$S" ]; then unlock "$S"; rm -rf "$S" || fail UNKNOWN remove_stale_staging; fi
mkdir "$S" || fail DISK_FULL mkdir_staging
if ! tar x -o -C "$S" 2>/tmp/tar.err; then
    tail -n 5 /tmp/tar.err | sed 's/^/TAR_STDERR: /' >&2
    grep -q "No space left" /tmp/tar.err && fail DISK_FULL extract
    fail TAR_EXTRACT_FAILED extract
fi
[ -f "$S/{MODES_FILE}" ] || fail TAR_EXTRACT_FAILED incomplete_stream
mv "$S/{MODES_FILE}" /tmp/modes || fail UNKNOWN stash_modes
: > "$M" || fail DISK_FULL marker
unlock {DATA}
find {DATA} -mindepth 1 -maxdepth 1 ! -name {STAGING_DIR} ! -name {MARKER_FILE} \\
    -exec rm -rf {{}} + || fail UNKNOWN remove_old_content
cd "$S" || fail UNKNOWN cd_staging
find . -mindepth 1 -maxdepth 1 -exec mv {{}} {DATA}/ \\; || fail UNKNOWN move_into_place
cd {DATA} && rmdir "$S" || fail UNKNOWN remove_staging
xargs -0 -r -n 2 chmod < /tmp/modes || fail UNKNOWN restore_dir_modes
rm -f "$M" || fail UNKNOWN remove_marker
echo "RESULT=OK" >&2
"""

CLEANUP_SCRIPT = f"""
set -u
{_FAIL_FN}
{_UNLOCK_FN}
S={DATA}/{STAGING_DIR}
if [ -e "$S" ]; then unlock "$S"; rm -rf "$S" || fail UNKNOWN remove_staging; fi
echo "RESULT=OK" >&2
"""


@dataclass
class JobResult:
    exit_code: int
    log: str
    fields: dict[str, str]
    timed_out: bool = False
    stats: dict[str, Any] = field(default_factory=dict)


class _DemuxReader(io.RawIOBase):
    """stdout of a non-TTY Docker attach stream; stderr frames go to a bounded buffer."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._remaining = 0
        self.stderr = bytearray()

    def readable(self) -> bool:
        return True

    def _read_exact(self, n: int) -> bytes | None:
        buf = bytearray()
        while len(buf) < n:
            chunk = self._sock.read(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    def readinto(self, b: Any) -> int:
        while self._remaining == 0:
            header = self._read_exact(8)
            if header is None:
                return 0
            stream, size = header[0], struct.unpack(">I", header[4:8])[0]
            if stream == 1:
                self._remaining = size
                continue
            payload = self._read_exact(size)
            if payload is None:
                return 0
            self.stderr += payload
            if len(self.stderr) > _STDERR_LIMIT:
                del self.stderr[: len(self.stderr) - _STDERR_LIMIT]
        view = memoryview(b)[: min(len(b), self._remaining)]
        got = self._sock.readinto(view)
        if not got:
            return 0
        self._remaining -= got
        return int(got)


class _UploadAborted(Exception):
    """The producer failed: the uploader must not complete the object."""


class _QueueReader(io.RawIOBase):
    """The uploader's side of the pipe; raises when the producer failed, so minio aborts."""

    def __init__(self, q: queue.Queue[bytes | BaseException | None]) -> None:
        self._q = q
        self._buf = b""
        self._eof = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while not self._buf and not self._eof:
            item = self._q.get()
            if item is None:
                self._eof = True
            elif isinstance(item, BaseException):
                raise _UploadAborted(str(item))
            else:
                self._buf = item
        if size < 0 or size >= len(self._buf):
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:size], self._buf[size:]
        return out

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


class _GzipHashSink(io.RawIOBase):
    """Compresses (in its own thread), hashes and hands bounded chunks to the uploader.

    Three stages overlap like ``tar | gzip | upload``: the caller's thread parses the tar
    stream, a compressor thread runs zlib (which releases the GIL) and the uploader
    thread sends parts. Every queue is bounded, so memory does not grow with the archive.
    """

    def __init__(
        self,
        q: queue.Queue[bytes | BaseException | None],
        uploader: Future[None],
        level: int,
    ) -> None:
        self._q = q
        self._uploader = uploader
        self._zip = zlib.compressobj(level, zlib.DEFLATED, 31)
        self._buf = bytearray()
        self._raw = bytearray()
        self._work: queue.Queue[bytes | None] = queue.Queue(maxsize=4)
        self._aborted = threading.Event()
        self._error: BaseException | None = None
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.raw_size = 0
        self._thread = threading.Thread(target=self._compress_loop, daemon=True)
        self._thread.start()

    def writable(self) -> bool:
        return True

    def _compress_loop(self) -> None:
        try:
            while True:
                item = self._work.get()
                if self._aborted.is_set():
                    return
                if item is None:
                    self._emit(self._zip.flush(), flush=True)
                    self._put(None)
                    return
                self._emit(self._zip.compress(item))
        except BaseException as exc:
            self._error = exc

    def _emit(self, data: bytes, *, flush: bool = False) -> None:
        if data:
            self.sha256.update(data)
            self.size += len(data)
            self._buf += data
        if self._buf and (flush or len(self._buf) >= _CHUNK):
            self._put(bytes(self._buf))
            self._buf.clear()

    def _put(self, item: bytes | None) -> None:
        while not self._aborted.is_set():
            if self._uploader.done():
                self._uploader.result()  # re-raises the upload failure
                raise _UploadAborted("uploader stopped early")
            try:
                self._q.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
        raise _UploadAborted("aborted")

    def _submit(self, item: bytes | None) -> None:
        while True:
            if self._error is not None:
                raise self._error
            if not self._thread.is_alive() and item is not None:
                raise _UploadAborted("compressor stopped")
            try:
                self._work.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def write(self, b: Any) -> int:
        n = len(b)
        self.raw_size += n
        self._raw += b
        if len(self._raw) >= _CHUNK:
            self._submit(bytes(self._raw))
            self._raw.clear()
        return n

    def finish(self) -> None:
        if self._raw:
            self._submit(bytes(self._raw))
            self._raw.clear()
        self._submit(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def fail(self, exc: BaseException) -> None:
        """Make the uploader abort: it must never complete a partial object."""
        self._aborted.set()
        with contextlib.suppress(queue.Full):
            self._work.put_nowait(None)  # wake the compressor; it sees the abort flag
        try:
            self._q.put_nowait(exc)
        except queue.Full:
            with contextlib.suppress(queue.Empty):
                self._q.get_nowait()
            self._q.put_nowait(exc)
        self._thread.join(timeout=5)


class _SocketWriter(io.RawIOBase):
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self._sock.sendall(b)
        return len(b)


def _shutdown_on_exit(api: Any, cid: str, raw: socket.socket) -> None:
    with contextlib.suppress(Exception):
        api.wait(cid)
    with contextlib.suppress(OSError):
        raw.shutdown(socket.SHUT_RDWR)


def _raw_socket(sock: Any) -> socket.socket:
    raw = getattr(sock, "_sock", sock)
    assert isinstance(raw, socket.socket)
    return raw


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
        #: Test hook: called with (kind, container id) right after a job starts.
        self.on_job_started: Callable[[str, str], None] | None = None

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

    def _remove_container_sync(self, client: docker.DockerClient, name: str) -> None:
        try:
            client.api.remove_container(name, force=True, v=False)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # removal already in progress
                raise

    def _run_job(
        self,
        uid: str,
        kind: str,
        script: str,
        *,
        read_only: bool,
        consume_stdout: Callable[[Readable], Any] | None = None,
        feed_stdin: Callable[[Writable], Any] | None = None,
    ) -> tuple[JobResult, BaseException | None, Any]:
        """Run one job container to completion; never leaves it behind.

        Returns the job's result, the exception the data path raised (if any) and the
        data path's return value. The data path failing kills the job.
        """
        client = self.engine.client_sync()
        api = client.api
        name = f"{naming.container_name(uid)}-{kind}-job"
        volume = naming.volume_name(uid)
        labels = scoped_labels(
            self.config,
            naming.workspace_labels(uid),
            {naming.LABEL_ROLE: ROLE_JOB, LABEL_JOB_KIND: kind},
        )
        try:
            self._remove_container_sync(client, name)  # left over by a crashed run
            host_config = api.create_host_config(
                binds={volume: {"bind": DATA, "mode": "ro" if read_only else "rw"}},
                network_mode="none",
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                privileged=False,
            )
            created = api.create_container(
                self.config.job_image,
                command=["sh", "-c", script],
                user=naming.WORKSPACE_USER,
                name=name,
                labels=labels,
                host_config=host_config,
                stdin_open=feed_stdin is not None,
                detach=False,
                working_dir="/",
            )
        except Exception as exc:
            raise translate_error(
                exc,
                action=f"create {kind} job",
                subject=name,
                api_error_code=ErrorCode.CONTAINER_CREATE_FAILED,
                secrets=self._secrets,
            ) from exc
        cid: str = created["Id"]
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            try:
                api.kill(cid)
            except Exception:
                log.warning("job=%s kill after timeout failed", name)

        timer = threading.Timer(self.config.job_timeout, kill)
        timer.daemon = True
        data_error: BaseException | None = None
        data_result: Any = None
        demux: _DemuxReader | None = None
        try:
            attach: Any = None
            if consume_stdout is not None:
                attach = api.attach_socket(cid, params={"stdout": 1, "stderr": 1, "stream": 1})
            elif feed_stdin is not None:
                attach = api.attach_socket(cid, params={"stdin": 1, "stream": 1})
            try:
                api.start(cid)
                timer.start()
                if self.on_job_started is not None:
                    self.on_job_started(kind, cid)
                if consume_stdout is not None:
                    demux = _DemuxReader(attach)
                    try:
                        data_result = consume_stdout(io.BufferedReader(demux, _CHUNK))
                    except BaseException as exc:
                        data_error = exc
                        with contextlib.suppress(Exception):
                            api.kill(cid)
                elif feed_stdin is not None:
                    raw = _raw_socket(attach)
                    # The engine does not always close a stdin-only attach when the
                    # container dies (killed, timed out, crashed), and a blocked sendall
                    # would then hang the restore forever: shut the socket on exit.
                    threading.Thread(
                        target=_shutdown_on_exit, args=(api, cid, raw), daemon=True
                    ).start()
                    try:
                        stdin = io.BufferedWriter(_SocketWriter(raw), _CHUNK)
                        data_result = feed_stdin(stdin)
                        stdin.flush()
                    except BaseException as exc:
                        data_error = exc
                        with contextlib.suppress(Exception):
                            api.kill(cid)
                    finally:
                        with contextlib.suppress(Exception):
                            raw.shutdown(socket.SHUT_WR)
            finally:
                if attach is not None:
                    with contextlib.suppress(Exception):
                        attach.close()
            status = api.wait(cid)
            exit_code = int(status.get("StatusCode", -1))
            logs = api.logs(cid, stdout=feed_stdin is not None, stderr=True, tail=200)
            text = logs.decode("utf-8", "replace") if isinstance(logs, bytes) else str(logs)
            if demux is not None and not text.strip():
                text = demux.stderr.decode("utf-8", "replace")
        except CodehubError:
            raise
        except Exception as exc:
            raise translate_error(
                exc, action=f"run {kind} job", subject=name, secrets=self._secrets
            ) from exc
        finally:
            timer.cancel()
            with contextlib.suppress(Exception):
                self._remove_container_sync(client, cid)
        result = JobResult(
            exit_code=exit_code,
            log=text,
            fields=parse_job_log(text),
            timed_out=timed_out.is_set(),
        )
        log.info(
            "job=%s uid=%s exit=%s result=%s code=%s",
            kind,
            uid,
            exit_code,
            result.fields.get("RESULT", "NONE"),
            result.fields.get("CODEHUB_ERROR", ""),
        )
        return result, data_error, data_result

    def _job_error(self, uid: str, kind: str, result: JobResult) -> CodehubError:
        context: dict[str, Any] = {
            "uid": uid,
            "job": kind,
            "exit_code": result.exit_code,
            **{k.lower(): v for k, v in result.fields.items()},
        }
        if result.timed_out:
            return OperationTimeoutError(
                f"{kind} job for {uid} exceeded {self.config.job_timeout:g}s and was killed",
                code=ErrorCode.UNKNOWN,
                context=context,
            )
        code_text = result.fields.get("CODEHUB_ERROR", "UNKNOWN")
        try:
            code = ErrorCode(code_text)
        except ValueError:
            code = ErrorCode.UNKNOWN
        step = result.fields.get("STEP", "")
        tail = " | ".join(line for line in result.log.splitlines()[-5:] if "RESULT=" not in line)[
            :300
        ]
        detail = f" at {step}" if step else ""
        if result.exit_code == 137 and "RESULT" not in result.fields:
            detail = " (killed)"
        message = f"{kind} job for {uid} failed{detail}: exit {result.exit_code}"
        if tail:
            message += f"; log: {tail}"
        return ActionFailedError(message, code=code, context=context)

    # ------------------------------------------------------------------ provision

    def _provision_sync(self, uid: str, labels: Mapping[str, str] | None) -> None:
        self._create_volume_sync(uid, labels)
        # The first mount at /data of the job image copies the image's /data ownership
        # (1000:1000) onto the fresh volume's root: no root job needed.
        result, _, _ = self._run_job(uid, "provision", PROVISION_SCRIPT, read_only=False)
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
        q: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=_QUEUE_CHUNKS)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="archive-upload") as pool:
            uploader = pool.submit(self.s3.put_stream, key, _QueueReader(q), self.part_size)
            sink = _GzipHashSink(q, uploader, self.compress_level)

            def consume(stdout: Readable) -> StreamStats:
                return filter_for_archive(stdout, sink)

            try:
                result, data_error, stats = self._run_job(
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
                upload_error = uploader.exception()
                if isinstance(upload_error, CodehubError) and not isinstance(
                    upload_error.__cause__, _UploadAborted
                ):
                    raise upload_error from data_error
                if result.timed_out or result.exit_code != 0 or "RESULT" not in result.fields:
                    raise self._job_error(uid, "archive", result) from data_error
                if isinstance(data_error, CodehubError):
                    raise data_error
                raise ActionFailedError(
                    f"archive of {uid}: the tar stream could not be read "
                    f"({type(data_error).__name__})",
                    code=ErrorCode.UNKNOWN,
                    context={"uid": uid, "op_id": op_id},
                ) from data_error
            with contextlib.suppress(_UploadAborted):
                sink.finish()
            uploader.result()  # raises the translated S3 error, if any
        # The .meta goes last: its presence says the archive is complete (SPEC §8).
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

            result, data_error, _stats = self._run_job(
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
            self._run_job(uid, "cleanup", CLEANUP_SCRIPT, read_only=False)
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
                self._remove_container_sync(client, job["Id"])
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
