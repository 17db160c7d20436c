"""A throwaway PostgreSQL server in a folder: for tests, benchmarks and trying PostgreSQL out.

    with TempPostgres(folder) as pg:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = pg.url("prefect")

It is the real thing, Debian's `postgresql` package (`initdb` and `postgres` from
/usr/lib/postgresql/<version>/bin), started as a child process of the caller on a free loopback
port, with `trust` authentication on loopback only and its data in `folder`. PostgreSQL
refuses to run as root, so as root the cluster is created and started as the `postgres`
system user (the Debian package creates it). `stop()` (or leaving the `with`) stops the
server with a fast shutdown (SIGINT) and waits for it: no process is left behind.

`pgvector_bin_dir()` finds a PostgreSQL that has the pgvector extension: Debian's, when its
`postgresql-<v>-pgvector` package is installed, else the one bundled in the `pgserver` wheel
(PostgreSQL 16 with pgvector's `vector.so`; its binaries are used directly, the package is never
imported). Debian bookworm's PostgreSQL is 15 and cannot load a 16 module, so tests of the
pgvector path start that bundled server: `TempPostgres(bin_dir=pgvector_bin_dir())`.

For a server that stays up, use Debian's own cluster (`apt-get install postgresql`,
`pg_createcluster`) instead; this module is for clusters that live as long as one test.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from foreman.errors import PostgresUnavailable

PG_ROOT = Path("/usr/lib/postgresql")
USER = "foreman"  # the cluster's superuser role (trust on loopback)


def pg_bin_dir() -> Path:
    """The newest installed PostgreSQL's bin folder; a clear error naming the package if none is."""
    found = sorted((p / "bin" for p in PG_ROOT.glob("*") if (p / "bin" / "postgres").exists()),
                   key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    if not found:
        raise PostgresUnavailable(
            f"no PostgreSQL server under {PG_ROOT}: install Debian's package "
            "(`apt-get install postgresql`) and try again")
    return found[-1]


def pgvector_bin_dir() -> Path | None:
    """A PostgreSQL bin folder whose server has the pgvector extension files, or None."""
    for bin_dir in sorted((p / "bin" for p in PG_ROOT.glob("*") if (p / "bin" / "postgres").exists()), reverse=True):
        if (Path("/usr/share/postgresql") / bin_dir.parent.name / "extension" / "vector.control").exists():
            return bin_dir
    import importlib.util

    spec = importlib.util.find_spec("pgserver")
    if spec is None or spec.origin is None:
        return None
    bundled = Path(spec.origin).parent / "pginstall"
    if (bundled / "bin" / "postgres").exists() and (bundled / "share/postgresql/extension/vector.control").exists():
        return bundled / "bin"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TempPostgres:
    """One PostgreSQL server process with its data in `folder`; databases made on demand."""

    def __init__(self, folder: Path | None = None, port: int | None = None, bin_dir: Path | None = None) -> None:
        self.folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="foreman-pg-"))
        self.port = port or free_port()
        self.bin = Path(bin_dir) if bin_dir else pg_bin_dir()
        self.data = self.folder / "data"
        self.log = self.folder / "postgres.log"
        self._as_postgres = os.geteuid() == 0
        self._process: subprocess.Popen | None = None

    # --- lifecycle -------------------------------------------------------------------

    def _user_kwargs(self) -> dict:
        if not self._as_postgres:
            return {}
        user = pwd.getpwnam("postgres")
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a server binary, as the `postgres` system user when we are root."""
        done = subprocess.run([str(self.bin / args[0]), *args[1:]], capture_output=True, text=True,
                              timeout=timeout, check=False, cwd=self.folder, **self._user_kwargs())
        if done.returncode != 0:
            raise PostgresUnavailable(f"{args[0]} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}"
                                      f"\n{self.log.read_text()[-2000:] if self.log.exists() else ''}")
        return done

    def start(self) -> TempPostgres:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self._as_postgres:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise PostgresUnavailable("running as root but there is no `postgres` user: install Debian's "
                                          "`postgresql` package, or run as an ordinary user") from exc
            os.chown(self.folder, user.pw_uid, user.pw_gid)
            tmp = Path(tempfile.gettempdir()).resolve()
            for parent in self.folder.resolve().parents:  # postgres must reach its folder (temp dirs only)
                if parent == tmp or tmp not in parent.parents:
                    break
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    os.chmod(parent, mode | 0o001)
        self._run("initdb", "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8",
                  "--no-sync", "--locale=C")
        user_kwargs = self._user_kwargs()
        self._process = subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.folder),
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200",
             "-c", "shared_buffers=64MB"],
            stdout=self.log.open("w"), stderr=subprocess.STDOUT, cwd=self.folder, start_new_session=True,
            **user_kwargs)
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Fast shutdown (SIGINT: roll back open transactions, close sessions), then wait for it."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> TempPostgres:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- databases -------------------------------------------------------------------

    def create_database(self, name: str) -> str:
        """Create database `name` (if missing); returns its SQLAlchemy asyncpg URL."""
        exists = subprocess.run([str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER,
                                 "-d", "postgres", "-tAc", f"SELECT 1 FROM pg_database WHERE datname='{name}'"],
                                capture_output=True, text=True, timeout=60, check=False)
        if exists.stdout.strip() != "1":
            done = subprocess.run([str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER,
                                   name], capture_output=True, text=True, timeout=60, check=False)
            if done.returncode != 0:
                raise PostgresUnavailable(f"createdb {name} failed: {done.stderr.strip()}")
        return self.url(name)

    def url(self, database: str, driver: str = "asyncpg") -> str:
        """The database's URL for SQLAlchemy (`postgresql+asyncpg://…`, as Prefect wants it)."""
        return f"postgresql+{driver}://{USER}@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str) -> str:
        """The plain libpq URL (`postgresql://…`), as asyncpg and psycopg take it."""
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def wait_ready(self, timeout_s: float = 30) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if subprocess.run([str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                              capture_output=True, check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise PostgresUnavailable(f"PostgreSQL on port {self.port} did not become ready")
