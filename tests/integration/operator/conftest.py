"""Fixtures of the operator integration tests: ``real`` is the reconciler's context on the
real stack (the shared in-process API over PostgreSQL, the Docker engine, SeaweedFS S3)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import docker
import pytest
from real_stack import Real
from support.api import ApiFactory, Identity

from codehub.adapters.config import DockerConfig
from codehub.adapters.docker_instance import DockerInstanceController
from codehub.adapters.s3_object_store import S3ObjectStore
from codehub.adapters.volume_s3_storage import VolumeS3StorageProvider
from codehub.operator.context import OperatorContext
from codehub.operator.metrics import Metrics
from codehub.operator.settings import Settings

OPERATOR = Identity(
    "real-operator", "codehub-operator", "op", ("codehub:operator", "codehub:admin")
)


@pytest.fixture
async def real(
    make_api: ApiFactory,
    settings: Settings,
    docker_config: DockerConfig,
    s3_bucket: str,
    test_images: dict[str, str],
    docker_client: docker.DockerClient,
) -> AsyncIterator[Real]:
    api = await make_api("postgres", identities=[OPERATOR])
    client = api.client(OPERATOR.user)
    s3_config = dataclasses.replace(settings.s3_config(), bucket=s3_bucket)
    instances = DockerInstanceController(docker_config)
    storage = VolumeS3StorageProvider(docker_config, s3_config)
    ctx = OperatorContext(
        settings=dataclasses.replace(
            settings, reconciler_retry_backoff=1.0, reconciler_interval=1.0
        ),
        api=client,
        instances=instances,
        storage=storage,
        metrics=Metrics(),
    )
    try:
        yield Real(client, ctx, S3ObjectStore(s3_config), docker_client)
    finally:
        await instances.close()
        await storage.close()
