"""The ``codehub`` command line: a kubectl-like client for workspaces plus the launchers of
the server, coordinator and local stack (docs/cli.md).

Any failure ends as one line on stderr and a non-zero exit code; ``--debug`` shows the
trace. The service commands import their component only when run, so a component missing
from the build is one clear line too.
"""

from __future__ import annotations

import argparse
import os
import traceback
from collections.abc import Sequence

from codehub.crd_like.client.api import ApiError
from codehub.crd_like.client.manifests import ManifestError
from codehub.operator.cli.arguments import opt
from codehub.operator.cli.console import CliError, err, mask_secrets
from codehub.operator.cli.output import format_api_error, one_line
from codehub.operator.cli.parser import build_parser

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    mask_secrets((opt(args, "token"), os.environ.get("CODEHUB_TOKEN")))
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # one line for everything; --debug shows the trace
        if opt(args, "debug"):
            traceback.print_exc()
        err(describe_failure(exc, _command(args)))
        return 1


def _command(args: argparse.Namespace) -> str:
    """``dev up``, ``db migrate``, ``get``: the words the user typed to pick the command."""
    words = [args.command, opt(args, "dev_command"), opt(args, "db_command")]
    return " ".join(w for w in words if w)


def describe_failure(exc: BaseException, command: str) -> str:
    """The one stderr line for a failed command."""
    if isinstance(exc, ManifestError):
        problems = exc.problems
        head = f"error: {one_line(problems[0])}"
        if len(problems) > 1:
            rest = " | ".join(one_line(p) for p in problems[1:])
            head += f" | {rest}"
        return head + " (nothing was applied)"
    if isinstance(exc, ApiError):
        return format_api_error(exc)
    if isinstance(exc, CliError):
        return f"error: {one_line(str(exc))}"
    if isinstance(exc, ModuleNotFoundError):
        missing = exc.name or ""
        if missing.startswith("codehub."):
            return (
                f"error: `codehub {command}` is not available in this build ({missing} is missing)"
            )
        return f"error: `codehub {command}` cannot start: missing module {missing!r}"
    text = one_line(str(exc)) or type(exc).__name__
    return f"error: unexpected {type(exc).__name__}: {text} (run with --debug for details)"
