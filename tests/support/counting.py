"""A stand-in for the operator's API client that counts its calls by method name, so a
test can assert how many requests a reconcile made (docs/adr/0013-fewer-writes-per-operation.md)."""

from __future__ import annotations

from collections import Counter
from typing import Any


class CountingClient:
    """Wraps a client; every method called through it is counted in ``calls``."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: Counter[str] = Counter()

    def __getattr__(self, attr: str) -> Any:
        target = getattr(self.client, attr)
        if not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[attr] += 1
            return target(*args, **kwargs)

        return call
