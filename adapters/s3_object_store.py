"""S3 access over the ``minio`` client: the GC's ObjectStore and the provider's transfers.

Every minio, urllib3 and socket error is translated here (chained with ``from``) into
the product's hierarchy with a message built from the action, bucket, key and S3 error
code only: never from the client's exception text, never with credentials.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import io
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from typing import IO, Any, BinaryIO, TypeVar, cast
from urllib.parse import urlsplit

import certifi
import urllib3
from minio import Minio
from minio.datatypes import Part
from minio.deleteobjects import DeleteObject
from minio.error import InvalidResponseError, MinioException, S3Error, ServerError

from codehub.adapters.archive_format import Readable
from codehub.adapters.config import S3Config
from codehub.adapters.errors import (
    ActionFailedError,
    CodehubError,
    ErrorCode,
    UnreachableError,
)
from codehub.adapters.interfaces import ObjectInfo, ObjectStore

T = TypeVar("T")

PART_SIZE = 16 * 1024 * 1024
#: S3's limit of keys in one multi-object delete request.
DELETE_BATCH = 1000
_NOT_FOUND_CODES = {"NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound"}
_AUTH_CODES = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AuthorizationHeaderMalformed",
}


class ObjectNotFoundError(Exception):
    """Internal: the key does not exist (callers decide what that means)."""


def translate_s3_error(exc: BaseException, *, action: str, bucket: str, key: str = "") -> Exception:
    """Map a minio/urllib3/network exception to a CodehubError without secrets."""
    if isinstance(exc, CodehubError | ObjectNotFoundError):
        return exc
    where = f"S3 {action} s3://{bucket}/{key}" if key else f"S3 {action} in bucket {bucket!r}"
    context: dict[str, Any] = {"action": action, "bucket": bucket}
    if key:
        context["key"] = key
    if isinstance(exc, S3Error):
        context["s3_code"] = exc.code
        if exc.code in _NOT_FOUND_CODES:
            return ObjectNotFoundError(key)
        if exc.code in _AUTH_CODES:
            return ActionFailedError(
                f"{where}: access refused ({exc.code}); check the S3 access key and secret",
                code=ErrorCode.S3_ACCESS_ERROR,
                context=context,
            )
        if exc.code == "NoSuchBucket":
            return ActionFailedError(
                f"{where}: bucket does not exist", code=ErrorCode.S3_ACCESS_ERROR, context=context
            )
        return ActionFailedError(
            f"{where}: S3 error {exc.code}", code=ErrorCode.S3_ACCESS_ERROR, context=context
        )
    if isinstance(exc, ServerError):
        context["status"] = exc.status_code
        return UnreachableError(
            f"{where}: server error HTTP {exc.status_code}",
            code=ErrorCode.S3_ACCESS_ERROR,
            context=context,
        )
    if isinstance(exc, InvalidResponseError):
        return UnreachableError(
            f"{where}: invalid response from S3", code=ErrorCode.S3_ACCESS_ERROR, context=context
        )
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError | MinioException):
        return UnreachableError(
            f"{where}: S3 endpoint unreachable ({type(exc).__name__})",
            code=ErrorCode.S3_ACCESS_ERROR,
            context=context,
        )
    return ActionFailedError(
        f"{where}: unexpected {type(exc).__name__}", code=ErrorCode.S3_ACCESS_ERROR, context=context
    )


def make_minio(config: S3Config, *, timeout: float = 30.0, retries: int = 2) -> Minio:
    """A client with bounded timeouts and retries: an unreachable S3 fails in seconds."""
    url = urlsplit(config.endpoint if "://" in config.endpoint else f"http://{config.endpoint}")
    secure = url.scheme == "https"
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=min(timeout, 5.0), read=timeout),
        maxsize=10,
        cert_reqs="CERT_REQUIRED" if secure else "CERT_NONE",
        ca_certs=certifi.where() if secure else None,
        retries=urllib3.Retry(
            total=retries, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
        ),
    )
    return Minio(
        url.netloc,
        access_key=config.access_key,
        secret_key=config.secret_key,
        secure=secure,
        region=config.region,
        http_client=http,
    )


class S3Access:
    """Blocking S3 operations for worker threads; all errors already translated."""

    def __init__(self, config: S3Config, client: Minio | None = None) -> None:
        self.config = config
        self.bucket = config.bucket
        self._client = client or make_minio(config)

    @property
    def client(self) -> Minio:
        return self._client

    def _call(self, fn: Callable[[], T], *, action: str, key: str = "") -> T:
        try:
            return fn()
        except Exception as exc:
            translated = translate_s3_error(exc, action=action, bucket=self.bucket, key=key)
            if translated is exc:
                raise
            raise translated from exc

    def head(self, key: str) -> int | None:
        """Size of ``key``, or None when it does not exist."""
        try:
            stat = self._call(
                lambda: self._client.stat_object(self.bucket, key), action="head", key=key
            )
        except ObjectNotFoundError:
            return None
        return int(stat.size or 0)

    def get_bytes(self, key: str, limit: int = 1 << 20) -> bytes | None:
        """A small object's content, or None when it does not exist."""

        def fetch() -> bytes:
            resp = self._client.get_object(self.bucket, key)
            try:
                return bytes(resp.read(limit))
            finally:
                resp.close()
                resp.release_conn()

        try:
            return self._call(fetch, action="get", key=key)
        except ObjectNotFoundError:
            return None

    def download(
        self,
        key: str,
        sink: IO[bytes],
        chunk: int = 1 << 20,
        on_bytes: Callable[[int], None] | None = None,
    ) -> tuple[str, int] | None:
        """Stream ``key`` into ``sink``; return (sha256 hex, size) or None if missing."""

        def fetch() -> tuple[str, int]:
            digest = hashlib.sha256()
            size = 0
            resp = self._client.get_object(self.bucket, key)
            try:
                for block in resp.stream(chunk):
                    digest.update(block)
                    sink.write(block)
                    size += len(block)
                    if on_bytes is not None:
                        on_bytes(len(block))
            finally:
                resp.close()
                resp.release_conn()
            return digest.hexdigest(), size

        try:
            return self._call(fetch, action="download", key=key)
        except ObjectNotFoundError:
            return None

    def put_bytes(self, key: str, data: bytes, content_type: str = "text/plain") -> None:
        self._call(
            lambda: self._client.put_object(
                self.bucket, key, io.BytesIO(data), len(data), content_type=content_type
            ),
            action="put",
            key=key,
        )

    def put_stream(
        self, key: str, reader: Readable, part_size: int = PART_SIZE, parallel: int = 1
    ) -> None:
        """Upload from a stream of unknown length (multipart above ``part_size``).

        If ``reader.read`` raises, the multipart upload is aborted and nothing appears
        under ``key``: a partial archive can never pass the HEAD check. ``parallel`` > 1
        keeps that many parts on the wire at once (memory: ``parallel + 1`` parts).
        """
        if parallel > 1:
            self._call(
                lambda: put_parallel(self._client, self.bucket, key, reader, part_size, parallel),
                action="upload",
                key=key,
            )
            return
        self._call(
            lambda: self._client.put_object(
                self.bucket,
                key,
                cast(BinaryIO, reader),
                -1,
                part_size=part_size,
                content_type="application/gzip",
                # minio queues parts for parallel uploads without bound: with one
                # uploader, reading stops while a part is sent and memory stays flat.
                num_parallel_uploads=1,
            ),
            action="upload",
            key=key,
        )

    def list(self, prefix: str) -> list[ObjectInfo]:
        def run() -> list[ObjectInfo]:
            return [
                ObjectInfo(key=o.object_name, size=int(o.size or 0), last_modified=o.last_modified)
                for o in self._client.list_objects(self.bucket, prefix=prefix, recursive=True)
                if o.object_name is not None and not o.is_dir
            ]

        try:
            return self._call(run, action="list", key=prefix)
        except ObjectNotFoundError:
            return []

    def open_listing(self, prefix: str) -> Iterator[ObjectInfo]:
        """A lazy listing: minio fetches one S3 page (1000 keys) per step of the iterator;
        advance it with ``next_page`` so errors are translated."""
        return (
            ObjectInfo(key=o.object_name, size=int(o.size or 0), last_modified=o.last_modified)
            for o in self._client.list_objects(self.bucket, prefix=prefix, recursive=True)
            if o.object_name is not None and not o.is_dir
        )

    def next_page(self, listing: Iterator[ObjectInfo], size: int) -> builtins.list[ObjectInfo]:
        try:
            return self._call(lambda: list(islice(listing, size)), action="list")
        except ObjectNotFoundError:
            return []

    def delete_many(self, keys: Iterable[str]) -> builtins.list[str]:
        """Multi-object deletes of at most ``DELETE_BATCH`` keys; the keys S3 refused."""
        failed: builtins.list[str] = []
        todo = iter(keys)
        while batch := list(islice(todo, DELETE_BATCH)):

            def run(batch: builtins.list[str] = batch) -> builtins.list[str]:
                errors = self._client.remove_objects(self.bucket, [DeleteObject(k) for k in batch])
                return [e.name for e in errors if e.name and e.code not in _NOT_FOUND_CODES]

            failed.extend(self._call(run, action="delete objects"))
        return failed

    def delete(self, key: str) -> None:
        try:
            self._call(
                lambda: self._client.remove_object(self.bucket, key), action="delete", key=key
            )
        except ObjectNotFoundError:
            return

    def ensure_bucket(self) -> None:
        def run() -> None:
            if not self._client.bucket_exists(self.bucket):
                self._client.make_bucket(self.bucket)

        self._call(run, action="create bucket")


def _read_part(reader: Readable, size: int) -> bytes:
    chunks: list[bytes] = []
    got = 0
    while got < size:
        chunk = reader.read(size - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)  # one copy, not two


def put_parallel(
    client: Minio, bucket: str, key: str, reader: Readable, part_size: int, parallel: int
) -> None:
    """Multipart upload with at most ``parallel`` parts in flight (bounded memory).

    minio's own parallel ``put_object`` reads ahead without bound, so this drives its
    multipart calls directly (minio 7 names them with a leading underscore). Any
    failure, including the reader raising, aborts the upload.
    """
    first = _read_part(reader, part_size)
    if len(first) < part_size:
        client.put_object(
            bucket, key, io.BytesIO(first), len(first), content_type="application/gzip"
        )
        return
    mc: Any = client
    upload_id = mc._create_multipart_upload(bucket, key, {"Content-Type": "application/gzip"})
    try:
        futures: list[Future[str]] = []
        with ThreadPoolExecutor(parallel, thread_name_prefix="s3-part") as pool:
            data, number = first, 1
            while data:
                if number > parallel:
                    futures[number - 1 - parallel].result()  # keep `parallel` in flight
                futures.append(
                    pool.submit(mc._upload_part, bucket, key, data, None, upload_id, number)
                )
                number += 1
                data = _read_part(reader, part_size)
            etags = [f.result() for f in futures]
        parts = [Part(i + 1, etag) for i, etag in enumerate(etags)]
        mc._complete_multipart_upload(bucket, key, upload_id, parts)
    except BaseException:
        with contextlib.suppress(Exception):
            mc._abort_multipart_upload(bucket, key, upload_id)
        raise


class S3ObjectStore(ObjectStore):
    """ObjectStore for the Archive GC; listing follows every page."""

    def __init__(self, config: S3Config, access: S3Access | None = None) -> None:
        self.access = access or S3Access(config)

    async def list(self, prefix: str) -> list[ObjectInfo]:
        return await asyncio.to_thread(self.access.list, prefix)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self.access.delete, key)

    async def iter_objects(
        self, prefix: str, page_size: int = 1000
    ) -> AsyncIterator[builtins.list[ObjectInfo]]:
        listing = self.access.open_listing(prefix)
        while page := await asyncio.to_thread(self.access.next_page, listing, page_size):
            yield page

    async def delete_many(self, keys: Iterable[str]) -> builtins.list[str]:
        return await asyncio.to_thread(self.access.delete_many, list(keys))

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.access.head, key) is not None
