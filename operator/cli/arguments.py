"""Values on the command line: durations, listen addresses, resource names, optional flags."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from codehub.crd_like.identity import GROUP, PLURAL, SHORT_NAMES, SINGULAR
from codehub.operator.cli.console import CliError

RESOURCE_ALIASES = frozenset(
    (*SHORT_NAMES, SINGULAR, PLURAL, f"{SINGULAR}.{GROUP}", f"{PLURAL}.{GROUP}")
)


def opt(args: argparse.Namespace, name: str) -> Any:
    """A flag that may be absent: connection flags default to SUPPRESS (kubectl style)."""
    return getattr(args, name, None)


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def resource_and_names(resource: str, names: Sequence[str]) -> list[str]:
    """Accept ``ws NAME``, ``workspace NAME`` and ``ws/NAME`` forms."""
    if "/" in resource:
        kind, _, name = resource.partition("/")
        check_resource(kind)
        return [name, *names]
    check_resource(resource)
    return list(names)


def check_resource(resource: str) -> None:
    if resource.lower() not in RESOURCE_ALIASES:
        raise CliError(
            f'the server doesn\'t have a resource type "{resource}" '
            f"(codehub serves {PLURAL}: {', '.join(SHORT_NAMES)}, {SINGULAR}, {PLURAL})"
        )


def parse_duration(text: str) -> float:
    """``300``, ``300s``, ``5m``, ``1h``, ``1h30m`` -> seconds."""
    raw = text.strip().lower()
    if not raw:
        raise ValueError("empty duration")
    try:
        return float(raw)
    except ValueError:
        pass
    total = 0.0
    number = ""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0}
    for ch in raw:
        if ch.isdigit() or ch == ".":
            number += ch
        elif ch in units and number:
            total += float(number) * units[ch]
            number = ""
        else:
            raise ValueError(f"invalid duration {text!r}")
    if number:
        raise ValueError(f"invalid duration {text!r} (missing unit)")
    return total


def duration_arg(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def listen_arg(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)
