"""The PostgreSQL that dev-services provides: reachable, isolated per test, really storing."""

from __future__ import annotations

import psycopg


async def test_postgres_round_trip(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await conn.execute("CREATE TABLE t (id serial PRIMARY KEY, body jsonb NOT NULL)")
        await conn.execute("INSERT INTO t (body) VALUES (%s::jsonb)", ['{"a": 1}'])
        await conn.commit()
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute("SELECT body->>'a', current_database() FROM t")
        row = await cur.fetchone()
    assert row is not None
    assert row[0] == "1"
    assert database_url.endswith("/" + row[1])


def test_database_per_test_is_fresh(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert tables == (0,)


def test_listen_notify(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("LISTEN codehub_test")
        with psycopg.connect(database_url, autocommit=True) as sender:
            sender.execute("NOTIFY codehub_test, 'wake'")
        got = next(listener.notifies(timeout=10, stop_after=1), None)
    assert got is not None
    assert got.payload == "wake"
