"""The throwaway PostgreSQL the always-on test and bench/load.py use: a real server, gone when stopped."""

from __future__ import annotations

import asyncio
import socket

import pytest

from foreman.errors import ConfigurationError, PostgresUnavailable
from foreman.pg import TempPostgres


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_a_temp_cluster_serves_asyncpg_and_leaves_nothing_running() -> None:
    import asyncpg

    pg = TempPostgres()
    try:
        pg.start()
        url = pg.create_database("prefect")
        assert url == f"postgresql+asyncpg://foreman@127.0.0.1:{pg.port}/prefect"
        assert pg.create_database("prefect") == url  # again: already there, same URL

        async def roundtrip() -> str:
            conn = await asyncpg.connect(pg.dsn("prefect"))
            try:
                await conn.execute("CREATE TABLE t (v text)")
                await conn.execute("INSERT INTO t VALUES ('kept')")
                return await conn.fetchval("SELECT v FROM t")
            finally:
                await conn.close()

        assert asyncio.run(roundtrip()) == "kept"
        server = pg._process
        assert server is not None and listening(pg.port)
    finally:
        pg.remove()
    assert server.poll() is not None and not listening(pg.port)  # stopped and reaped
    assert not pg.folder.exists()


def test_missing_postgresql_is_one_clear_configuration_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from foreman import pg

    monkeypatch.setattr(pg, "PG_ROOT", tmp_path / "nothing")
    with pytest.raises(PostgresUnavailable, match="apt-get install postgresql") as raised:
        TempPostgres(tmp_path / "pg")
    assert isinstance(raised.value, ConfigurationError)
