"""``codehub open NAME``: a single-use sign-in link to a workspace (docs/proxy.md).

The server mints it (``POST /proxy/v1/signin-links``) for a caller who may use the
workspace; opening it within a minute sets the proxy's session cookie and lands on the
workspace, which a page load wakes if it sleeps (docs/activity-and-ttl.md). The link
works once, so printing it is no lasting secret.
"""

from __future__ import annotations

import argparse
import os
import webbrowser
from typing import Any

from codehub.crd_like.client.api import ApiClient
from codehub.operator.cli.connection import resolve_connection, resolve_namespace, run
from codehub.operator.cli.console import CliError, err, out

LINKS_PATH = "/proxy/v1/signin-links"


async def signin_link(api: ApiClient, namespace: str, name: str) -> str:
    """A fresh single-use sign-in link to ``namespace/name``."""
    body: Any = await api.request(
        "POST", LINKS_PATH, json_body={"namespace": namespace, "name": name}
    )
    url = body.get("url") if isinstance(body, dict) else None
    if not isinstance(url, str) or not url:
        raise CliError("the server did not return a sign-in link")
    return url


def workspace_url(server: str, namespace: str, name: str) -> str:
    return f"{server.rstrip('/')}/w/{namespace}/{name}/"


def cmd_open(args: argparse.Namespace) -> int:
    conn = resolve_connection(args, os.environ)

    async def go() -> str:
        async with conn.client() as api:
            ns = await resolve_namespace(api, args, conn)
            return await signin_link(api, ns, args.name)

    url = run(go)
    out(url + "\n")
    if args.browser:
        if not webbrowser.open(url):
            raise CliError("no browser could be started; open the link above yourself")
        err("opened in the browser (the link works once, within a minute)")
    else:
        err("single-use sign-in link, valid for a minute; --browser opens it")
    return 0
