"""A throwaway PostgreSQL from the host's server binaries, for tests and a sandbox-free demo.

Runs as the `postgres` OS user when started by root (initdb refuses root), with
SCRAM authentication and a generated password kept in a 0600 file.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from runbook_lib.errors import RunbookError


class LocalPostgresError(RunbookError):
    pass


def find_bindir() -> Path:
    """The newest installed PostgreSQL server binaries (Debian layout), or PG_BINDIR."""
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4]))
    if not candidates:
        raise LocalPostgresError("no PostgreSQL server binaries found (apt-get install postgresql), "
                                 "or set PG_BINDIR")
    return Path(candidates[-1]).parent


@dataclass
class LocalPostgres:
    base: Path
    port: int = 55432
    user: str = "postgres"

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def password_file(self) -> Path:
        return self.base / "postgres_password"

    def _run_as(self) -> dict:
        if os.geteuid() != 0:
            return {}
        try:
            entry = pwd.getpwnam("postgres")
        except KeyError:
            subprocess.run(["useradd", "--system", "--home", "/var/lib/postgresql", "postgres"], check=True)
            entry = pwd.getpwnam("postgres")
        return {"user": entry.pw_uid, "group": entry.pw_gid}

    def _chown(self, path: Path) -> None:
        ids = self._run_as()
        if ids:
            os.chown(path, ids["user"], ids["group"])

    def init(self) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        self.base.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o755)
        if not self.password_file.exists():
            self.password_file.write_text(secrets.token_urlsafe(24))
            os.chmod(self.password_file, 0o600)
        self.data.mkdir(mode=0o700, exist_ok=True)
        self._chown(self.data)
        pwfile = self.base / ".initdb-pw"
        shutil.copy(self.password_file, pwfile)
        self._chown(pwfile)
        try:
            subprocess.run([str(find_bindir() / "initdb"), "-D", str(self.data), "-U", self.user,
                            "--auth=scram-sha-256", f"--pwfile={pwfile}", "--data-checksums", "-E", "UTF8"],
                           check=True, capture_output=True, text=True, **self._run_as())
        except subprocess.CalledProcessError as exc:
            raise LocalPostgresError(f"initdb failed: {exc.stderr.strip()}") from None
        finally:
            pwfile.unlink(missing_ok=True)
        with (self.data / "postgresql.auto.conf").open("a") as fh:
            fh.write(f"port = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.data}'\n"
                     "log_connections = on\nlog_disconnections = on\nwal_level = logical\n")

    def start(self, timeout: float = 30) -> None:
        self.init()
        if not self.running():
            result = subprocess.run([str(find_bindir() / "pg_ctl"), "-D", str(self.data), "-l",
                                     str(self.data / "server.log"), "-w", "-t", str(int(timeout)), "start"],
                                    capture_output=True, text=True, **self._run_as())
            if result.returncode != 0:
                log = self.data / "server.log"
                tail = log.read_text().strip().splitlines()[-3:] if log.exists() else []
                raise LocalPostgresError("PostgreSQL did not start: " + " | ".join(tail or [result.stderr.strip()]))
        self.wait(timeout)

    def running(self) -> bool:
        return subprocess.run([str(find_bindir() / "pg_ctl"), "-D", str(self.data), "status"],
                              capture_output=True, **self._run_as()).returncode == 0

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.connect():
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def connect(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, dbname=dbname,
                               password=self.password_file.read_text(), autocommit=True)

    def stop(self, mode: str = "fast") -> None:
        """Shut down; mode "immediate" is a crash (no checkpoint: the next start recovers from the WAL)."""
        if (self.data / "postmaster.pid").exists():
            subprocess.run([str(find_bindir() / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"],
                           capture_output=True, **self._run_as())

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
