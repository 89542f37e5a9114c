"""Real redis-server and FerretDB processes on free ports in temporary dirs."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import redis

from tests.support.tls import Pair


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Tests and stacks that coexist on one redis-server (a module's shared stack,
# a test's own stack, a test on a database of its own) must not share keys,
# streams or consumer groups: each gets its own database. Database 0 is the
# shared ``client`` fixture's. Pub/sub is server-wide, but every channel name
# carries a unique user or gateway id, so they do not meet there either.
_databases = itertools.count()


def own_database(redis_url: str) -> str:
    """``redis_url`` on a database (1 to 255) nobody else in this session was given
    recently; a TLS URL keeps its query (certificate paths hold slashes too)."""
    base, query = redis_url.split("?", 1) if "?" in redis_url else (redis_url, "")
    url = base.rsplit("/", 1)[0] + f"/{1 + next(_databases) % 255}"
    return f"{url}?{query}" if query else url


def wait_until(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the server may not be up yet
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}: {last_error!r}")


class Process:
    """A child process whose output goes to a log file."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
        )
        log.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.alive():
            assert self.proc is not None
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def find_ferretdb() -> str:
    candidates = [
        os.environ.get("CHAT_FERRETDB_BIN", ""),
        shutil.which("ferretdb") or "",
        str(Path.home() / "go" / "bin" / "ferretdb"),
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("ferretdb not found: run scripts/install-ferretdb.sh")


@dataclass(frozen=True)
class RedisTls:
    """TLS only (no plain port), client certificates required (Redis's default)."""

    ca: Path
    server: Pair
    client: Pair

    def server_args(self, port: int) -> list[str]:
        return [
            *("--port", "0", "--tls-port", str(port)),
            *("--tls-cert-file", str(self.server.cert), "--tls-key-file", str(self.server.key)),
            *("--tls-ca-cert-file", str(self.ca), "--tls-auth-clients", "yes"),
        ]

    def client_options(self) -> dict[str, str]:
        """redis-py's URL options for a client that trusts the CA and presents its cert."""
        return {
            "ssl_ca_certs": str(self.ca),
            "ssl_certfile": str(self.client.cert),
            "ssl_keyfile": str(self.client.key),
        }


class RedisServer(Process):
    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        appendonly: bool = False,
        password: str | None = None,
        tls: RedisTls | None = None,
    ) -> None:
        self.port = port or free_port()
        self.password = password
        self.tls = tls
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(workdir),
            "--save",
            "",
            "--appendonly",
            "yes" if appendonly else "no",
            "--appendfsync",
            "always",
            "--protected-mode",
            "no",
            "--databases",
            "256",
            *(["--requirepass", password] if password else []),
            *(tls.server_args(self.port) if tls else []),
        ]
        super().__init__("redis", argv, workdir / "redis.log")

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?{urlencode(self.tls.client_options())}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        super().start()
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        try:
            wait_until(client.ping, 15, what=f"redis on {self.port}")
        finally:
            client.close()


class FerretDB(Process):
    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.workdir = workdir
        data = workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        argv = [
            find_ferretdb(),
            "--handler=sqlite",
            f"--sqlite-url=file:{data}/",
            f"--listen-addr=127.0.0.1:{self.port}",
            "--debug-addr=-",
            "--telemetry=disable",
            f"--state-dir={workdir}",
            "--log-level=warn",
        ]
        super().__init__("ferretdb", argv, workdir / "ferretdb.log")

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def start(self) -> None:
        super().start()

        def ping() -> bool:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True

        wait_until(ping, 20, what=f"ferretdb on {self.port}")
