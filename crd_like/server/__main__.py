"""``python -m codehub.crd_like.server --listen 127.0.0.1:PORT [--insecure-http]``.

Reads only the environment variables the API needs (``ApiConfig.from_env``), so the
server can run without the operator package (crd_like never imports operator).
"""

from __future__ import annotations

import argparse
import logging
import sys

from codehub.crd_like.config import ApiConfig, ApiConfigError
from codehub.crd_like.server.app import run_server


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"--listen needs HOST:PORT, got {value!r}")
    return host or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codehub.crd_like.server")
    parser.add_argument("--listen", type=parse_listen, default=("127.0.0.1", 8443))
    parser.add_argument("--insecure-http", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = ApiConfig.from_env()
    except ApiConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    host, port = args.listen
    run_server(config, host, port, args.insecure_http)
    return 0


if __name__ == "__main__":
    sys.exit(main())
