"""The native edge's nginx configuration, generated from settings (docs/proxy.md).

nginx only moves bytes: for each request under ``/w/{namespace}/{name}/`` it asks the
server (``edge.py``) who may pass and where to; a 200 sends the request straight to the
workspace's published port on 127.0.0.1, anything else hands the original request to the
server's Python proxy, which answers as it always has. Everything else (the API, watches,
SSE, sign-in and the proxy's pages) is passed to the server over loopback, unbuffered.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .edge import EDGE_AUTH_PATH, SECRET_HEADER
from .routing import LINK_PATH, PAGES_NAMESPACE, PREFIX

#: Requests per keep-alive connection, client side and upstream (nginx's default, 1000,
#: closes a busy connection every few tenths of a second: a new TLS handshake, or a new
#: connection through the workspace's published port).
KEEPALIVE_REQUESTS = 10000


@dataclass(frozen=True)
class EdgeConfig:
    """Where nginx listens, the server it fronts and the files it owns."""

    #: The public HTTPS listener, ``host:port``.
    listen: str
    #: The server's plain-HTTP loopback listener, ``127.0.0.1:port``.
    app: str
    #: The server's certificate and key; None serves plain HTTP (benchmarks only).
    cert: Path | None
    key: Path | None
    secret: str
    #: nginx's pid file, logs, temporary files and auth cache live here.
    workdir: Path
    #: Seconds a "may pass" answer is reused for the same credential and URL (0: never;
    #: nginx counts cache lifetimes in whole seconds).
    auth_cache: int = 0
    #: nginx worker processes; 0 is nginx's ``auto`` (one per core).
    workers: int = 1
    #: The workers' user when nginx starts as root (it would switch to ``nobody``, which
    #: cannot use the files under ``workdir``); None when it starts as anyone else.
    user: str | None = None
    #: Workspace endpoints (``127.0.0.1:port``) given a keep-alive connection pool; any
    #: other endpoint the server names is reached with a connection per request.
    upstreams: tuple[str, ...] = ()


def _app_headers(cfg: EdgeConfig) -> str:
    """Towards the server: the secret tells it the forwarded headers are nginx's own."""
    return f"""
      proxy_set_header Host $http_host;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $codehub_connection;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header {SECRET_HEADER} "{cfg.secret}";"""


def _auth_location(cfg: EdgeConfig) -> str:
    """The subrequest to the server, and its short cache of "may pass" answers.

    No ``proxy_cache_lock``: its waiters poll every 500 ms, so each expiry stalled every
    concurrent request on the key for up to half a second; a few concurrent misses each
    second cost the server far less. ``open_file_cache`` keeps the cache files open: a hit
    reads the answer with one ``pread`` instead of open, stat, read and close; a file
    nginx replaced (another inode) is opened anew, and expiry is read from the file
    itself, so it changes no answer (docs/adr/0012-native-edge.md, second pass).
    """
    cache = ""
    if cfg.auth_cache > 0:
        cache = f"""
      proxy_buffering on;
      proxy_cache codehub_auth;
      proxy_cache_key "$http_authorization|$http_cookie|$http_upgrade|$request_uri";
      proxy_cache_valid 200 {cfg.auth_cache}s;
      proxy_ignore_headers Cache-Control Expires Set-Cookie;
      open_file_cache max=1024 inactive=2s;
      open_file_cache_valid 1s;"""
    return f"""
    location = /_codehub_edge_auth {{
      internal;
      proxy_pass http://codehub_app{EDGE_AUTH_PATH};
      proxy_pass_request_body off;
      proxy_pass_request_headers off;
      proxy_set_header Content-Length "";
      proxy_set_header Connection "";
      proxy_set_header {SECRET_HEADER} "{cfg.secret}";
      proxy_set_header X-Original-Method $request_method;
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Original-Host $http_host;
      proxy_set_header X-Original-Cookie $http_cookie;
      proxy_set_header X-Original-Authorization $http_authorization;
      proxy_set_header X-Original-Accept $http_accept;
      proxy_set_header X-Original-Upgrade $http_upgrade;
      proxy_set_header X-Original-Origin $http_origin;{cache}
    }}"""


def _pools(cfg: EdgeConfig) -> str:
    """An upstream group per known endpoint, and the map choosing it (nginx keeps
    connections alive only to a named group, never to an address in a variable)."""
    keep = f"keepalive 16; keepalive_requests {KEEPALIVE_REQUESTS};"
    groups = "".join(
        f"  upstream codehub_w{i} {{ server {hp}; {keep} }}\n" for i, hp in enumerate(cfg.upstreams)
    )
    entries = "".join(f'    "{hp}" codehub_w{i};\n' for i, hp in enumerate(cfg.upstreams))
    return (
        f"{groups}  map $codehub_upstream $codehub_pool {{\n{entries}"
        "    default $codehub_upstream;\n  }"
    )


def _listen(cfg: EdgeConfig) -> str:
    if cfg.cert is None or cfg.key is None:
        return f"    listen {cfg.listen};"
    return f"""    listen {cfg.listen} ssl;
    ssl_certificate {cfg.cert};
    ssl_certificate_key {cfg.key};
    ssl_session_cache shared:codehub_tls:1m;"""


def _server(cfg: EdgeConfig) -> str:
    """The public listener: workspaces through ``auth_request``, the rest to the server."""
    return f"""  server {{
{_listen(cfg)}
    location / {{
      proxy_pass http://codehub_app;{_app_headers(cfg)}
    }}
    location ^~ {PREFIX}{PAGES_NAMESPACE}/edge- {{
      return 404;
    }}
    location {PREFIX}{PAGES_NAMESPACE}/ {{
      proxy_pass http://codehub_app;{_app_headers(cfg)}
    }}
    location {PREFIX} {{
      auth_request /_codehub_edge_auth;
      auth_request_set $codehub_upstream $upstream_http_x_codehub_upstream;
      auth_request_set $codehub_path $upstream_http_x_codehub_path;
      auth_request_set $codehub_prefix $upstream_http_x_codehub_prefix;
      auth_request_set $codehub_cookie $upstream_http_x_codehub_cookie;
      error_page 401 = @app;
      proxy_pass http://$codehub_pool$codehub_path;
      proxy_set_header Connection "";
      proxy_set_header Authorization "";
      proxy_set_header Cookie $codehub_cookie;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header X-Forwarded-Prefix $codehub_prefix;
      proxy_set_header {SECRET_HEADER} "";
      proxy_pass_header Server;
      proxy_pass_header Date;
      proxy_redirect ~^(/(?!/).*)$ $codehub_prefix$1;
    }}
    location @app {{
      proxy_pass http://codehub_app;{_app_headers(cfg)}
    }}{_auth_location(cfg)}
  }}"""


def render(cfg: EdgeConfig) -> str:
    """The whole ``nginx.conf``; the secret is in it, so write it owner-only."""
    d = cfg.workdir
    temp = "\n".join(
        f"  {kind}_temp_path {d / 'tmp' / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    cache_path = (
        f"  proxy_cache_path {d / 'auth-cache'} levels=1 keys_zone=codehub_auth:1m"
        " max_size=16m inactive=2s use_temp_path=off;"
        if cfg.auth_cache > 0
        else ""
    )
    user = f"user {cfg.user};\n" if cfg.user else ""
    return f"""daemon off;
{user}worker_processes {cfg.workers or "auto"};
pid {d / "nginx.pid"};
error_log {d / "error.log"} warn;
events {{ worker_connections 4096; }}
http {{
  map $request_uri $codehub_log_uri {{
    ~^{LINK_PATH} {LINK_PATH}REDACTED;
    default $request_uri;
  }}
  map $http_upgrade $codehub_connection {{ default upgrade; "" ""; }}
  log_format codehub '$remote_addr [$time_iso8601] "$request_method $codehub_log_uri"'
                     ' $status $body_bytes_sent $request_time';
  access_log {d / "access.log"} codehub buffer=64k flush=1s;
{temp}
{cache_path}
  server_tokens off;
  absolute_redirect off;
  merge_slashes off;
  client_max_body_size 0;
  keepalive_requests {KEEPALIVE_REQUESTS};
  proxy_http_version 1.1;
  proxy_buffering off;
  proxy_request_buffering off;
  proxy_read_timeout 1h;
  proxy_send_timeout 1h;
  upstream codehub_app {{
    server {cfg.app}; keepalive 32; keepalive_requests {KEEPALIVE_REQUESTS};
  }}
{_pools(cfg)}
{_server(cfg)}
}}
"""
