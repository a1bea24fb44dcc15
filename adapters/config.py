"""Plain configuration values the adapters take (built from the one Settings object)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class S3Config:
    endpoint: str  # "http://127.0.0.1:8333"
    bucket: str
    access_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    region: str = "us-east-1"


@dataclass(frozen=True)
class DockerConfig:
    docker_host: str | None = None  # None: the docker package's default (DOCKER_HOST / socket)
    job_image: str = "codehub/storage-job:local"
    job_timeout: float = 1800.0
    start_timeout: float = 120.0
    health_path: str = "/healthz"
    #: Added to everything created and used as a filter in every listing, so concurrent
    #: test runs (or several installations on one engine) never see each other's things.
    scope_labels: Mapping[str, str] = field(default_factory=dict)
