"""The four services as real processes, started the way `make run` starts them."""

from __future__ import annotations

import os
import sys
import urllib.request
import uuid
from pathlib import Path

from shared.ratelimit import DEFAULT_LIMITS
from shared.redis_client import RedisClient, create_redis
from shared.settings import Settings
from tests.support.servers import Process, free_port, own_database, wait_until

ROOT = Path(__file__).resolve().parents[2]
SECRET = "test-secret-" + "x" * 24

SERVICES = ("gateway", "delivery", "presence", "metrics")


class Service(Process):
    def __init__(self, service: str, env: dict[str, str], workdir: Path, index: int) -> None:
        self.service = service
        self.port = int(env[f"CHAT_{service.upper()}_PORT"])
        self.instance_id = env["CHAT_INSTANCE_ID"]
        super().__init__(
            f"{service}-{index}",
            [sys.executable, "-m", f"services.{service}"],
            workdir / f"{service}-{index}-{self.instance_id}.log",
            env=env,
            cwd=str(ROOT),
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def http_get(self, path: str, timeout: float = 3) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.base_url + path, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def wait_ready(self, timeout: float = 30) -> None:
        def ready() -> bool:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited:\n{self.tail()}")
            return self.http_get("/readyz", timeout=1)[0] == 200

        try:
            wait_until(ready, timeout, interval=0.1, what=f"{self.name} ready")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\n{self.tail()}") from None


class Stack:
    """Services sharing one Redis and one MongoDB database."""

    def __init__(self, redis_url: str, mongo_uri: str, workdir: Path, **overrides: str) -> None:
        self.redis_url = own_database(redis_url)
        self.mongo_uri = mongo_uri
        self.workdir = workdir
        self.db_name = "chat_" + uuid.uuid4().hex[:10]
        self.overrides = overrides
        self.services: list[Service] = []
        workdir.mkdir(parents=True, exist_ok=True)

    def env(self, service: str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
        env.update(
            {
                "CHAT_REDIS_URL": self.redis_url,
                "CHAT_MONGODB_URI": self.mongo_uri,
                "CHAT_MONGODB_DB": self.db_name,
                "CHAT_JWT_SECRET": SECRET,
                "CHAT_LOG_FORMAT": "json",
                "CHAT_LOG_LEVEL": "INFO",
                "CHAT_INSTANCE_ID": f"{service}-{uuid.uuid4().hex[:8]}",
                "CHAT_GATEWAY_TTL_SECONDS": "3",
                "CHAT_LEASE_TTL_MS": "3000",
                "CHAT_RECLAIM_IDLE_MS": "3000",
                "CHAT_BLOCK_MS": "500",
                "CHAT_DRAIN_SECONDS": "1",
                # Limits stay on (the code path is exercised) but high enough
                # for tests that are about something else; limit tests set theirs.
                "CHAT_RATE_LIMITS": ",".join(f"{action}=1000000/60" for action in DEFAULT_LIMITS),
                f"CHAT_{service.upper()}_PORT": str(free_port()),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.overrides)
        env.update(extra)
        return env

    def redis_client(self) -> RedisClient:
        """A client of this stack's Redis as the services see it (standalone or cluster)."""
        return create_redis(Settings.from_env(self.env("test")))

    def start(self, service: str, wait: bool = True, **extra: str) -> Service:
        proc = Service(service, self.env(service, **extra), self.workdir, len(self.services))
        proc.start()
        self.services.append(proc)
        if wait:
            proc.wait_ready()
        return proc

    def start_all(self, **extra: str) -> dict[str, Service]:
        started = {name: self.start(name, wait=False, **extra) for name in SERVICES}
        for proc in started.values():
            proc.wait_ready()
        return started

    def restart(self, proc: Service) -> Service:
        """Start a fresh process of the same service (a new instance id)."""
        return self.start(proc.service, **{f"CHAT_{proc.service.upper()}_PORT": str(free_port())})

    def stop(self) -> None:
        for proc in self.services:
            proc.stop()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.tail(40)}" for p in self.services)
