"""The systems under test, each started on 127.0.0.1 with its own redis-server.

A system knows its processes (for CPU and RSS accounting), the one process
that holds the WebSocket connections (for RSS per idle connection), the URL
and protocol its clients speak, and its versions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any, ClassVar

from bench import procstat
from tests.support.servers import FerretDB, Process, RedisServer, free_port, wait_until
from tests.support.stack import SECRET, SERVICES, Stack

ROOT = Path(__file__).resolve().parents[1]
PEERS = ROOT / "bench" / "peers"
CENTRIFUGO_VERSION = "6.9.1"
PRESENCE_ENV = {"CHAT_BATCH_SIZE": "99"}


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _cmd_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else "?"


def redis_version() -> str:
    text = _cmd_version([shutil.which("redis-server") or "redis-server", "--version"])
    for part in text.split():
        if part.startswith("v="):
            return part[2:]
    return text


class System:
    """Base class: subclasses start their processes in ``_start``."""

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""
    protocol: ClassVar[str] = ""  # chat | centrifugo | socketio
    persists: ClassVar[bool] = False
    notes: ClassVar[str] = ""

    def __init__(self, workdir: Path, cpus: set[int] | None) -> None:
        self.workdir = workdir
        self.cpus = cpus
        self.redis: RedisServer | None = None
        self._procs: list[Process] = []
        workdir.mkdir(parents=True, exist_ok=True)

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        with procstat.spawning_on(self.cpus):
            self.redis = RedisServer(self.workdir / "redis")
            self.redis.start()
            self._start()
        for pid in self.pids().values():
            procstat.pin(pid, self.cpus)

    def _start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        stop_together(self._procs)
        if self.redis is not None:
            self.redis.stop()

    def _spawn(self, proc: Process) -> Process:
        proc.start()
        self._procs.append(proc)
        return proc

    # --- what the harness needs ---------------------------------------------------------

    def pids(self) -> dict[str, int]:
        pids = {p.name: p.pid for p in self._procs if p.proc is not None}
        if self.redis is not None:
            pids["redis"] = self.redis.pid
        return pids

    def main_process(self) -> str:
        """Name of the process that holds the client connections."""
        raise NotImplementedError

    def ws_url(self) -> str:
        raise NotImplementedError

    def versions(self) -> dict[str, str]:
        return {"redis-server": redis_version()}

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.tail(30)}" for p in self._procs)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "protocol": self.protocol,
            "persists": self.persists,
            "notes": self.notes,
            "versions": self.versions(),
        }


# --- this project ---------------------------------------------------------------------------


def persistence_switch_supported() -> bool:
    """True once the services understand CHAT_PERSISTENCE (a Settings field)."""
    from shared.settings import Settings

    return "persistence" in {f.name for f in dataclasses.fields(Settings)}


class ChatSystem(System):
    name = "chat"
    label = "this project"
    protocol = "chat"
    persists = True
    notes = (
        "every message stored in FerretDB (SQLite) before message_ack; gapless seq; "
        "offline queues; presence and metrics services running"
    )
    extra_env: ClassVar[dict[str, str]] = {}

    def __init__(self, workdir: Path, cpus: set[int] | None) -> None:
        super().__init__(workdir, cpus)
        self.ferretdb: FerretDB | None = None
        self.stack: Stack | None = None

    def _start(self) -> None:
        assert self.redis is not None
        self.ferretdb = FerretDB(self.workdir / "ferretdb")
        level = os.environ.get("BENCH_FERRETDB_LOG_LEVEL")
        if level:  # diagnosis: e.g. debug logs every command
            self.ferretdb.argv = [
                f"--log-level={level}" if a.startswith("--log-level=") else a
                for a in self.ferretdb.argv
            ]
        params = os.environ.get("BENCH_FERRETDB_SQLITE_PARAMS")
        if params:  # e.g. _txlock=immediate
            self.ferretdb.argv = [
                f"{a}?{params}" if a.startswith("--sqlite-url=") else a for a in self.ferretdb.argv
            ]
        self.ferretdb.start()
        overrides = {
            # Production defaults instead of the test suite's short timers.
            "CHAT_GATEWAY_TTL_SECONDS": "15",
            "CHAT_LEASE_TTL_MS": "10000",
            "CHAT_RECLAIM_IDLE_MS": "30000",
            "CHAT_BLOCK_MS": "1000",
            "CHAT_DRAIN_SECONDS": "1",
            # Per-connection INFO lines would be measured as server work that no
            # peer does at its default level.
            "CHAT_LOG_LEVEL": "WARNING",
            # Benchmarks send far above the per-user limits of the product.
            "CHAT_RATE_LIMITS": "off",
            "CHAT_MAX_CONNECTIONS_PER_USER": "1000",
            **self.extra_env,
        }
        self.stack = Stack(
            self.redis.url, self.ferretdb.uri, self.workdir / "services", **overrides
        )
        # FerretDB 1.24 (SQLite) hangs on an `update` command of 100 or more
        # statements, and presence writes one upsert per transition of a stream
        # batch (up to CHAT_BATCH_SIZE=200): keep its batches under 100.
        started = [
            self.stack.start(name, wait=False, **(PRESENCE_ENV if name == "presence" else {}))
            for name in SERVICES
        ]
        for service in started:
            service.wait_ready()

    def stop(self) -> None:
        procs: list[Process] = list(self.stack.services) if self.stack is not None else []
        if self.ferretdb is not None:
            procs.append(self.ferretdb)
        stop_together(procs)
        super().stop()

    def pids(self) -> dict[str, int]:
        pids: dict[str, int] = {}
        if self.stack is not None:
            pids.update({s.service: s.pid for s in self.stack.services})
        if self.ferretdb is not None and self.ferretdb.proc is not None:
            pids["ferretdb"] = self.ferretdb.pid
        if self.redis is not None:
            pids["redis"] = self.redis.pid
        return pids

    def main_process(self) -> str:
        return "gateway"

    def ws_url(self) -> str:
        assert self.stack is not None
        gateway = next(s for s in self.stack.services if s.service == "gateway")
        return gateway.ws_url

    def versions(self) -> dict[str, str]:
        commit = _cmd_version(["git", "-C", str(ROOT), "describe", "--always", "--dirty"])
        return {
            "chat-realtime": commit,
            "python": sys.version.split()[0],
            "ferretdb": _cmd_version([self._ferretdb_bin(), "--version"]).replace("version: ", ""),
            **super().versions(),
        }

    @staticmethod
    def _ferretdb_bin() -> str:
        from tests.support.servers import find_ferretdb

        try:
            return find_ferretdb()
        except RuntimeError:
            return "ferretdb"

    def logs(self) -> str:
        return self.stack.logs() if self.stack is not None else ""


class ChatNoPersistSystem(ChatSystem):
    name = "chat-nopersist"
    label = "this project, CHAT_PERSISTENCE=off"
    persists = False
    notes = (
        "CHAT_PERSISTENCE=off: no MongoDB write per message, seq from a Redis counter; "
        "everything else (streams, partitions, acks, offline queues, presence) unchanged"
    )
    extra_env: ClassVar[dict[str, str]] = {"CHAT_PERSISTENCE": "off"}


# --- Centrifugo -----------------------------------------------------------------------------


def centrifugo_bin() -> str:
    candidates = [
        os.environ.get("BENCH_CENTRIFUGO_BIN", ""),
        shutil.which("centrifugo") or "",
        str(Path.home() / "go" / "bin" / "centrifugo"),
    ]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("centrifugo not found: run bench/install_peers.sh centrifugo")


class CentrifugoSystem(System):
    name = "centrifugo"
    label = "Centrifugo v6 (Redis engine)"
    protocol = "centrifugo"
    notes = (
        "Redis engine (broker + presence manager); channels with history (100 per channel, "
        "5 min, in Redis) and force_recovery, so every publication gets an offset, like a seq; "
        "no durable store; the publisher also receives its own publication"
    )

    def _start(self) -> None:
        assert self.redis is not None
        self.port = free_port()
        config = {
            "http_server": {"address": "127.0.0.1", "port": self.port},
            "log": {"level": "warn"},
            "engine": {"type": "redis", "redis": {"address": [self.redis.url]}},
            "client": {"token": {"hmac_secret_key": SECRET}, "allowed_origins": []},
            "channel": {
                "without_namespace": {
                    "allow_subscribe_for_client": True,
                    "allow_publish_for_subscriber": True,
                    "history_size": 100,
                    "history_ttl": "300s",
                    "force_recovery": True,
                }
            },
            "health": {"enabled": True},
            "usage_stats": {"disabled": True},
        }
        path = self.workdir / "centrifugo.json"
        path.write_text(json.dumps(config, indent=1))
        proc = Process(
            "centrifugo",
            [centrifugo_bin(), "--config", str(path)],
            self.workdir / "centrifugo.log",
            cwd=str(self.workdir),
        )
        self._spawn(proc)
        wait_until(
            lambda: _check_alive(proc) and _http_ok(f"http://127.0.0.1:{self.port}/health"),
            30,
            what="centrifugo",
        )

    def main_process(self) -> str:
        return "centrifugo"

    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/connection/websocket"

    def versions(self) -> dict[str, str]:
        return {"centrifugo": _cmd_version([centrifugo_bin(), "version"]), **super().versions()}


# --- Socket.IO (Node.js) -----------------------------------------------------------------------


class SocketIOSystem(System):
    name = "socketio"
    label = "Socket.IO 4 (Node.js, Redis adapter)"
    protocol = "socketio"
    notes = (
        "one Node.js process, @socket.io/redis-adapter (sharded pub/sub); "
        "messages kept nowhere; per-message ack callback to the sender"
    )

    def _start(self) -> None:
        assert self.redis is not None
        directory = PEERS / "socketio"
        if not (directory / "node_modules" / "socket.io").exists():
            raise RuntimeError("socket.io peer not installed: run bench/install_peers.sh socketio")
        self.port = free_port()
        env = {
            **os.environ,
            "PORT": str(self.port),
            "REDIS_URL": self.redis.url,
            "JWT_SECRET": SECRET,
            "NODE_ENV": "production",
        }
        proc = Process(
            "node",
            [shutil.which("node") or "node", "server.js"],
            self.workdir / "socketio.log",
            env=env,
            cwd=str(directory),
        )
        self._spawn(proc)
        wait_until(
            lambda: _check_alive(proc) and _http_ok(f"http://127.0.0.1:{self.port}/health"),
            30,
            what="socket.io",
        )

    def main_process(self) -> str:
        return "node"

    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/socket.io/?EIO=4&transport=websocket"

    def versions(self) -> dict[str, str]:
        directory = PEERS / "socketio" / "node_modules"
        found = {}
        for pkg in ("socket.io", "@socket.io/redis-adapter", "redis"):
            with contextlib.suppress(OSError, ValueError):
                found[pkg] = json.loads((directory / pkg / "package.json").read_text())["version"]
        return {"node": _cmd_version(["node", "--version"]), **found, **super().versions()}


# --- python-socketio ---------------------------------------------------------------------------


class PySocketIOSystem(System):
    name = "python-socketio"
    label = "python-socketio 5 (aiohttp, AsyncRedisManager)"
    protocol = "socketio"
    notes = (
        "one Python process (aiohttp + uvloop), AsyncRedisManager: every emit goes through "
        "Redis pub/sub; messages kept nowhere; per-message ack to the sender"
    )

    def _start(self) -> None:
        assert self.redis is not None
        try:
            import socketio  # noqa: F401
        except ImportError as exc:
            raise RuntimeError(
                "python-socketio missing: run with uv run --with python-socketio"
            ) from exc
        self.port = free_port()
        proc = Process(
            "python-socketio",
            [
                sys.executable,
                str(PEERS / "pysocketio_server.py"),
                "--port",
                str(self.port),
                "--redis-url",
                self.redis.url,
                "--secret",
                SECRET,
            ],
            self.workdir / "pysocketio.log",
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            cwd=str(ROOT),
        )
        self._spawn(proc)
        wait_until(
            lambda: _check_alive(proc) and _http_ok(f"http://127.0.0.1:{self.port}/health"),
            30,
            what="python-socketio",
        )

    def main_process(self) -> str:
        return "python-socketio"

    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/socket.io/?EIO=4&transport=websocket"

    def versions(self) -> dict[str, str]:
        import engineio
        import socketio

        return {
            "python-socketio": getattr(socketio, "__version__", _dist_version("python-socketio")),
            "python-engineio": getattr(engineio, "__version__", _dist_version("python-engineio")),
            "python": sys.version.split()[0],
            **super().versions(),
        }


def stop_together(procs: list[Process], timeout: float = 10) -> None:
    """SIGTERM every process at once, then wait for each (SIGKILL after ``timeout``)."""
    for proc in procs:
        if proc.alive():
            assert proc.proc is not None
            with contextlib.suppress(ProcessLookupError):
                proc.proc.send_signal(signal.SIGTERM)
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.stop(timeout=timeout)


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def _check_alive(proc: Process) -> bool:
    if not proc.alive():
        raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
    return True


SYSTEMS: dict[str, type[System]] = {
    cls.name: cls
    for cls in (ChatSystem, ChatNoPersistSystem, CentrifugoSystem, SocketIOSystem, PySocketIOSystem)
}
