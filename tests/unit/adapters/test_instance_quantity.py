"""Kubernetes quantities become Docker limits exactly (a wrong factor silently starves
or over-provisions a workspace)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from codehub.adapters.docker_instance import cpu_to_nano_cpus, memory_to_bytes, parse_quantity


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2", Decimal(2)),
        ("500m", Decimal("0.5")),
        ("0.5", Decimal("0.5")),
        ("1.5", Decimal("1.5")),
        (".25", Decimal("0.25")),
        ("4Gi", Decimal(4 * 2**30)),
        ("512Mi", Decimal(512 * 2**20)),
        ("1Ki", Decimal(1024)),
        ("1k", Decimal(1000)),
        ("1G", Decimal(10**9)),
        ("129e6", Decimal(129 * 10**6)),
        ("1E3", Decimal(1000)),
        ("250u", Decimal("0.00025")),
        (" 3 ", Decimal(3)),
    ],
)
def test_parse_quantity(text: str, expected: Decimal) -> None:
    assert parse_quantity(text) == expected


@pytest.mark.parametrize("text", ["", "-1", "abc", "1Gb", "1 Gi", "Gi", "1.2.3", "1ki", "0x10"])
def test_parse_quantity_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_quantity(text)


@pytest.mark.parametrize(
    ("cpu", "nano"),
    [("2", 2_000_000_000), ("500m", 500_000_000), ("0.1", 100_000_000), ("1n", 1)],
)
def test_cpu_to_nano_cpus(cpu: str, nano: int) -> None:
    assert cpu_to_nano_cpus(cpu) == nano


@pytest.mark.parametrize(
    ("memory", "size"),
    [("4Gi", 4 * 2**30), ("512Mi", 512 * 2**20), ("1G", 10**9), ("1500m", 2), ("100", 100)],
)
def test_memory_to_bytes(memory: str, size: int) -> None:
    assert memory_to_bytes(memory) == size


@pytest.mark.parametrize("text", ["0", "0m"])
def test_zero_limits_rejected(text: str) -> None:
    with pytest.raises(ValueError):
        cpu_to_nano_cpus(text)
    with pytest.raises(ValueError):
        memory_to_bytes(text)
