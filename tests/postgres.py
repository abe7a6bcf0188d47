"""A real, throwaway PostgreSQL server for tests.

:class:`PostgresServer` runs ``initdb`` into a fresh temporary directory and
starts ``postgres`` on a free port on 127.0.0.1, with trust authentication
for one known superuser. It never touches a system cluster (Debian's package
starts one in /var/lib/postgresql on port 5432): the data directory, unix
socket and log all live in the temporary directory, which :meth:`stop`
removes after the server is gone.

Fixtures (import them into a conftest.py, or into a test module):

``postgres_server``
    the session's :class:`PostgresServer`.
``postgres_url``
    SQLAlchemy URL of a database created once for the session,
    ``postgresql+psycopg://kubeai@127.0.0.1:PORT/kubeai_test``.
``postgres_db``
    SQLAlchemy URL of a fresh, empty database made for one test and dropped
    after it, so each test starts from an empty schema.

The binaries are Debian's (``apt-get install postgresql``, which ``make
test`` does): the newest ``/usr/lib/postgresql/<version>/bin``, or the
directory in ``$KUBEAI_PG_BIN``. The Python driver is psycopg 3.

PYTEST_DONT_REWRITE: test modules import this before pytest loads it as a
plugin, too late to rewrite its asserts (it has none); the marker stops
pytest warning about that.
"""

from __future__ import annotations

import atexit
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

SUPERUSER = "kubeai"
SESSION_DB = "kubeai_test"

# Settings for a disposable server: nothing here has to survive a crash, so
# skip everything that makes writes durable. Only loopback TCP, no SSL.
SERVER_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "ssl": "off",
    "log_min_messages": "warning",
}

# pg_hba.conf: trust the known user over the unix socket (only the server's
# OS user can reach it, the directory is 0700) and over TCP from loopback
# only. Anything else is rejected, and the server only listens on loopback.
PG_HBA = f"""\
local   all   all                  trust
host    all   {SUPERUSER}   127.0.0.1/32   trust
"""


class PostgresNotInstalled(RuntimeError):
    pass


def find_bin_dir(debian_root: Path = Path("/usr/lib/postgresql")) -> Path:
    """The directory with initdb, pg_ctl and postgres.

    ``$KUBEAI_PG_BIN`` if set, else the newest Debian install. Debian does not
    put initdb/pg_ctl on PATH (only wrappers for clients), hence the search.
    """
    wanted = ("initdb", "pg_ctl", "postgres")
    override = os.environ.get("KUBEAI_PG_BIN")
    if override:
        bin_dir = Path(override)
        missing = [name for name in wanted if not (bin_dir / name).is_file()]
        if missing:
            raise PostgresNotInstalled(f"$KUBEAI_PG_BIN={override} has no {', '.join(missing)}")
        return bin_dir

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))

    candidates = sorted(
        (d for d in debian_root.glob("*/bin") if all((d / name).is_file() for name in wanted)),
        key=version,
    )
    if not candidates:
        raise PostgresNotInstalled(
            f"PostgreSQL server binaries not found under {debian_root}/*/bin. "
            "`make test` installs them (`apt-get install postgresql`); "
            "or set KUBEAI_PG_BIN to a directory with initdb, pg_ctl and postgres."
        )
    return candidates[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _psycopg():
    """psycopg 3, imported only when a server is used, with an install hint."""
    try:
        import psycopg
    except ImportError as e:
        raise ImportError(
            "the PostgreSQL test server needs psycopg 3: pip install 'psycopg[binary]>=3.1' "
            "(in the project's test extras)"
        ) from e
    return psycopg


class PostgresServer:
    """One PostgreSQL server in a temporary directory, for one test session.

    Use :meth:`start` and :meth:`stop` (or ``with PostgresServer() as pg``).
    """

    def __init__(self, *, bin_dir: Path | None = None):
        self.bin_dir = bin_dir or find_bin_dir()
        self.port: int | None = None
        self.base: Path | None = None
        self._run_as: list[str] = []
        self._owner: tuple[int, int] | None = None
        self._proc: subprocess.Popen | None = None

    # Paths inside the temporary directory.
    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def log_file(self) -> Path:
        return self.base / "server.log"

    @property
    def pid(self) -> int | None:
        """The postmaster's PID while it runs."""
        return self._proc.pid if self._proc is not None else None

    # --- running the binaries -------------------------------------------

    def _prepare_user(self) -> None:
        """Run the server binaries as the `postgres` user when we are root.

        initdb and postgres refuse to run as root. setpriv switches user
        without PAM or a login session, and keeps the environment we pass.
        """
        if os.geteuid() != 0:
            return
        user = os.environ.get("KUBEAI_PG_USER", "postgres")
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise PostgresNotInstalled(
                f"running as root, but there is no {user!r} user to run PostgreSQL as; "
                "`apt-get install postgresql` creates it (or set KUBEAI_PG_USER)"
            ) from None
        self._owner = (entry.pw_uid, entry.pw_gid)
        self._run_as = ["setpriv", f"--reuid={entry.pw_uid}", f"--regid={entry.pw_gid}", "--init-groups", "--"]

    def _env(self) -> dict[str, str]:
        # Drop PG* variables (PGDATA, PGPORT, PGHOST, ...) so nothing from the
        # developer's shell points the tools at another cluster. HOME in the
        # temp dir: tools that look for ~/.pgpass etc. find nothing.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(HOME=str(self.base), LC_ALL="C", LANG="C")
        return env

    def _run(self, name: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [*self._run_as, str(self.bin_dir / name), *args]
        return subprocess.run(
            cmd,
            cwd=self.base,  # the postgres user may not be able to read our cwd
            env=self._env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def _log_tail(self, limit: int = 5000) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-limit:]
        except OSError:
            return "(no server log)"

    # --- lifecycle --------------------------------------------------------

    def start(self, *, timeout: float = 30) -> "PostgresServer":
        self._prepare_user()
        # As root: directly in /tmp, not pytest's tmp_path or $TMPDIR, which
        # may be 0700 root (/tmp/pytest-of-root is) where the postgres user
        # cannot enter. Short, too: a unix socket path is limited to ~107 bytes.
        self.base = Path(tempfile.mkdtemp(prefix="kubeai-pg-", dir="/tmp" if self._owner else None))
        atexit.register(self.stop)  # if the session dies before its teardown
        try:
            if self._owner:
                os.chown(self.base, *self._owner)
            self._initdb()
            # The free port can be taken between probing and binding; retry
            # with another one in that (rare) case.
            for attempt in range(3):
                self.port = free_port()
                try:
                    self._start_server(timeout)
                    break
                except RuntimeError as e:
                    if "Address already in use" not in str(e) or attempt == 2:
                        raise
            self.create_database(SESSION_DB)
        except BaseException:
            self.stop()
            raise
        return self

    def _initdb(self) -> None:
        result = self._run(
            "initdb",
            "--pgdata", str(self.data_dir),
            "--username", SUPERUSER,
            "--auth", "trust",
            "--encoding", "UTF8",
            "--no-locale",      # C collation: fast, same on every machine
            "--no-sync",        # nothing to make durable for a throwaway cluster
            "--no-instructions",
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        (self.data_dir / "pg_hba.conf").write_text(PG_HBA)

    def _start_server(self, timeout: float) -> None:
        # postgres runs as our child, not daemonized by `pg_ctl start`: we
        # see at once if it exits during startup, and we can reap it, where
        # PID 1 in a container may not (it would linger as a zombie).
        # setpriv execs, so the child's PID is the postmaster's.
        cmd = [
            *self._run_as, str(self.bin_dir / "postgres"),
            "-D", str(self.data_dir),
            "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1",
            "-c", f"unix_socket_directories={self.base}",
            *(arg for key, value in SERVER_SETTINGS.items() for arg in ("-c", f"{key}={value}")),
        ]
        with open(self.log_file, "wb") as log:
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.base,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C on the terminal reaches pytest,
                # whose teardown then stops the server in order.
                start_new_session=True,
            )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        """Connect over TCP: proves the port, pg_hba.conf and the user work."""
        psycopg = _psycopg()

        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise RuntimeError(
                    f"PostgreSQL exited with {code} while starting on 127.0.0.1:{self.port}; "
                    f"server log:\n{self._log_tail()}"
                )
            try:
                with psycopg.connect(self.conninfo("postgres"), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as e:
                # Refused until it listens, then "starting up" until recovery ends.
                if time.monotonic() > deadline:
                    self._kill()
                    raise RuntimeError(
                        f"PostgreSQL on 127.0.0.1:{self.port} did not accept connections "
                        f"within {timeout}s: {e}\nserver log:\n{self._log_tail()}"
                    ) from e
                time.sleep(0.05)

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None

    def stop(self) -> None:
        """Stop the server (fast shutdown: ends open sessions) and remove its files.

        Safe to call more than once and on a server that never started.
        Raises if the server did not stop by itself and had to be killed.
        """
        atexit.unregister(self.stop)
        if self.base is None:
            return
        failure = None
        try:
            if self._proc is not None and self._proc.poll() is None:
                try:
                    result = self._run("pg_ctl", "stop", "--pgdata", str(self.data_dir),
                                       "--mode", "fast", "--wait", "--timeout", "30", timeout=40)
                    said = (result.stdout + result.stderr).strip()
                except subprocess.TimeoutExpired:
                    said = "pg_ctl itself timed out"
                try:
                    self._proc.wait(10)
                except subprocess.TimeoutExpired:
                    failure = (f"PostgreSQL (pid {self._proc.pid}) did not stop with "
                               f"pg_ctl stop -m fast ({said}); killed it")
            self._kill()  # no-op when it stopped; never leave it running
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None
        if failure:
            raise RuntimeError(failure)

    def __enter__(self) -> "PostgresServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- databases --------------------------------------------------------

    def conninfo(self, dbname: str) -> str:
        """A libpq connection string (for psycopg directly)."""
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={dbname}"

    def url(self, dbname: str = SESSION_DB) -> str:
        """A SQLAlchemy URL (psycopg 3 driver) for ``dbname`` on this server."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def _admin(self, sql: str) -> None:
        psycopg = _psycopg()

        # CREATE/DROP DATABASE cannot run in a transaction: autocommit.
        with psycopg.connect(self.conninfo("postgres"), autocommit=True) as conn:
            conn.execute(sql)

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (``test_<random>`` by default); return its name."""
        name = name or f"test_{uuid.uuid4().hex[:12]}"
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"not a plain database name: {name!r}")
        # template0: truly empty, even if someone changed template1.
        self._admin(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return name

    def drop_database(self, name: str) -> None:
        # FORCE ends connections a test left open (e.g. an engine's pool it
        # did not dispose), which would otherwise make the DROP fail.
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_server():
    """The session's PostgreSQL server, stopped and removed at the end."""
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """SQLAlchemy URL of a database shared by the whole session."""
    return postgres_server.url(SESSION_DB)


@pytest.fixture
def postgres_db(postgres_server: PostgresServer):
    """SQLAlchemy URL of a fresh, empty database, dropped after the test."""
    name = postgres_server.create_database()
    yield postgres_server.url(name)
    postgres_server.drop_database(name)
