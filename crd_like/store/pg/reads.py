"""Reads: get, paginated lists (as of the first page's revision) and typed-column queries.

Continue tokens carry the first page's revision and the last key; later pages are
computed as of that revision (current rows not written since, plus the log's
``prev_body`` of those that were) and are Gone once it is compacted (docs/storage.md).
"""

from __future__ import annotations

from typing import Any

from psycopg import sql
from psycopg.rows import tuple_row
from psycopg_pool import AsyncConnectionPool

from codehub.crd_like.store import semantics as sem
from codehub.crd_like.store.interface import NotFound, Obj, Selectors
from codehub.crd_like.store.pg.schema import body_filters

Pool = AsyncConnectionPool[Any]
#: Items, the list's revision and the next page's continue token.
Page = tuple[list[Any], int, str | None]


async def get(pool: Pool, kind: str, namespace: str | None, name: str) -> Obj:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT body FROM objects WHERE kind = %s AND namespace = %s AND name = %s",
            (kind, sem.ns_key(namespace), name),
        )
        row = await cur.fetchone()
    if row is None:
        raise NotFound(f'{kind} "{name}" not found')
    body: Obj = row[0]
    return body


def _current_rows(
    kind: str,
    ns: sql.Composable,
    ns_params: list[Any],
    filters: sql.Composable,
    fparams: list[Any],
    order: sql.Composable,
    lim: sql.Composable,
    lim_params: list[Any],
) -> tuple[sql.Composable, list[Any]]:
    """The first page: the objects as they are now."""
    inner = sql.SQL(
        "SELECT namespace, name, body FROM objects WHERE kind = %s{ns}{f}{order}{lim}"
    ).format(ns=ns, f=filters, order=order, lim=lim)
    return inner, [kind, *ns_params, *fparams, *lim_params]


def _rows_as_of(
    token: sem.ContinueToken,
    kind: str,
    ns: sql.Composable,
    ns_params: list[Any],
    filters: sql.Composable,
    fparams: list[Any],
    order: sql.Composable,
    lim: sql.Composable,
    lim_params: list[Any],
) -> tuple[sql.Composable, list[Any]]:
    """A later page: the state as of the token's revision, current rows not written
    since plus the pre-write state of those that were (from the log's prev_body). Each
    branch is limited on its own so both stay index range scans."""
    after = sql.SQL(" AND (namespace, name) > (%s, %s)")
    after_params = [token.namespace, token.name]
    inner = sql.SQL(
        "WITH changed AS ("
        " SELECT DISTINCT ON (namespace, name) namespace, name, prev_body"
        " FROM event_log WHERE kind = %s AND revision > %s{ns}"
        " ORDER BY namespace, name, revision)"
        " (SELECT namespace, name, body FROM objects"
        " WHERE kind = %s{ns}{after} AND NOT EXISTS (SELECT 1 FROM changed c"
        " WHERE c.namespace = objects.namespace AND c.name = objects.name){f}"
        "{order}{lim})"
        " UNION ALL"
        " (SELECT namespace, name, body FROM"
        " (SELECT namespace, name, prev_body AS body FROM changed"
        " WHERE prev_body IS NOT NULL) ch WHERE true{after}{f}{order}{lim})"
    ).format(ns=ns, after=after, f=filters, order=order, lim=lim)
    params = [
        kind,
        token.revision,
        *ns_params,
        kind,
        *ns_params,
        *after_params,
        *fparams,
        *lim_params,
        *after_params,
        *fparams,
        *lim_params,
    ]
    return inner, params


def _page_query(
    kind: str,
    namespace: str | None,
    selectors: Selectors | None,
    fetch: int | None,
    token: sem.ContinueToken | None,
    raw: bool,
) -> tuple[sql.Composable, list[Any]]:
    """One snapshot: head and floor of the counter beside the page's rows."""
    filters, fparams = body_filters(selectors)
    ns = sql.SQL(" AND namespace = %s") if namespace is not None else sql.SQL("")
    ns_params: list[Any] = [namespace] if namespace is not None else []
    lim = sql.SQL(" LIMIT %s") if fetch is not None else sql.SQL("")
    lim_params: list[Any] = [fetch] if fetch is not None else []
    # ORDER BY only to make LIMIT pick the right rows (an index range scan); the
    # final order is made in Python, so an unlimited list never sorts wide rows.
    order = sql.SQL(" ORDER BY namespace, name") if fetch is not None else sql.SQL("")
    if token is None:
        inner, params = _current_rows(kind, ns, ns_params, filters, fparams, order, lim, lim_params)
    else:
        inner, params = _rows_as_of(
            token, kind, ns, ns_params, filters, fparams, order, lim, lim_params
        )
    query = sql.SQL(
        "SELECT c.rev, c.compact_rev, s.namespace, s.name, s.body{cast}"
        " FROM revision_counter c LEFT JOIN LATERAL ({inner}) s ON true"
    ).format(inner=inner, cast=sql.SQL("::text" if raw else ""))
    return query, params


async def list_page(
    pool: Pool,
    kind: str,
    namespace: str | None,
    selectors: Selectors | None,
    limit: int | None,
    continue_token: str | None,
    *,
    raw: bool,
) -> Page:
    """One page of a list; ``raw`` leaves each body as its JSON text."""
    token = sem.ContinueToken.decode(continue_token) if continue_token else None
    fetch = (limit + 1) if limit is not None and limit > 0 else None
    query, params = _page_query(kind, namespace, selectors, fetch, token, raw)
    async with pool.connection() as conn:
        cur = conn.cursor(row_factory=tuple_row)
        await cur.execute(query, params)
        rows = await cur.fetchall()
    head, floor = int(rows[0][0]), int(rows[0][1])
    # Sorted here, not by an outer ORDER BY that would sort wide rows on the server.
    rows.sort(key=lambda r: (r[2] or "", r[3] or ""))
    revision = head
    if token is not None:
        if token.revision < floor:
            raise sem.gone(token.revision, floor)
        revision = token.revision
    rows = [r for r in rows if r[4] is not None]
    if fetch is not None:
        rows = rows[:fetch]
    items = [r[4] for r in rows]
    next_token = None
    if limit is not None and limit > 0 and len(items) > limit:
        items = items[:limit]
        last = rows[limit - 1]
        next_token = sem.ContinueToken(revision, last[2], last[3]).encode()
    return items, revision, next_token


async def list_by(
    pool: Pool,
    kind: str,
    *,
    namespace: str | None = None,
    desired_state: str | None = None,
    observed_status: str | None = None,
    operation: str | None = None,
    deleting: bool | None = None,
) -> list[Obj]:
    """Indexed typed-column query for controllers (TTL scans, GC, admission)."""
    conds = ["kind = %s"]
    params: list[Any] = [kind]
    for column, value in (
        ("namespace", namespace),
        ("desired_state", desired_state),
        ("observed_status", observed_status),
        ("operation", operation),
    ):
        if value is not None:
            conds.append(f"{column} = %s")
            params.append(value)
    if deleting is not None:
        conds.append(f"deletion_timestamp IS {'NOT ' if deleting else ''}NULL")
    query = f"SELECT body FROM objects WHERE {' AND '.join(conds)} ORDER BY namespace, name"
    async with pool.connection() as conn:
        cur = await conn.execute(query.encode(), params)
        return [r[0] for r in await cur.fetchall()]


async def current_revision(pool: Pool) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT rev FROM revision_counter")
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])
