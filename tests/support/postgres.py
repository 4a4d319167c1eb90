"""A throwaway PostgreSQL server for tests: Debian's own binaries, a temporary directory, loopback.

:class:`PostgresCluster` runs ``initdb`` into a fresh directory and ``pg_ctl`` on a free port of
127.0.0.1 (its Unix socket in the same directory), then hands out one new database per test
(:meth:`PostgresCluster.new_database`), so tests never see each other's rows. The server can be
stopped, killed and started again on the same port and data (a database restart under a running
agent).

Rules:
- Only Debian's ``postgresql`` binaries (``/usr/lib/postgresql/<version>/bin`` or ``PATH``);
  ``.ci/run`` installs them when missing. Without them the tests that need a server skip and say
  why (:func:`find_binaries` returns the reason).
- ``initdb`` refuses to run as root: as root the server runs as the ``postgres`` user that the
  Debian package creates, in a directory owned by it.
- Nothing listens outside 127.0.0.0/8; authentication is ``trust`` on loopback only.
- Commits are durable against a killed server (``synchronous_commit`` stays on); only ``fsync``
  is off, which a process kill (not a power cut) never needs.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.network import free_port

__all__ = ["PostgresCluster", "find_binaries", "running_cluster"]

_SERVER_USER = "postgres"


def find_binaries() -> tuple[Path | None, str]:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``, or None and why not."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).resolve().parent))
    for directory in candidates:
        bin_dir = Path(directory)
        if all((bin_dir / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            if os.geteuid() == 0:
                try:
                    pwd.getpwnam(_SERVER_USER)
                except KeyError:
                    return None, "running as root and no 'postgres' user to run the server as"
            return bin_dir, ""
    return None, (
        "PostgreSQL server binaries not found (Debian package 'postgresql'; .ci/run installs it)"
    )


@contextlib.contextmanager
def running_cluster() -> Iterator[PostgresCluster]:
    """A new cluster, initialised and started, destroyed on exit; the test skips (saying why)
    where Debian's PostgreSQL binaries are missing."""
    bin_dir, why = find_binaries()
    if bin_dir is None:
        pytest.skip(why)
    cluster = PostgresCluster(bin_dir)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


class PostgresCluster:
    """One throwaway PostgreSQL server (``initdb`` + ``pg_ctl``) on 127.0.0.1.

    Args:
        bin_dir: where ``initdb``, ``pg_ctl`` and ``postgres`` are (:func:`find_binaries`).
    """

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.host = "127.0.0.1"
        self.port = free_port()
        self.user = "postgres"
        self._root = Path(tempfile.mkdtemp(prefix="jobs-agent-pg-"))
        self.data_dir = self._root / "data"
        self.socket_dir = self._root
        self._names = itertools.count(1)
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            entry = pwd.getpwnam(_SERVER_USER)
            os.chown(self._root, entry.pw_uid, entry.pw_gid)
            self._as_user = [
                "setpriv",
                f"--reuid={entry.pw_uid}",
                f"--regid={entry.pw_gid}",
                "--clear-groups",
                "--",
            ]

    # -- life cycle ------------------------------------------------------------------------

    def init(self) -> None:
        """``initdb`` a new cluster (UTF-8, trust on loopback, superuser ``postgres``)."""
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            self.user,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-c listen_addresses={self.host} -p {self.port} "
            f"-c unix_socket_directories={self.socket_dir} "
            "-c fsync=off -c full_page_writes=off "
            "-c max_connections=200 -c shared_buffers=32MB"
        )
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-l",
            str(self._root / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: roll back open transactions, close sessions)."""
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def kill(self) -> None:
        """SIGKILL the postmaster (a crashed database server); :meth:`start` recovers it."""
        pid_file = self.data_dir / "postmaster.pid"
        pid = int(pid_file.read_text().splitlines()[0])
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        # The killed postmaster's children notice and exit on their own; give them a moment.
        time.sleep(0.5)

    def destroy(self) -> None:
        """Stop the server (if running) and remove its directory."""
        with contextlib.suppress(subprocess.CalledProcessError, FileNotFoundError):
            self.stop("immediate")
        shutil.rmtree(self._root, ignore_errors=True)

    # -- databases -------------------------------------------------------------------------

    def url(self, database: str = "postgres") -> str:
        """A ``postgresql://`` URL of ``database`` on this server (TCP on loopback)."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{database}"

    def new_database(self) -> str:
        """Create a fresh, empty database; return its URL."""
        name = f"t{os.getpid()}_{next(self._names)}"
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` with Debian's ``psql`` client (no Python driver needed); return stdout."""
        psql = shutil.which("psql") or str(self.bin_dir / "psql")
        result = subprocess.run(
            [psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", self.url(database)],
            input=sql,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return result.stdout

    def _run(self, *argv: str) -> None:
        result = subprocess.run(
            [*self._as_user, *argv], capture_output=True, text=True, timeout=120, check=False
        )
        if result.returncode != 0:
            log = self._root / "server.log"
            tail = log.read_text()[-2000:] if log.is_file() else ""
            raise subprocess.CalledProcessError(
                result.returncode, argv, result.stdout, result.stderr + tail
            )
