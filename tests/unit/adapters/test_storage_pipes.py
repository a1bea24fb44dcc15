"""The provider's stream plumbing and error translation, without Docker or S3."""

from __future__ import annotations

import gzip
import hashlib
import queue
import struct
from concurrent.futures import Future
from typing import Any

import pytest
from minio.error import S3Error
from urllib3.exceptions import MaxRetryError

from codehub.adapters.errors import ActionFailedError, ErrorCode, UnreachableError
from codehub.adapters.s3_object_store import ObjectNotFoundError, translate_s3_error
from codehub.adapters.storage_streams import (
    DemuxReader,
    GzipHashSink,
    QueueReader,
    UploadAborted,
)


class FakeSock:
    def __init__(self, data: bytes, step: int = 7) -> None:
        self.data, self.pos, self.step = data, 0, step

    def read(self, n: int) -> bytes:
        n = min(n, self.step)
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out

    def readinto(self, b: Any) -> int:
        out = self.read(len(b))
        b[: len(out)] = out
        return len(out)


def frame(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + struct.pack(">I", len(payload)) + payload


def test_demux_separates_stdout_and_stderr() -> None:
    wire = frame(1, b"hello ") + frame(2, b"RESULT=OK\n") + frame(1, b"world") + frame(1, b"")
    reader = DemuxReader(FakeSock(wire))
    got = bytearray()
    buf = bytearray(4)
    while n := reader.readinto(buf):
        got += buf[:n]
    assert bytes(got) == b"hello world"
    assert bytes(reader.stderr) == b"RESULT=OK\n"


def test_gzip_sink_and_queue_reader_round_trip() -> None:
    q: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=100)
    uploader: Future[None] = Future()
    sink = GzipHashSink(q, uploader, 6)
    payload = b"abc" * 500_000
    for i in range(0, len(payload), 4096):
        sink.write(payload[i : i + 4096])
    sink.finish()
    reader = QueueReader(q)
    out = b""
    while chunk := reader.read(100_000):
        out += chunk
    assert gzip.decompress(out) == payload
    assert sink.sha256.hexdigest() == hashlib.sha256(out).hexdigest()
    assert sink.size == len(out)


def test_queue_reader_raises_when_producer_failed() -> None:
    q: queue.Queue[bytes | BaseException | None] = queue.Queue()
    q.put(b"partial")
    q.put(RuntimeError("job killed"))
    reader = QueueReader(q)
    assert reader.read(100) == b"partial"
    with pytest.raises(UploadAborted):
        reader.read(100)


def _s3_error(code: str) -> S3Error:
    return S3Error(None, code, "message with nothing secret", "/b/k", "req", "host")  # type: ignore[arg-type]


def test_translate_s3_errors() -> None:
    denied = translate_s3_error(
        _s3_error("SignatureDoesNotMatch"), action="get", bucket="b", key="k"
    )
    assert isinstance(denied, ActionFailedError)
    assert denied.code is ErrorCode.S3_ACCESS_ERROR
    assert "access refused" in str(denied)
    missing = translate_s3_error(_s3_error("NoSuchKey"), action="get", bucket="b", key="k")
    assert isinstance(missing, ObjectNotFoundError)
    down = translate_s3_error(
        MaxRetryError(None, "/b/k", reason=ConnectionRefusedError()),  # type: ignore[arg-type]
        action="list",
        bucket="b",
    )
    assert isinstance(down, UnreachableError)
    assert down.code is ErrorCode.S3_ACCESS_ERROR
    assert down.retryable


def test_pipeline_memory_does_not_grow_with_stream_size() -> None:
    """tar -> gzip -> bounded queue -> part-sized reads: peak memory is a few parts."""
    import os
    import threading
    import time
    import tracemalloc

    q: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=16)
    uploader: Future[None] = Future()
    block = os.urandom(1 << 20)  # incompressible: output as large as input
    total = 96 << 20
    received = 0
    part = 16 << 20

    def consume() -> None:
        nonlocal received
        reader = QueueReader(q)
        while True:
            got = b""
            while len(got) < part:  # like minio's read_part_data
                chunk = reader.read(part - len(got))
                if not chunk:
                    break
                got += chunk
            received += len(got)
            time.sleep(0.5)  # a slow upload: an unbounded pipe would pile up here
            if len(got) < part:
                return

    tracemalloc.start()
    consumer = threading.Thread(target=consume)
    consumer.start()
    sink = GzipHashSink(q, uploader, 0)  # level 0: a producer faster than the upload
    for _ in range(total // len(block)):
        for i in range(0, len(block), 64 << 10):
            sink.write(block[i : i + (64 << 10)])
    sink.finish()
    consumer.join()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert received > total  # gzip of random data is slightly larger
    assert peak < 64 << 20, f"peak {peak >> 20} MiB for a {total >> 20} MiB stream"
