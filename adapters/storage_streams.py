"""Byte plumbing between a job container and S3, without Docker or S3 calls of its own.

The archive path is a pipeline of bounded stages, like ``tar | gzip | upload``
(docs/adr/0002-archive-data-path.md, docs/adr/0008-archive-data-path-performance.md):
:class:`DemuxReader` turns the Docker attach socket into the job's stdout (already
gzip), :class:`VerifiedUploadSink` hashes it and hands the same chunks through bounded
queues to the uploader (:class:`QueueReader`) and to a member check that reads it through
:class:`InflateReader`. :class:`GzipHashSink` is the fallback for trees the member policy
trims: plain tar from the job, compressed here. A failing producer makes the readers
raise, so the multipart upload is aborted and a partial object never exists.
:class:`Progress` throttles progress calls. :class:`SocketWriter` is the restore
direction: a clean tar into the job's stdin.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import queue
import socket
import struct
import threading
import time
import zlib
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

log = logging.getLogger(__name__)

CHUNK = 1 << 20
STDERR_LIMIT = 64 * 1024
#: Compressed 1 MiB chunks between compressor and uploader: one part's worth, so the
#: producer keeps going while the previous part is on the wire.
QUEUE_CHUNKS = 16
#: Compressed chunks waiting for the member check (it inflates faster than gzip deflates).
VERIFY_CHUNKS = 4
#: Progress calls are at least this far apart (seconds), whatever the data rate.
PROGRESS_INTERVAL = 0.25


class DemuxReader(io.RawIOBase):
    """stdout of a non-TTY Docker attach stream; stderr frames go to a bounded buffer."""

    def __init__(self, sock: Any, on_stderr: Callable[[bytes], None] | None = None) -> None:
        self._sock = sock
        self._remaining = 0
        self._on_stderr = on_stderr
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
            if self._on_stderr is not None:
                self._on_stderr(payload)
            if len(self.stderr) > STDERR_LIMIT:
                del self.stderr[: len(self.stderr) - STDERR_LIMIT]
        view = memoryview(b)[: min(len(b), self._remaining)]
        got = self._sock.readinto(view)
        if not got:
            return 0
        self._remaining -= got
        return int(got)


class UploadAborted(Exception):
    """The producer failed: the uploader must not complete the object."""


class QueueReader(io.RawIOBase):
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
                raise UploadAborted(str(item))
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


def put_checked(
    q: queue.Queue[Any], item: Any, consumer: Future[Any], aborted: threading.Event
) -> None:
    """Put into a bounded queue unless its consumer died (re-raise why) or we aborted."""
    while not aborted.is_set():
        if consumer.done():
            consumer.result()  # re-raises the consumer's failure
            raise UploadAborted("consumer stopped early")
        try:
            q.put(item, timeout=0.5)
            return
        except queue.Full:
            continue
    raise UploadAborted("aborted")


def put_failure(q: queue.Queue[Any], exc: BaseException) -> None:
    """Hand ``exc`` to a queue's reader even when the queue is full (drop one item)."""
    try:
        q.put_nowait(exc)
    except queue.Full:
        with contextlib.suppress(queue.Empty):
            q.get_nowait()
        with contextlib.suppress(queue.Full):
            q.put_nowait(exc)


class GzipHashSink(io.RawIOBase):
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
        if self._buf and (flush or len(self._buf) >= CHUNK):
            self._put(bytes(self._buf))
            self._buf.clear()

    def _put(self, item: bytes | None) -> None:
        put_checked(self._q, item, self._uploader, self._aborted)

    def _submit(self, item: bytes | None) -> None:
        while True:
            if self._error is not None:
                raise self._error
            if not self._thread.is_alive() and item is not None:
                raise UploadAborted("compressor stopped")
            try:
                self._work.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def write(self, b: Any) -> int:
        n = len(b)
        self.raw_size += n
        self._raw += b
        if len(self._raw) >= CHUNK:
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
        put_failure(self._q, exc)
        self._thread.join(timeout=5)


class Progress:
    """Throttled ``on_progress(done, total)`` calls from the data path's threads.

    ``done`` never goes down, even when the work restarts (the archive's filtering
    fallback): a restarted count is reported as at least what was already reported.
    Until the end ``done`` is capped at ``total``, since totals are estimates; the last
    call is ``(final, final)``. A failing callback is logged, never allowed to fail the
    transfer.
    """

    def __init__(
        self,
        callback: Callable[[int, int | None], None] | None,
        total: int | None = None,
        interval: float = PROGRESS_INTERVAL,
    ) -> None:
        self._callback = callback
        self.total = total
        self._interval = interval
        self._lock = threading.Lock()
        self._done = 0
        self._floor = 0
        self._reported = -1
        self._last_call = float("-inf")

    def set_total(self, total: int) -> None:
        with self._lock:
            self.total = total

    def add(self, n: int) -> None:
        if self._callback is None:
            return
        with self._lock:
            self._done += n
            now = time.monotonic()
            if now - self._last_call < self._interval:
                return
            self._last_call = now
            done = max(self._floor, self._done)
            if self.total is not None:
                done = min(done, self.total)
            if done <= self._reported:
                return
            self._reported = done
        self._call(done, self.total)

    def restart(self) -> None:
        """The work starts over: count from zero, report no less than before."""
        with self._lock:
            self._floor = max(self._floor, self._reported, 0)
            self._done = 0

    def finish(self, final: int | None = None) -> None:
        with self._lock:
            done = max(self._floor, self._done if final is None else final, self._reported)
        self._call(done, done)

    def _call(self, done: int, total: int | None) -> None:
        if self._callback is None:
            return
        try:
            self._callback(done, total)
        except Exception:
            log.exception("progress callback failed (ignored)")


class CountingReader:
    """Passes reads through and tells ``on_bytes`` how many bytes went by."""

    def __init__(self, src: Any, on_bytes: Callable[[int], None]) -> None:
        self._src = src
        self._on_bytes = on_bytes

    def read(self, size: int = -1, /) -> bytes:
        data: bytes = self._src.read(size)
        if data:
            self._on_bytes(len(data))
        return data


class InflateReader(io.RawIOBase):
    """The tar inside one gzip member, read in bounded pieces; counts what it inflates.

    Exactly one gzip member and nothing after it is accepted: tarfile's restore reader
    stops at the end of the first member, so anything beyond it would be data the check
    never saw and restore would never extract.
    """

    LIMIT = CHUNK

    def __init__(self, src: Any, on_bytes: Callable[[int], None] | None = None) -> None:
        self._src = src
        self._zip = zlib.decompressobj(31)
        self._on_bytes = on_bytes
        self._out = b""
        self._pos = 0
        self._eof = False
        self.size = 0

    def readable(self) -> bool:
        return True

    def _fill(self) -> None:
        while self._pos >= len(self._out) and not self._eof:
            if self._zip.eof:
                if self._zip.unused_data or self._src.read(1):
                    raise zlib.error("data after the end of the gzip stream")
                self._eof = True
                return
            data = self._zip.unconsumed_tail or self._src.read(CHUNK)
            out = self._zip.decompress(data, self.LIMIT)
            if not data and not out:
                raise EOFError("the gzip stream ended early")
            self._out, self._pos = out, 0
            self.size += len(out)
            if out and self._on_bytes is not None:
                self._on_bytes(len(out))

    def read(self, size: int = -1) -> bytes:
        self._fill()
        end = len(self._out) if size < 0 else self._pos + size
        chunk = self._out[self._pos : end]
        self._pos += len(chunk)
        return chunk

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


class VerifiedUploadSink:
    """Compressed bytes from the job: hashed, queued for upload and checked on the side.

    ``verify`` runs in its own thread on a copy of the stream (same chunks, no copies);
    its result comes back from :meth:`end_of_stream`. The uploader only sees the end of
    the stream when :meth:`complete` is called, i.e. after the check passed and the job
    exited well; :meth:`fail` makes both readers raise, so the upload is aborted.
    """

    def __init__(
        self,
        q: queue.Queue[bytes | BaseException | None],
        uploader: Future[None],
        verify: Callable[[QueueReader], Any],
    ) -> None:
        self._q = q
        self._uploader = uploader
        self._vq: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=VERIFY_CHUNKS)
        self._aborted = threading.Event()
        self._verifier: Future[Any] = Future()
        self.sha256 = hashlib.sha256()
        self.size = 0
        reader = QueueReader(self._vq)

        def run() -> None:
            try:
                self._verifier.set_result(verify(reader))
            except BaseException as exc:
                self._verifier.set_exception(exc)

        threading.Thread(target=run, name="archive-verify", daemon=True).start()

    def write(self, chunk: bytes) -> None:
        self.sha256.update(chunk)
        self.size += len(chunk)
        put_checked(self._vq, chunk, self._verifier, self._aborted)
        put_checked(self._q, chunk, self._uploader, self._aborted)

    def end_of_stream(self) -> Any:
        """Wait for the member check of the whole stream; raise what it raised."""
        put_checked(self._vq, None, self._verifier, self._aborted)
        return self._verifier.result()

    def complete(self) -> None:
        put_checked(self._q, None, self._uploader, self._aborted)

    def fail(self, exc: BaseException) -> None:
        self._aborted.set()
        put_failure(self._vq, exc)
        put_failure(self._q, exc)
        with contextlib.suppress(BaseException):
            self._verifier.exception(timeout=5)


class SocketWriter(io.RawIOBase):
    """The restore direction: writes go straight to the attach socket (stdin of the job)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self._sock.sendall(b)
        return len(b)


def raw_socket(sock: Any) -> socket.socket:
    """The plain socket under docker-py's attach wrapper (it needs shutdown(SHUT_WR))."""
    raw = getattr(sock, "_sock", sock)
    assert isinstance(raw, socket.socket)
    return raw
