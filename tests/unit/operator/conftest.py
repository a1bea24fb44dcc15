"""Fixtures shared by the operator's unit tests (the API harness is ``make_api``)."""

from __future__ import annotations

import pytest
from support.api import ApiFactory

from codehub.crd_like.client.api import ApiClient


@pytest.fixture
async def operator_client(make_api: ApiFactory) -> ApiClient:
    """The operator's ApiClient on the in-process API (MemoryStore, default settings)."""
    return (await make_api()).client("operator")
