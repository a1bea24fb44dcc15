"""The job-gzip archive path's plumbing: member check, inflate, tee, progress, parts.

No Docker, no S3: the multipart test drives ``put_parallel`` with a recording stand-in
for minio's multipart calls.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import queue
import tarfile
import threading
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from codehub.adapters.archive_format import NeedsFilteringError, verify_for_archive
from codehub.adapters.s3_object_store import put_parallel
from codehub.adapters.storage_streams import (
    InflateReader,
    Progress,
    QueueReader,
    UploadAborted,
    VerifiedUploadSink,
)


def tar_of(*entries: tuple[str, bytes | None, bytes]) -> bytes:
    """entries: (name, data or None for a directory, type)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        root = tarfile.TarInfo(".")
        root.type = tarfile.DIRTYPE
        tar.addfile(root)
        for name, data, kind in entries:
            member = tarfile.TarInfo(name)
            member.type = kind
            if kind == tarfile.SYMTYPE:
                member.linkname = "/usr/bin/python3"
            if data is not None:
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
            else:
                tar.addfile(member)
    return buf.getvalue()


CLEAN = tar_of(
    ("./d", None, tarfile.DIRTYPE),
    ("./d/f", os.urandom(300_000), tarfile.REGTYPE),
    ("./bin-python", None, tarfile.SYMTYPE),
)


def test_a_clean_stream_passes_and_is_read_to_its_end() -> None:
    src = io.BytesIO(CLEAN + b"\0" * 4096)
    stats = verify_for_archive(src)
    assert stats.members == 3
    assert stats.bytes_in_files == 300_000
    assert src.read() == b""


@pytest.mark.parametrize(
    ("name", "kind"),
    [("./pipe", tarfile.FIFOTYPE), ("./.codehub-restore.staging", tarfile.DIRTYPE)],
)
def test_a_member_the_filter_would_skip_asks_for_the_filter(name: str, kind: bytes) -> None:
    with pytest.raises(NeedsFilteringError):
        verify_for_archive(io.BytesIO(tar_of((name, None, kind))))


def test_a_device_asks_for_the_filter() -> None:
    with pytest.raises(NeedsFilteringError, match="device"):
        verify_for_archive(io.BytesIO(tar_of(("./dev", None, tarfile.CHRTYPE))))


def test_inflate_reader_counts_and_bounds_its_output() -> None:
    payload = b"\0" * (20 << 20)  # compresses ~1000x: one input chunk, many outputs
    counted: list[int] = []
    reader = InflateReader(io.BytesIO(gzip.compress(payload)), counted.append)
    out = bytearray()
    while chunk := reader.read(64 << 10):
        assert len(chunk) <= 64 << 10
        out += chunk
    assert bytes(out) == payload
    assert sum(counted) == len(payload) == reader.size
    assert max(counted) <= InflateReader.LIMIT


def read_all(reader: InflateReader) -> None:
    while reader.read(4096):
        pass


def test_inflate_reader_refuses_a_second_member_and_a_truncated_stream() -> None:
    two = gzip.compress(b"a" * 1000) + gzip.compress(b"b" * 1000)
    with pytest.raises(zlib.error):
        read_all(InflateReader(io.BytesIO(two)))
    whole = gzip.compress(os.urandom(100_000))
    with pytest.raises(EOFError):
        read_all(InflateReader(io.BytesIO(whole[: len(whole) // 2])))


def _drain(q: queue.Queue[bytes | BaseException | None]) -> bytes:
    reader = QueueReader(q)
    out = bytearray()
    while chunk := reader.read(1 << 20):
        out += chunk
    return bytes(out)


def test_verified_sink_uploads_only_after_complete() -> None:
    compressed = gzip.compress(CLEAN)
    q: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=100)
    uploader: Future[None] = Future()
    sink = VerifiedUploadSink(q, uploader, lambda r: verify_for_archive(InflateReader(r)))
    for i in range(0, len(compressed), 7000):
        sink.write(compressed[i : i + 7000])
    stats = sink.end_of_stream()
    assert stats.members == 3
    assert None not in list(q.queue)  # the uploader has not seen the end yet
    sink.complete()
    out = _drain(q)
    assert out == compressed
    assert sink.sha256.hexdigest() == hashlib.sha256(compressed).hexdigest()
    assert sink.size == len(compressed)


def test_verified_sink_stops_the_producer_when_the_check_fails() -> None:
    compressed = gzip.compress(tar_of(("./pipe", None, tarfile.FIFOTYPE)) + os.urandom(8 << 20))
    q: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=1000)
    uploader: Future[None] = Future()
    sink = VerifiedUploadSink(q, uploader, lambda r: verify_for_archive(InflateReader(r)))

    def produce() -> None:
        for i in range(0, len(compressed), 1 << 16):
            sink.write(compressed[i : i + (1 << 16)])
        sink.end_of_stream()

    with pytest.raises(NeedsFilteringError):
        produce()
    sink.fail(RuntimeError("fall back"))
    with pytest.raises(UploadAborted):
        _drain(q)


def test_progress_is_throttled_monotonic_and_ends_at_its_total() -> None:
    calls: list[tuple[int, int | None]] = []
    progress = Progress(lambda d, t: calls.append((d, t)), interval=3600)
    for _ in range(1000):
        progress.add(10)
    assert len(calls) == 1  # the first add; the rest fall inside the interval
    progress.finish(12_345)
    assert calls[-1] == (12_345, 12_345)

    calls.clear()
    fast = Progress(lambda d, t: calls.append((d, t)), total=500, interval=0)
    for _ in range(100):
        fast.add(10)  # reaches 1000, reported capped at the estimate
    fast.restart()
    fast.add(5)  # a restarted count never shows as a step back
    fast.finish()
    done = [d for d, _ in calls]
    assert done == sorted(done)
    assert all(d <= 500 for d, t in calls[:-1])
    assert calls[-1][0] == calls[-1][1]


def test_progress_survives_a_failing_callback() -> None:
    def boom(done: int, total: int | None) -> None:
        raise RuntimeError("ui went away")

    progress = Progress(boom, interval=0)
    progress.add(1)
    progress.finish()


class RecordingMultipart:
    """Stands in for minio's multipart calls; counts parts in flight."""

    def __init__(self, fail_part: int | None = None) -> None:
        self.parts: dict[int, bytes] = {}
        self.completed: list[Any] = []
        self.aborted = False
        self.in_flight = 0
        self.max_in_flight = 0
        self.fail_part = fail_part
        self.single: bytes | None = None
        self._lock = threading.Lock()

    def put_object(self, bucket: str, key: str, data: Any, length: int, **_: Any) -> None:
        self.single = data.read()

    def _create_multipart_upload(self, bucket: str, key: str, headers: Any) -> str:
        return "upload-1"

    def _upload_part(
        self, bucket: str, key: str, data: bytes, headers: Any, upload_id: str, number: int
    ) -> str:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if number == self.fail_part:
                raise OSError("connection reset")
            self.parts[number] = data
            return f"etag-{number}"
        finally:
            with self._lock:
                self.in_flight -= 1

    def _complete_multipart_upload(self, bucket: str, key: str, uid: str, parts: Any) -> None:
        self.completed = [(p.part_number, p.etag) for p in parts]

    def _abort_multipart_upload(self, bucket: str, key: str, upload_id: str) -> None:
        self.aborted = True


def test_parallel_upload_keeps_part_order_and_a_bound() -> None:
    data = os.urandom(10 * 1000 + 123)
    client = RecordingMultipart()
    put_parallel(client, "b", "k", io.BytesIO(data), 1000, 3)  # type: ignore[arg-type]
    assert client.completed == [(i, f"etag-{i}") for i in range(1, 12)]
    assert b"".join(client.parts[i] for i in range(1, 12)) == data
    assert client.max_in_flight <= 3
    assert not client.aborted


def test_parallel_upload_aborts_on_a_failed_part_or_reader() -> None:
    client = RecordingMultipart(fail_part=4)
    with pytest.raises(OSError):
        put_parallel(client, "b", "k", io.BytesIO(os.urandom(9000)), 1000, 2)  # type: ignore[arg-type]
    assert client.aborted
    assert not client.completed

    q: queue.Queue[bytes | BaseException | None] = queue.Queue()
    q.put(os.urandom(2500))
    q.put(RuntimeError("job killed"))
    client = RecordingMultipart()
    with pytest.raises(UploadAborted):
        put_parallel(client, "b", "k", QueueReader(q), 1000, 2)  # type: ignore[arg-type]
    assert client.aborted
    assert not client.completed


def test_a_small_stream_is_one_put() -> None:
    client = RecordingMultipart()
    put_parallel(client, "b", "k", io.BytesIO(b"small"), 1000, 3)  # type: ignore[arg-type]
    assert client.single == b"small"
    assert not client.parts


class DiscardingMultipart(RecordingMultipart):
    """Keeps no part data and holds every part until ``release`` (or a few seconds)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def _upload_part(
        self, bucket: str, key: str, data: bytes, headers: Any, upload_id: str, number: int
    ) -> str:
        # A bounded pipe stalls the producer here until the timeout; an unbounded one
        # would let it run to the end with everything in memory.
        if not self.release.wait(timeout=3):
            self.release.set()
        self.parts[number] = b""
        return f"etag-{number}"


def test_verified_path_memory_does_not_grow_with_stream_size() -> None:
    """job gzip -> tee -> (check | bounded parallel upload): peak is a few parts."""
    import tracemalloc

    part, total = 2 << 20, 96 << 20
    header = tarfile.TarInfo("./big")
    header.size = total
    q: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=4)
    client = DiscardingMultipart()
    tracemalloc.start()
    with ThreadPoolExecutor(1) as pool:
        uploader = pool.submit(put_parallel, client, "b", "k", QueueReader(q), part, 3)  # type: ignore[arg-type]
        sink = VerifiedUploadSink(q, uploader, lambda r: verify_for_archive(InflateReader(r)))
        deflate = zlib.compressobj(1, zlib.DEFLATED, 31)
        sink.write(deflate.compress(header.tobuf(tarfile.GNU_FORMAT)))
        block = os.urandom(1 << 20)  # incompressible: as many compressed bytes as raw
        for _ in range(total // len(block)):
            sink.write(deflate.compress(block))
        sink.write(deflate.compress(b"\0" * 1024) + deflate.flush())
        client.release.set()
        stats = sink.end_of_stream()
        sink.complete()
        uploader.result()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert stats.bytes_in_files == total
    assert len(client.completed) > total // part
    assert peak < 32 << 20, f"peak {peak >> 20} MiB for a {total >> 20} MiB stream"
