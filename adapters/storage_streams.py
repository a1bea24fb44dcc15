"""Byte plumbing between a job container and S3, without Docker or S3 calls of its own.

The archive path is a pipeline of bounded stages, like ``tar | gzip | upload``
(docs/adr/0002-archive-data-path.md): :class:`DemuxReader` turns the Docker attach socket
into the job's stdout, :class:`GzipHashSink` compresses and hashes in its own thread and
hands 1 MiB chunks through a bounded queue to the uploader, which reads them through
:class:`QueueReader`. A failing producer makes the reader raise, so the multipart upload
is aborted and a partial object never exists. :class:`SocketWriter` is the restore
direction: a clean tar into the job's stdin.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import queue
import socket
import struct
import threading
import zlib
from concurrent.futures import Future
from typing import Any

CHUNK = 1 << 20
STDERR_LIMIT = 64 * 1024
#: Compressed 1 MiB chunks between compressor and uploader: one part's worth, so the
#: producer keeps going while the previous part is on the wire.
QUEUE_CHUNKS = 16


class DemuxReader(io.RawIOBase):
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
        while not self._aborted.is_set():
            if self._uploader.done():
                self._uploader.result()  # re-raises the upload failure
                raise UploadAborted("uploader stopped early")
            try:
                self._q.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
        raise UploadAborted("aborted")

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
        try:
            self._q.put_nowait(exc)
        except queue.Full:
            with contextlib.suppress(queue.Empty):
                self._q.get_nowait()
            self._q.put_nowait(exc)
        self._thread.join(timeout=5)


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
