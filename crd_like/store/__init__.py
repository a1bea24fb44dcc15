"""Versioned object storage for the API (kine-style: one global revision, an event log)."""

from codehub.crd_like.store.interface import (
    AdmissionCheck,
    AdmissionView,
    AlreadyExists,
    Conflict,
    Gone,
    Invalid,
    ListResult,
    Mutator,
    NotFound,
    RawListResult,
    RunningRef,
    Selectors,
    Store,
    StoreError,
    WatchEvent,
)

__all__ = [
    "AdmissionCheck",
    "AdmissionView",
    "AlreadyExists",
    "Conflict",
    "Gone",
    "Invalid",
    "ListResult",
    "Mutator",
    "NotFound",
    "RawListResult",
    "RunningRef",
    "Selectors",
    "Store",
    "StoreError",
    "WatchEvent",
]
