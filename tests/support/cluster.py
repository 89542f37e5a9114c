"""A real 6-node Redis Cluster (3 masters, 3 replicas) from redis-server processes."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import redis

from tests.support.servers import Process, RedisTls, free_port, wait_until


class ClusterNode(Process):
    def __init__(
        self, workdir: Path, port: int, tls: RedisTls | None = None, password: str | None = None
    ) -> None:
        self.port = port
        self.tls = tls
        self.password = password
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            shutil.which("redis-server") or "redis-server",
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(workdir),
            "--cluster-enabled", "yes",
            "--cluster-config-file", str(workdir / "nodes.conf"),
            "--cluster-node-timeout", "2000",
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--protected-mode", "no",
        ]  # fmt: skip
        if password:  # replicas authenticate to their master with it too
            argv += ["--requirepass", password, "--masterauth", password]
        if tls:  # the TLS port only; the bus and replication over TLS too
            argv += [*tls.server_args(port), "--tls-cluster", "yes", "--tls-replication", "yes"]
        super().__init__(f"redis-{port}", argv, workdir / "redis.log")

    def client(self) -> redis.Redis:
        options: dict[str, Any] = {"password": self.password}
        if self.tls:
            options |= {"ssl": True, **self.tls.client_options()}
        return redis.Redis(
            "127.0.0.1", self.port, socket_connect_timeout=0.5, socket_timeout=2, **options
        )

    def start(self) -> None:
        super().start()
        client = self.client()
        try:
            wait_until(client.ping, 15, what=f"cluster node {self.port}")
        finally:
            client.close()

    def info(self, section: str) -> dict:
        client = self.client()
        try:
            return client.info(section)  # type: ignore[no-any-return]
        finally:
            client.close()


def cluster_port() -> int:
    """A free port whose cluster-bus port (port + 10000) is free and valid too."""
    for _ in range(200):
        port = free_port()
        if port > 50000:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class RedisCluster:
    def __init__(
        self,
        workdir: Path,
        size: int = 6,
        tls: RedisTls | None = None,
        password: str | None = None,
    ) -> None:
        """``size`` nodes: half masters and half replicas from 6 on, all masters below."""
        self.tls = tls
        self.password = password
        self.replicas = 1 if size >= 6 else 0
        self.nodes = [
            ClusterNode(workdir / f"node{i}", cluster_port(), tls, password) for i in range(size)
        ]

    @property
    def startup_nodes(self) -> str:
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        cli_args: list[str] = ["-a", self.password] if self.password else []
        if self.tls:
            options = self.tls.client_options()
            cli_args += [
                "--tls",
                *("--cacert", options["ssl_ca_certs"]),
                *("--cert", options["ssl_certfile"], "--key", options["ssl_keyfile"]),
            ]
        subprocess.run(
            [
                shutil.which("redis-cli") or "redis-cli",
                *cli_args,
                "--cluster", "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas", str(self.replicas),
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )  # fmt: skip
        wait_until(self.healthy, 60, interval=0.2, what="cluster ok and replicas in sync")

    def healthy(self) -> bool:
        for node in self.nodes:
            if not node.alive():
                continue
            if node.info("cluster").get("cluster_enabled") != 1:
                return False
            client = node.client()
            try:
                state = client.execute_command("CLUSTER", "INFO").decode()
            finally:
                client.close()
            if "cluster_state:ok" not in state:
                return False
            # A replica that never finished its first sync cannot fail over.
            replication = node.info("replication")
            if replication["role"] == "slave" and replication.get("master_link_status") != "up":
                return False
        return True

    def masters(self) -> list[ClusterNode]:
        return [n for n in self.nodes if n.alive() and n.info("replication")["role"] == "master"]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
