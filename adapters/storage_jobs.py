"""Job containers: the Docker form of a Kubernetes Job that touches a home volume.

A job runs one busybox ``sh`` script as 1000:1000 with the volume at ``/data``, no
network, no capabilities and a timeout (docs/storage.md). :class:`JobRunner` creates it,
attaches the data path (the job's stdout for archive, its stdin for restore), kills it
when the data path fails or the timeout passes, and always removes it. The scripts report
in ``key=value`` lines (``RESULT=OK`` or ``RESULT=FAIL CODEHUB_ERROR=... STEP=...``),
which :func:`job_error` turns into typed errors.

No script follows a symlink of the volume: ``tar c`` stores links as links, ``find`` and
``rm -rf`` do not descend into them, ``chmod`` only gets the directories the stream
declared (never links, see ``archive_format``), and the swap renames top-level entries.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import docker
import docker.errors

from codehub.adapters import naming
from codehub.adapters.archive_format import (
    MARKER_FILE,
    MODES_FILE,
    STAGING_DIR,
    Readable,
    Writable,
    parse_job_log,
)
from codehub.adapters.config import DockerConfig
from codehub.adapters.docker_client import DockerEngine, scoped_labels, translate_error
from codehub.adapters.errors import (
    ActionFailedError,
    CodehubError,
    ErrorCode,
    OperationTimeoutError,
)
from codehub.adapters.storage_streams import CHUNK, DemuxReader, SocketWriter, raw_socket

log = logging.getLogger(__name__)

ROLE_JOB = "job"
LABEL_JOB_KIND = "codehub.io/job"
DATA = "/data"

_FAIL_FN = 'fail() { echo "RESULT=FAIL CODEHUB_ERROR=$1 STEP=$2" >&2; exit 1; }'
_UNLOCK_FN = (
    # Read-only directories (Go module cache and the like) must become writable before
    # rm -rf can empty them; the job owns everything in the volume.
    'unlock() { find "$@" -type d ! -perm -700 -exec chmod u+rwx {} + 2>/dev/null; }'
)

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


def archive_gz_script(level: int) -> str:
    """``tar c | gzip`` in the job: the compressor runs beside the volume, at pipe speed.

    The compressor is ``pigz`` (the same gzip format and level, one member, deflated on
    every core) when the job image has it, else busybox ``gzip``: compression is the
    archive's critical path (docs/adr/0008-archive-data-path-performance.md).
    A background ``du``/``find`` pre-count prints ``EXPECTED_BYTES`` (file bytes plus one
    512-byte header per entry, an estimate of the tar size) on stderr while tar runs.
    ``pipefail`` makes a failing ``tar`` fail the job even though ``gzip`` succeeded.
    """
    return f"""
set -u
set -o pipefail
{_FAIL_FN}
[ -e {DATA}/{MARKER_FILE} ] && fail UNKNOWN unfinished_restore_on_volume
cd {DATA} || fail VOLUME_NOT_FOUND cd
( b=$(du -sb . | cut -f1); n=$(find . | wc -l); echo "EXPECTED_BYTES=$((b + 512 * n))" >&2 ) &
z=gzip
command -v pigz >/dev/null 2>&1 && z=pigz
tar cf - . 2>/tmp/tar.err | "$z" -{int(level)}
rc=$?
wait
grep -v "socket ignored" /tmp/tar.err | tail -n 5 | sed 's/^/TAR_STDERR: /' >&2
[ "$rc" -eq 0 ] || fail UNKNOWN "tar_gzip_exit_$rc"
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
[ -f "$S/{MODES_FILE}" ] && [ ! -L "$S/{MODES_FILE}" ] || fail TAR_EXTRACT_FAILED incomplete_stream
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

    @property
    def ok(self) -> bool:
        return not self.timed_out and self.exit_code == 0 and self.fields.get("RESULT") == "OK"


@dataclass
class DataPath:
    """What a job's data path did: its return value, or the exception it raised."""

    result: Any = None
    error: BaseException | None = None
    demux: DemuxReader | None = None


def remove_container(client: docker.DockerClient, name: str) -> None:
    """Force-remove a container; gone already, or being removed, is fine."""
    try:
        client.api.remove_container(name, force=True, v=False)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if exc.status_code != 409:  # removal already in progress
            raise


def _shutdown_on_exit(api: Any, cid: str, raw: socket.socket) -> None:
    with contextlib.suppress(Exception):
        api.wait(cid)
    with contextlib.suppress(OSError):
        raw.shutdown(socket.SHUT_RDWR)


def job_error(uid: str, kind: str, result: JobResult, timeout: float) -> CodehubError:
    """The typed error a failed job stands for, with the tail of its log."""
    context: dict[str, Any] = {
        "uid": uid,
        "job": kind,
        "exit_code": result.exit_code,
        **{k.lower(): v for k, v in result.fields.items()},
    }
    if result.timed_out:
        return OperationTimeoutError(
            f"{kind} job for {uid} exceeded {timeout:g}s and was killed",
            code=ErrorCode.UNKNOWN,
            context=context,
        )
    code_text = result.fields.get("CODEHUB_ERROR", "UNKNOWN")
    try:
        code = ErrorCode(code_text)
    except ValueError:
        code = ErrorCode.UNKNOWN
    step = result.fields.get("STEP", "")
    tail = " | ".join(line for line in result.log.splitlines()[-5:] if "RESULT=" not in line)[:300]
    detail = f" at {step}" if step else ""
    if result.exit_code == 137 and "RESULT" not in result.fields:
        detail = " (killed)"
    message = f"{kind} job for {uid} failed{detail}: exit {result.exit_code}"
    if tail:
        message += f"; log: {tail}"
    return ActionFailedError(message, code=code, context=context)


class JobRunner:
    """Runs one job container at a time to completion and never leaves it behind."""

    def __init__(
        self, config: DockerConfig, engine: DockerEngine, secrets: tuple[str, ...]
    ) -> None:
        self.config = config
        self.engine = engine
        self._secrets = secrets
        #: Test hook: called with (kind, container id) right after a job starts.
        self.on_job_started: Callable[[str, str], None] | None = None

    def run(
        self,
        uid: str,
        kind: str,
        script: str,
        *,
        read_only: bool,
        consume_stdout: Callable[[Readable], Any] | None = None,
        feed_stdin: Callable[[Writable], Any] | None = None,
        on_stderr: Callable[[bytes], None] | None = None,
    ) -> tuple[JobResult, BaseException | None, Any]:
        """Run one job; return its result, the data path's exception and its return value.

        The data path failing (or the timeout passing) kills the job. ``on_stderr`` sees
        the job's stderr as it arrives while ``consume_stdout`` runs.
        """
        client = self.engine.client_sync()
        name = f"{naming.container_name(uid)}-{kind}-job"
        cid = self._create(client, uid, kind, name, script, read_only, feed_stdin is not None)
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            try:
                client.api.kill(cid)
            except Exception:
                log.warning("job=%s kill after timeout failed", name)

        timer = threading.Timer(self.config.job_timeout, kill)
        timer.daemon = True
        try:
            data = self._start_and_stream(
                client.api, cid, kind, timer, consume_stdout, feed_stdin, on_stderr
            )
            exit_code, text = self._collect(client.api, cid, data, feed_stdin is not None)
        except CodehubError:
            raise
        except Exception as exc:
            raise translate_error(
                exc, action=f"run {kind} job", subject=name, secrets=self._secrets
            ) from exc
        finally:
            timer.cancel()
            with contextlib.suppress(Exception):
                remove_container(client, cid)
        result = JobResult(exit_code, text, parse_job_log(text), timed_out.is_set())
        log.info(
            "job=%s uid=%s exit=%s result=%s code=%s",
            kind,
            uid,
            exit_code,
            result.fields.get("RESULT", "NONE"),
            result.fields.get("CODEHUB_ERROR", ""),
        )
        return result, data.error, data.result

    def _create(
        self,
        client: docker.DockerClient,
        uid: str,
        kind: str,
        name: str,
        script: str,
        read_only: bool,
        stdin: bool,
    ) -> str:
        api = client.api
        labels = scoped_labels(
            self.config,
            naming.workspace_labels(uid),
            {naming.LABEL_ROLE: ROLE_JOB, LABEL_JOB_KIND: kind},
        )
        volume = naming.volume_name(uid)
        host_config = api.create_host_config(
            binds={volume: {"bind": DATA, "mode": "ro" if read_only else "rw"}},
            network_mode="none",
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            privileged=False,
        )
        kwargs: dict[str, Any] = {
            "command": ["sh", "-c", script],
            "user": naming.WORKSPACE_USER,
            "name": name,
            "labels": labels,
            "host_config": host_config,
            "stdin_open": stdin,
            "detach": False,
            "working_dir": "/",
        }
        try:
            try:
                created = api.create_container(self.config.job_image, **kwargs)
            except docker.errors.APIError as exc:
                if exc.status_code != 409:  # 409: the name is taken
                    raise
                remove_container(client, name)  # left over by a crashed run
                created = api.create_container(self.config.job_image, **kwargs)
        except Exception as exc:
            raise translate_error(
                exc,
                action=f"create {kind} job",
                subject=name,
                api_error_code=ErrorCode.CONTAINER_CREATE_FAILED,
                secrets=self._secrets,
            ) from exc
        return str(created["Id"])

    def _start_and_stream(
        self,
        api: Any,
        cid: str,
        kind: str,
        timer: threading.Timer,
        consume_stdout: Callable[[Readable], Any] | None,
        feed_stdin: Callable[[Writable], Any] | None,
        on_stderr: Callable[[bytes], None] | None = None,
    ) -> DataPath:
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
                return _consume(api, cid, attach, consume_stdout, on_stderr)
            if feed_stdin is not None:
                return _feed(api, cid, attach, feed_stdin)
            return DataPath()
        finally:
            if attach is not None:
                with contextlib.suppress(Exception):
                    attach.close()

    @staticmethod
    def _collect(api: Any, cid: str, data: DataPath, stdout_in_logs: bool) -> tuple[int, str]:
        status = api.wait(cid)
        exit_code = int(status.get("StatusCode", -1))
        logs = api.logs(cid, stdout=stdout_in_logs, stderr=True, tail=200)
        text = logs.decode("utf-8", "replace") if isinstance(logs, bytes) else str(logs)
        if data.demux is not None and not text.strip():
            text = data.demux.stderr.decode("utf-8", "replace")
        return exit_code, text


def _consume(
    api: Any,
    cid: str,
    attach: Any,
    consume: Callable[[Readable], Any],
    on_stderr: Callable[[bytes], None] | None = None,
) -> DataPath:
    demux = DemuxReader(attach, on_stderr)
    data = DataPath(demux=demux)
    try:
        data.result = consume(io.BufferedReader(demux, CHUNK))
    except BaseException as exc:
        data.error = exc
        with contextlib.suppress(Exception):
            api.kill(cid)
    return data


def _feed(api: Any, cid: str, attach: Any, feed: Callable[[Writable], Any]) -> DataPath:
    data = DataPath()
    raw = raw_socket(attach)
    # The engine does not always close a stdin-only attach when the container dies
    # (killed, timed out, crashed), and a blocked sendall would then hang the restore
    # forever: shut the socket on exit.
    threading.Thread(target=_shutdown_on_exit, args=(api, cid, raw), daemon=True).start()
    try:
        stdin = io.BufferedWriter(SocketWriter(raw), CHUNK)
        data.result = feed(stdin)
        stdin.flush()
    except BaseException as exc:
        data.error = exc
        with contextlib.suppress(Exception):
            api.kill(cid)
    finally:
        with contextlib.suppress(Exception):
            raw.shutdown(socket.SHUT_WR)
    return data
