"""A throwaway PostgreSQL cluster for the tests: `initdb` + `pg_ctl` on a temporary
directory and a free loopback port, as the `postgres` OS user when the tests run as root
(PostgreSQL refuses to run as root). One per test session; each test gets a database.

Debian's `postgresql` package puts the server in /usr/lib/postgresql/N/bin (not on PATH).
Without it the PostgreSQL half of the ledger tests is skipped, except under CI=true, where
a missing PostgreSQL fails the run."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

TEST_DATABASE = "gateway_tests"


def server_bindir() -> Path | None:
    """Where initdb and pg_ctl are: Debian's newest version, else the PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name) if
                   Path(p).parent.parent.name.isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@dataclass
class Cluster:
    """A running cluster: its data directory, port and the OS user that owns it."""

    bindir: Path
    datadir: Path
    port: int
    user: str | None  # the OS user to run as (None: ourselves)

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        """One of the server's programs, as the cluster's OS user."""
        cmd = [str(self.bindir / argv[0]), *argv[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=120)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://gateway@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """The URL of a fresh, empty ledger database. A schema of its own in one shared
        database, named by the URL's search_path (CREATE DATABASE takes a second)."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(TEST_DATABASE), autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{name}"')
        return f"{self.url(TEST_DATABASE)}?options=-csearch_path%3D{name}"

    def sql(self, statement: str, database: str = "postgres") -> str:
        out = self.run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                       "-d", database, "-v", "ON_ERROR_STOP=1", "-Atc", statement)
        return out.stdout

    def stop(self, mode: str = "fast") -> None:
        self.run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop", check=False)

    def start(self) -> None:
        self.run("pg_ctl", "-D", str(self.datadir), "-w", "-t", "60", "-l",
                 str(self.datadir / "server.log"), "start")


def start_cluster(port: int) -> Cluster:
    """initdb a new cluster in a temporary directory and start it on 127.0.0.1:`port`."""
    bindir = server_bindir()
    if bindir is None:
        raise FileNotFoundError("PostgreSQL's initdb was not found (apt-get install postgresql)")
    user = None
    base = Path(tempfile.mkdtemp(prefix="gw-pg-"))
    if os.geteuid() == 0:
        user = "postgres"
        pw = pwd.getpwnam(user)
        os.chown(base, pw.pw_uid, pw.pw_gid)
    datadir = base / "data"
    cluster = Cluster(bindir, datadir, port, user)
    cluster.run("initdb", "-D", str(datadir), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                "--no-sync")
    settings = (f"listen_addresses = '127.0.0.1'\nport = {port}\n"
                # fsync off: the OS keeps what was written when a test kills the server
                # (`pg_ctl stop -m immediate`); commits themselves stay synchronous.
                "unix_socket_directories = ''\nfsync = off\n"
                "full_page_writes = off\nmax_connections = 200\n")
    with open(datadir / "postgresql.conf", "a", encoding="utf-8") as conf:
        conf.write(settings)  # root may write it; the server reads it as its own user
    cluster.start()
    deadline = time.monotonic() + 30
    while True:
        try:
            cluster.sql("SELECT 1")
            break
        except subprocess.CalledProcessError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    cluster.sql("CREATE ROLE gateway LOGIN SUPERUSER")
    cluster.sql(f"CREATE DATABASE {TEST_DATABASE} OWNER gateway")
    return cluster


def remove_cluster(cluster: Cluster) -> None:
    cluster.stop("immediate")
    with contextlib.suppress(OSError):
        shutil.rmtree(cluster.datadir.parent)
