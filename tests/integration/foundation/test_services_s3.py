"""The SeaweedFS S3 server: objects round-trip and credentials are enforced."""

from __future__ import annotations

import io
import uuid
from urllib.parse import urlparse

import pytest
from minio import Minio
from minio.error import S3Error


def _client(env: dict[str, str], secret: str | None = None) -> Minio:
    url = urlparse(env["CODEHUB_S3_ENDPOINT"])
    return Minio(
        url.netloc,
        access_key=env["CODEHUB_S3_ACCESS_KEY"],
        secret_key=secret if secret is not None else env["CODEHUB_S3_SECRET_KEY"],
        secure=False,
    )


def test_endpoint_is_loopback(service_env: dict[str, str]) -> None:
    assert urlparse(service_env["CODEHUB_S3_ENDPOINT"]).hostname == "127.0.0.1"


def test_put_get_list_delete(service_env: dict[str, str], s3_bucket: str) -> None:
    # The run's bucket is shared with other tests: stay under a prefix of our own.
    p = f"foundation-{uuid.uuid4().hex[:8]}/"
    s3 = _client(service_env)
    data = b"x" * 100_000 + b"end"
    s3.put_object(s3_bucket, f"{p}dir/a.bin", io.BytesIO(data), len(data))
    s3.put_object(s3_bucket, f"{p}dir/b.txt", io.BytesIO(b"b"), 1)
    s3.put_object(s3_bucket, f"{p}other/c.txt", io.BytesIO(b"c"), 1)

    resp = s3.get_object(s3_bucket, f"{p}dir/a.bin")
    try:
        assert resp.read() == data
    finally:
        resp.close()
        resp.release_conn()
    names = sorted(
        o.object_name for o in s3.list_objects(s3_bucket, prefix=f"{p}dir/", recursive=True)
    )
    assert names == [f"{p}dir/a.bin", f"{p}dir/b.txt"]

    s3.remove_object(s3_bucket, f"{p}dir/a.bin")
    with pytest.raises(S3Error) as exc:
        s3.stat_object(s3_bucket, f"{p}dir/a.bin")
    assert exc.value.code in ("NoSuchKey", "NoSuchObject", "ResourceNotFound")
    remaining = sorted(o.object_name for o in s3.list_objects(s3_bucket, prefix=p, recursive=True))
    assert remaining == [f"{p}dir/b.txt", f"{p}other/c.txt"]


def test_wrong_secret_refused_without_leaking_it(
    service_env: dict[str, str], s3_bucket: str
) -> None:
    wrong = "wrong-" + service_env["CODEHUB_S3_SECRET_KEY"][::-1]
    key = f"foundation-denied-{uuid.uuid4().hex[:8]}.txt"
    s3 = _client(service_env, secret=wrong)
    with pytest.raises(S3Error) as exc:
        s3.put_object(s3_bucket, key, io.BytesIO(b"no"), 2)
    assert exc.value.code in ("SignatureDoesNotMatch", "AccessDenied", "InvalidAccessKeyId")
    text = f"{exc.value} {exc.value!r} {exc.value.message}"
    assert wrong not in text
    assert service_env["CODEHUB_S3_SECRET_KEY"] not in text
    with pytest.raises(S3Error):
        _client(service_env).stat_object(s3_bucket, key)


def test_unknown_access_key_refused(service_env: dict[str, str], s3_bucket: str) -> None:
    url = urlparse(service_env["CODEHUB_S3_ENDPOINT"])
    s3 = Minio(url.netloc, access_key="nobody", secret_key="nothing-at-all", secure=False)
    with pytest.raises(S3Error) as exc:
        s3.list_objects(s3_bucket).__next__()
    assert exc.value.code in ("InvalidAccessKeyId", "AccessDenied", "SignatureDoesNotMatch")
