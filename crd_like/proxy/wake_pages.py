"""The pages of auto-wake: loading, limit reached (429) and workspace in ERROR.

Self-contained like every proxy page (inline style, nothing loaded from elsewhere).
Only the loading page has a script, allowed by a per-response nonce; it follows the
workspace's events at ``/w/-/events/{ns}/{name}`` (cookie-authorised, see
``events.py``) and, once the workspace reports RUNNING, probes the workspace URL until
the proxy forwards it (the endpoint is known), then reloads into the app.
"""

from __future__ import annotations

import html
import secrets
import shlex
from typing import Any

from aiohttp import web

from codehub.crd_like.identity import DESIRED_CHANGED_AT_ANNOTATION
from codehub.crd_like.server.admission import LimitExceeded
from codehub.crd_like.store.interface import Obj
from codehub.vocabulary.timestamps import parse_rfc3339, utc_now

from . import pages
from .gate import NOT_RUNNING_HEADER
from .routing import PREFIX, Forward

EVENTS_PATH = "/w/-/events/"
WAKE_HEADER = "X-Codehub-Wake"

_STYLE = (
    ":root{color-scheme:light dark;--fg:#1d2330;--muted:#5d6678;--bg:#f4f6fa;--card:#fff;"
    "--accent:#2f6feb;--line:#e3e7ef}"
    "@media (prefers-color-scheme:dark){:root{--fg:#e6e9ef;--muted:#9aa3b5;--bg:#12151b;"
    "--card:#1b2029;--accent:#5b8cff;--line:#2a3140}}"
    "*{box-sizing:border-box}body{margin:0;min-height:100vh;display:flex;align-items:center;"
    "justify-content:center;background:var(--bg);color:var(--fg);"
    "font:16px/1.5 system-ui,-apple-system,'Segoe UI',sans-serif}"
    ".card{background:var(--card);border:1px solid var(--line);border-radius:14px;"
    "padding:2rem 2.2rem;width:min(32rem,92vw);box-shadow:0 10px 30px rgba(0,0,0,.08)}"
    "h1{font-size:1.25rem;margin:0 0 .2rem}.ws{color:var(--muted);margin:0 0 1.4rem;"
    "font-family:ui-monospace,monospace;font-size:.9rem}"
    ".row{display:flex;align-items:center;gap:.8rem}"
    ".spin{width:1.3rem;height:1.3rem;border-radius:50%;border:3px solid var(--line);"
    "border-top-color:var(--accent);animation:s 0.9s linear infinite;flex:none}"
    "@keyframes s{to{transform:rotate(360deg)}}"
    "#phase{font-weight:600}.bar{height:.5rem;background:var(--line);border-radius:1rem;"
    "overflow:hidden;margin:1.1rem 0 .4rem}#fill{height:100%;width:0;background:var(--accent);"
    "transition:width .4s}.bar.idle #fill{width:30%;animation:m 1.4s ease-in-out infinite}"
    "@keyframes m{0%{margin-left:-30%}100%{margin-left:100%}}"
    ".muted{color:var(--muted);font-size:.9rem;margin:.2rem 0}"
    "code,pre{font-family:ui-monospace,monospace;font-size:.85rem;background:var(--bg);"
    "border:1px solid var(--line);border-radius:6px}code{padding:0 .25rem}"
    "pre{padding:.6rem .8rem;overflow-x:auto;white-space:pre-wrap}"
    "ul{padding-left:1.2rem}a{color:var(--accent)}"
)

_SCRIPT = r"""(function(){
var b=document.body,t0=Date.now()-1000*Number(b.dataset.elapsed||0);
function $(i){return document.getElementById(i);}
var PH={RESTORING:'Restoring from the archive',STARTING:'Starting',
PROVISIONING:'Creating the workspace',STOPPING:'Finishing a stop first',
ARCHIVING:'Finishing an archive first'};
function dur(s){s=Math.max(0,Math.floor(s));return s<60?s+'s':Math.floor(s/60)+'m '+(s%60)+'s';}
function size(n){var u=['B','KiB','MiB','GiB','TiB'],i=0;while(n>=1024&&i<4){n/=1024;i++;}
return n.toFixed(i?1:0)+' '+u[i];}
function tick(){$('elapsed').textContent=dur((Date.now()-t0)/1000);}
tick();setInterval(tick,500);
var running=false,probing=false,done=false;
function probe(){if(probing||done)return;probing=true;
fetch(location.href,{method:'HEAD',cache:'no-store',credentials:'same-origin'}).then(function(r){
probing=false;if(!r.headers.get('NOT_RUNNING')){done=true;location.reload();}
},function(){probing=false;});}
setInterval(function(){if(running)probe();},250);
setInterval(probe,3000);
function show(s){
if(s.display==='DELETED'){$('phase').textContent='The workspace was deleted';stop();return;}
if(s.observed_status==='ERROR'||s.display==='ERROR'){done=true;location.reload();return;}
if(s.observed_status==='RUNNING'){running=true;$('phase').textContent='Ready, opening it';
$('detail').textContent='';probe();return;}
if(s.desired_state!=='RUNNING'){$('phase').textContent='It was asked to stop; reload to wake it';
stop();return;}
$('phase').textContent=PH[s.operation]||
(s.display==='ARCHIVED'?'Waiting to restore':'Waiting to start');
var p=s.progress,bar=$('bar');
if(p&&p.bytes_total>0){var pct=Math.min(100,100*p.bytes_done/p.bytes_total);
bar.className='bar';$('fill').style.width=pct.toFixed(1)+'%';
$('detail').textContent=pct.toFixed(0)+'% \u00b7 '+size(p.bytes_done)+' of '+size(p.bytes_total)+
(p.bytes_per_second?' \u00b7 '+size(p.bytes_per_second)+'/s':'');}
else{bar.className='bar idle';$('detail').textContent='';}}
function stop(){done=true;$('spin').style.visibility='hidden';$('bar').style.visibility='hidden';
if(es)es.close();}
var es=new EventSource(b.dataset.events);
es.addEventListener('state_changed',function(e){show(JSON.parse(e.data));});
es.addEventListener('expired',function(){es.close();es=new EventSource(b.dataset.events);});
})();""".replace("NOT_RUNNING", NOT_RUNNING_HEADER)


def _doc(title: str, body: str, *, attrs: str = "", script: str = "", nonce: str = "") -> str:
    tail = f"<script nonce={nonce}>{script}</script>" if script else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body{attrs}><main class=card>{body}</main>{tail}</body></html>"
    )


def _changed_seconds_ago(obj: Obj) -> float:
    """Seconds since desired_state last changed (the wake), so a reload keeps counting."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    raw = annotations.get(DESIRED_CHANGED_AT_ANNOTATION)
    try:
        when = parse_rfc3339(raw) if isinstance(raw, str) else None
    except ValueError:
        when = None
    if when is None:
        return 0.0
    return max(0.0, min((utc_now() - when).total_seconds(), 86400.0))


def initial_phase(obj: Obj) -> str:
    status = obj.get("status") or {}
    if status.get("operation") == "RESTORING" or (
        status.get("archive_key") and status.get("observed_status") in (None, "PENDING")
    ):
        return "Restoring from the archive"
    return "Starting"


def loading_page(obj: Obj, fwd: Forward, *, woken: bool) -> web.Response:
    nonce = secrets.token_urlsafe(16)
    events = f"{EVENTS_PATH}{fwd.namespace}/{fwd.name}"
    elapsed = 0.0 if woken else _changed_seconds_ago(obj)
    body = (
        "<h1>Waking up your workspace</h1>"
        f"<p class=ws>{html.escape(fwd.namespace)}/{html.escape(fwd.name)}</p>"
        f"<div class=row><div class=spin id=spin></div><span id=phase>"
        f"{html.escape(initial_phase(obj))}</span></div>"
        "<div class='bar idle' id=bar><div id=fill></div></div>"
        "<p class=muted id=detail></p>"
        "<p class=muted>Elapsed <span id=elapsed>0s</span>. "
        "This page opens the workspace by itself when it is ready.</p>"
        "<noscript><p>Scripts are off: reload this page in a minute.</p></noscript>"
    )
    attrs = f' data-events="{html.escape(events)}" data-elapsed="{elapsed:.0f}"'
    csp = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'"
    )
    return pages.html_response(
        _doc("Waking up " + fwd.name, body, attrs=attrs, script=_SCRIPT, nonce=nonce),
        200,
        {
            "Content-Security-Policy": csp,
            WAKE_HEADER: "woken" if woken else "waiting",
            NOT_RUNNING_HEADER: "1",
        },
    )


def limited_page(exc: LimitExceeded, namespace: str, name: str) -> web.Response:
    """429: which workspaces hold the slots (only this namespace's) and how to free one."""
    details: dict[str, Any] = exc.details
    running = [
        r["name"]
        for r in details.get("running_workspaces", [])
        if isinstance(r, dict) and r.get("namespace") == namespace
    ]
    maximum = details.get("max")
    if exc.limit_type == "per_user":
        head = f"You already have {len(running)} of {maximum} running workspaces."
    else:
        head = f"The server runs its maximum of {maximum} workspaces."
    items = "".join(
        f"<li><a href={PREFIX}{namespace}/{r}/><code>{html.escape(r)}</code></a></li>"
        for r in running
    )
    listing = f"<p>Running now:</p><ul>{items}</ul>" if running else ""
    example = running[0] if running else "NAME"
    patch = shlex.quote('{"spec":{"desired_state":"STANDBY"}}')
    body = (
        "<h1>Workspace limit reached</h1>"
        f"<p class=ws>{html.escape(namespace)}/{html.escape(name)} was not started</p>"
        f"<p>{html.escape(head)} Stop one, then reload this page.</p>{listing}"
        f"<pre>codehub stop {html.escape(example)}</pre>"
        f"<p class=muted>or with kubectl:</p><pre>kubectl patch workspace {html.escape(example)}"
        f" -n {html.escape(namespace)} --type merge -p {html.escape(patch)}</pre>"
    )
    return pages.html_response(_doc("Workspace limit reached", body), 429)


def error_page(obj: Obj) -> web.Response:
    """The reason and message of the error, and what an administrator can do."""
    meta = obj.get("metadata") or {}
    namespace, name = str(meta.get("namespace")), str(meta.get("name"))
    status = obj.get("status") or {}
    raw_info = status.get("error_info")
    info: dict[str, Any] = raw_info if isinstance(raw_info, dict) else {}
    reason = str(info.get("reason") or "Unknown")
    message = str(info.get("message") or "no message was recorded")
    body = (
        "<h1>This workspace has an error</h1>"
        f"<p class=ws>{html.escape(namespace)}/{html.escape(name)}</p>"
        f"<p><strong>{html.escape(reason)}</strong>: {html.escape(message)}</p>"
        "<p>It will not start until an administrator has looked at it. "
        "An administrator can clear the error so it converges again:</p>"
        f"<pre>codehub recover {html.escape(name)} -n {html.escape(namespace)}</pre>"
        "<p class=muted>or with kubectl:</p>"
        f"<pre>kubectl annotate ws {html.escape(name)} -n {html.escape(namespace)} "
        "codehub.io/recover=$(date +%s)</pre>"
        f"<p class=muted>Details: <code>codehub describe ws {html.escape(name)}</code></p>"
    )
    return pages.html_response(_doc("Workspace error", body), 503)
