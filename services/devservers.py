"""Throwaway PostgreSQL 15 and Redis 7 servers on 127.0.0.1, for tests, benchmarks and local runs.

Settings favour speed over durability (no fsync, no Redis persistence): these servers hold data
nobody needs after they stop. Never point them at anything real.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis

INSTALL_HINT = (
    "install the Debian packages postgresql-15 and redis-server "
    "(apt-get install postgresql-15 redis-server)"
)
POSTGRES_BIN_DIR = Path("/usr/lib/postgresql/15/bin")
LOOPBACK = "127.0.0.1"
# PostgreSQL refuses to run as root; as root the cluster belongs to the package's system user.
POSTGRES_SYSTEM_USER = "postgres"
STARTUP_TIMEOUT_SECONDS = 30.0


class MissingServerBinaryError(RuntimeError):
    """A server executable the development servers need is not installed."""


def find_binary(name: str) -> str:
    """Locate a server executable on PATH or in the PostgreSQL 15 package's bin directory."""
    found = shutil.which(name) or shutil.which(name, path=str(POSTGRES_BIN_DIR))
    if found is None:
        raise MissingServerBinaryError(f"{name} was not found on PATH: {INSTALL_HINT}")
    return found


def free_port() -> int:
    """A TCP port on the loopback address that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class PostgresServer:
    """A running cluster with one database owned by an ordinary role, as in RDS and Cloud SQL.

    The services connect as `user`, which owns the database but is no superuser: superusers
    bypass row-level security, so tests as one would prove nothing about it. `admin_user` is
    the cluster's superuser (same password), for tests that need to look past the policies.
    """

    data_dir: Path
    port: int
    user: str
    password: str
    database: str
    admin_user: str
    host: str = LOOPBACK
    _run_as: str | None = field(default=None, repr=False)

    def conninfo(self, database: str | None = None, *, admin: bool = False) -> str:
        return psycopg.conninfo.make_conninfo(
            host=self.host,
            port=self.port,
            user=self.admin_user if admin else self.user,
            password=self.password,
            dbname=database or self.database,
        )

    def stop(self) -> None:
        """Stop fast: roll back open transactions and disconnect clients."""
        pg_ctl = find_binary("pg_ctl")
        subprocess.run(
            [pg_ctl, "stop", "-D", str(self.data_dir), "-m", "fast", "-w"],
            check=False,
            capture_output=True,
            user=self._run_as,
        )


def start_postgres(
    base_dir: Path, *, password: str, user: str = "billing", database: str = "billing"
) -> PostgresServer:
    """Create a cluster under base_dir (reusing one already there) and start it on a free port."""
    initdb, pg_ctl = find_binary("initdb"), find_binary("pg_ctl")
    admin_user = f"{user}_admin"
    run_as = POSTGRES_SYSTEM_USER if os.geteuid() == 0 else None
    base_dir.mkdir(parents=True, exist_ok=True)
    if run_as is not None:
        _require_traversable(base_dir.resolve().parent, run_as)
    data_dir, socket_dir = base_dir / "data", base_dir / "socket"
    socket_dir.mkdir(exist_ok=True)
    if run_as is not None:
        _hand_over(base_dir, run_as)
    if not (data_dir / "PG_VERSION").exists():
        password_file = base_dir / "superuser-password"
        password_file.write_text(password + "\n", encoding="utf-8")
        if run_as is not None:
            _hand_over(password_file, run_as)
        _run(
            [
                initdb,
                "--pgdata",
                str(data_dir),
                "--username",
                admin_user,
                f"--pwfile={password_file}",
                "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
            run_as=run_as,
        )
        password_file.unlink()
    port = free_port()
    server_options = " ".join(
        [
            f"-p {port}",
            f"-c listen_addresses={LOOPBACK}",
            f"-c unix_socket_directories={socket_dir}",
            "-c fsync=off",
            "-c synchronous_commit=off",
            "-c full_page_writes=off",
            "-c max_connections=200",
        ]
    )
    _run(
        [
            pg_ctl,
            "start",
            "-D",
            str(data_dir),
            "-l",
            str(base_dir / "postgres.log"),
            "-w",
            "-t",
            str(int(STARTUP_TIMEOUT_SECONDS)),
            "-o",
            server_options,
        ],
        run_as=run_as,
    )
    server = PostgresServer(
        data_dir=data_dir,
        port=port,
        user=user,
        password=password,
        database=database,
        admin_user=admin_user,
        _run_as=run_as,
    )
    _ensure_database(server)
    return server


def _ensure_database(server: PostgresServer) -> None:
    sql = psycopg.sql
    with psycopg.connect(server.conninfo("postgres", admin=True), autocommit=True) as connection:
        role = connection.execute(
            "SELECT 1 FROM pg_roles WHERE rolname = %s", (server.user,)
        ).fetchone()
        if role is None:
            # CREATEDB: the migration tests make scratch databases of their own.
            connection.execute(
                sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                    sql.Identifier(server.user), sql.Literal(server.password)
                )
            )
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (server.database,)
        ).fetchone()
        if exists is None:
            connection.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(server.database), sql.Identifier(server.user)
                )
            )


@dataclass
class RedisServer:
    """A running redis-server that keeps nothing on disk."""

    process: subprocess.Popen[bytes]
    port: int
    auth_token: str
    host: str = LOOPBACK

    def client(self) -> redis.Redis:
        return redis.Redis(host=self.host, port=self.port, password=self.auth_token or None)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_redis(base_dir: Path, *, auth_token: str) -> RedisServer:
    """Start redis-server on a free loopback port, with AUTH when a token is given."""
    redis_server = find_binary("redis-server")
    base_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config_lines = [
        f"port {port}",
        f"bind {LOOPBACK}",
        "save ''",
        "appendonly no",
        "daemonize no",
        f"dir {base_dir}",
        f"logfile {base_dir / 'redis.log'}",
    ]
    if auth_token:
        config_lines.append(f"requirepass {auth_token}")
    config_file = base_dir / "redis.conf"
    # The file holds the auth token: readable by its owner only.
    config_file.touch(mode=0o600)
    config_file.write_text("\n".join(config_lines) + "\n", encoding="utf-8")
    process = subprocess.Popen([redis_server, str(config_file)], stdout=subprocess.DEVNULL)
    server = RedisServer(process=process, port=port, auth_token=auth_token)
    _wait_for_redis(server)
    return server


def _wait_for_redis(server: RedisServer) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    client = server.client()
    try:
        while True:
            if server.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {server.process.returncode}")
            try:
                client.ping()
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    server.stop()
                    raise
                time.sleep(0.05)
            else:
                return
    finally:
        client.close()


def scratch_dir(prefix: str) -> Path:
    """A new temporary directory that the PostgreSQL system user can reach when we run as root."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    # mkdtemp makes it 0700; the server, running as another user, must be able to enter it.
    path.chmod(0o755)
    return path


def _require_traversable(directory: Path, owner: str) -> None:
    for ancestor in [directory, *directory.parents]:
        if not ancestor.stat().st_mode & 0o001:
            raise RuntimeError(
                f"PostgreSQL runs as {owner!r} when started by root and cannot enter {ancestor}; "
                "put the cluster under a directory others may traverse (see scratch_dir)"
            )


def _hand_over(path: Path, owner: str) -> None:
    """Give a path (recursively) to the PostgreSQL system user so the server can use it."""
    account = pwd.getpwnam(owner)
    for entry in [path, *path.rglob("*")] if path.is_dir() else [path]:
        os.chown(entry, account.pw_uid, account.pw_gid)


def _run(command: list[str], *, run_as: str | None) -> None:
    result = subprocess.run(command, check=False, capture_output=True, text=True, user=run_as)
    if result.returncode != 0:
        raise RuntimeError(
            f"{Path(command[0]).name} failed ({result.returncode}): {result.stderr.strip()}"
        )
