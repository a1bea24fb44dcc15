"""Kubernetes resource quantities ("2", "500m", "4Gi") as the Docker engine wants them."""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Decimal, InvalidOperation

_BINARY_SUFFIXES = {
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
_DECIMAL_SUFFIXES = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QUANTITY_RE = re.compile(
    r"^(?P<num>[+]?(?:\d+(?:\.\d*)?|\.\d+))"
    r"(?:(?P<bin>Ki|Mi|Gi|Ti|Pi|Ei)|(?P<exp>[eE][+-]?\d+)|(?P<dec>[numkMGTPE]?))$"
)


def parse_quantity(text: str) -> Decimal:
    """Parse a Kubernetes resource quantity ("2", "500m", "4Gi", "1e3") into a Decimal.

    Raises ValueError for anything else, including negative values.
    """
    match = _QUANTITY_RE.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"not a resource quantity: {text!r}")
    try:
        number = Decimal(match["num"])
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only numbers
        raise ValueError(f"not a resource quantity: {text!r}") from exc
    if match["bin"]:
        return number * _BINARY_SUFFIXES[match["bin"]]
    if match["exp"]:
        return number * (Decimal(10) ** int(match["exp"][1:]))
    return number * _DECIMAL_SUFFIXES[match["dec"] or ""]


def cpu_to_nano_cpus(cpu: str) -> int:
    """CPU quantity to Docker ``NanoCpus`` ("2" -> 2e9, "500m" -> 5e8); must be > 0."""
    nano = (parse_quantity(cpu) * Decimal(10**9)).to_integral_value(rounding=ROUND_CEILING)
    if nano <= 0:
        raise ValueError(f"CPU limit must be positive: {cpu!r}")
    return int(nano)


def memory_to_bytes(memory: str) -> int:
    """Memory quantity to bytes ("4Gi" -> 4294967296, "1G" -> 10**9); must be > 0."""
    value = parse_quantity(memory).to_integral_value(rounding=ROUND_CEILING)
    if value <= 0:
        raise ValueError(f"memory limit must be positive: {memory!r}")
    return int(value)
