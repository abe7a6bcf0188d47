"""The throwaway PostgreSQL server of tests/postgres.py: it starts, takes
SQLAlchemy (psycopg 3) connections, gives each test an empty database, and
leaves nothing behind when stopped."""

import os
import time
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from jupyter_kubeai.jobs.local import pid_alive

from postgres import PostgresNotInstalled, PostgresServer, find_bin_dir

# The fixtures (postgres_server, postgres_url, postgres_db) come from
# tests/postgres.py, registered once as a plugin by conftest.py.

metadata = sa.MetaData()
jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String(100), nullable=False, unique=True),
    sa.Column("spec", sa.JSON, nullable=False),
)


@pytest.fixture
def engine(postgres_db):
    engine = sa.create_engine(postgres_db)
    yield engine
    engine.dispose()


def test_session_database_round_trip(postgres_url):
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE session_probe (id serial PRIMARY KEY, note text)"))
            conn.execute(sa.text("INSERT INTO session_probe (note) VALUES (:n)"), [{"n": "a"}, {"n": "b"}])
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT note FROM session_probe ORDER BY id")).scalars().all() == ["a", "b"]
            assert conn.dialect.driver == "psycopg"
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE session_probe"))
    finally:
        engine.dispose()


def test_server_is_private_and_throwaway(postgres_server, postgres_url):
    """Our own cluster on loopback, never Debian's system one."""
    url = sa.make_url(postgres_url)
    assert url.host == "127.0.0.1"
    assert url.port == postgres_server.port != 5432
    with psycopg.connect(postgres_server.conninfo("postgres")) as conn:
        settings = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('listen_addresses', 'data_directory', 'fsync', 'unix_socket_directories')"
        ).fetchall())
    assert settings["listen_addresses"] == "127.0.0.1"
    assert settings["fsync"] == "off"
    assert Path(settings["data_directory"]) == postgres_server.data_dir
    assert not settings["data_directory"].startswith("/var/lib/postgresql")
    assert settings["unix_socket_directories"] == str(postgres_server.base)


def test_tables_insert_select(engine):
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(jobs.insert(), [
            {"name": "train-resnet", "spec": {"gpus": 2}},
            {"name": "finetune-bert", "spec": {"gpus": 1, "image": "bert:1"}},
        ])
    with engine.connect() as conn:
        rows = conn.execute(sa.select(jobs.c.name, jobs.c.spec).order_by(jobs.c.id)).all()
    assert rows == [("train-resnet", {"gpus": 2}), ("finetune-bert", {"gpus": 1, "image": "bert:1"})]
    with pytest.raises(sa.exc.IntegrityError):
        with engine.begin() as conn:
            conn.execute(jobs.insert(), {"name": "train-resnet", "spec": {}})


@pytest.mark.parametrize("run", [1, 2])
def test_each_test_gets_an_empty_database(engine, run):
    # Twice: the second run would find the first run's table if databases
    # were shared, and create_all(checkfirst=False) would fail.
    assert sa.inspect(engine).get_table_names() == []
    metadata.create_all(engine, checkfirst=False)
    with engine.begin() as conn:
        conn.execute(jobs.insert(), {"name": f"job-{run}", "spec": {}})
        assert conn.execute(sa.select(sa.func.count()).select_from(jobs)).scalar_one() == 1


async def test_async_engine(postgres_db):
    """The same URL works with SQLAlchemy's asyncio engine (psycopg async)."""
    engine = create_async_engine(postgres_db)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
            await conn.execute(jobs.insert(), {"name": "serve-llm", "spec": {"replicas": 3}})
        async with engine.connect() as conn:
            result = await conn.execute(sa.select(jobs.c.spec).where(jobs.c.name == "serve-llm"))
            assert result.scalar_one() == {"replicas": 3}
    finally:
        await engine.dispose()


def test_drop_database_ends_open_connections(postgres_server):
    name = postgres_server.create_database()
    assert name.startswith("test_")
    leaked = sa.create_engine(postgres_server.url(name))
    with leaked.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    # The pool still holds a connection: DROP must not fail because of it.
    postgres_server.drop_database(name)
    with psycopg.connect(postgres_server.conninfo("postgres")) as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = %s", [name]).fetchone() == (0,)
    leaked.dispose()


def test_start_and_stop_leave_nothing_behind():
    """A second, separate server: started, used, stopped, and gone."""
    t0 = time.monotonic()
    server = PostgresServer().start()
    startup = time.monotonic() - t0
    try:
        pid, base, port = server.pid, server.base, server.port
        assert pid and pid_alive(pid)
        assert startup < 15, f"startup took {startup:.1f}s"
        if os.geteuid() == 0:
            # initdb and postgres refuse root: they run as the postgres user,
            # which owns the data directory.
            uid = int(next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                           if line.startswith("Uid:")).split()[1])
            assert uid != 0
            assert server.data_dir.stat().st_uid == uid
        engine = sa.create_engine(server.url())
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT current_database()")).scalar_one() == "kubeai_test"
        engine.dispose()
    finally:
        server.stop()

    assert not pid_alive(pid)
    assert not base.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"host=127.0.0.1 port={port} user=kubeai dbname=postgres", connect_timeout=2)
    server.stop()  # idempotent


def test_missing_binaries_say_how_to_install(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBEAI_PG_BIN", raising=False)
    with pytest.raises(PostgresNotInstalled, match=r"make test.*apt-get install postgresql"):
        find_bin_dir(debian_root=tmp_path)
    monkeypatch.setenv("KUBEAI_PG_BIN", str(tmp_path))
    with pytest.raises(PostgresNotInstalled, match="KUBEAI_PG_BIN"):
        find_bin_dir()


def test_newest_debian_version_wins(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBEAI_PG_BIN", raising=False)
    for version in ("9.6", "15", "16"):
        bin_dir = tmp_path / version / "bin"
        bin_dir.mkdir(parents=True)
        for name in ("initdb", "pg_ctl", "postgres"):
            (bin_dir / name).touch()
    assert find_bin_dir(debian_root=tmp_path) == tmp_path / "16" / "bin"
