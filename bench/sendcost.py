"""``python -m bench.sendcost``: what one loopback send costs the sender.

Every push a server writes to a client socket wakes the reader (the load
generator) on the other CPU. This measures, with a redis-server pinned to
CPU 0 as the reader, the sender's CPU per ``send()`` of a 400-byte command
when the sender shares the reader's CPU and when it runs on another one.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from pathlib import Path

from tests.support.servers import RedisServer

PAYLOAD = 400
SENDS = 3000


def _measure(port: int) -> float:
    """Sender CPU (µs) per send, each answered before the next (no batching)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    command = b"*2\r\n$4\r\nECHO\r\n$%d\r\n%s\r\n" % (PAYLOAD, b"x" * PAYLOAD)
    reply = len(b"$%d\r\n" % PAYLOAD) + PAYLOAD + 2
    spent = 0.0
    try:
        for _ in range(SENDS):
            started = time.process_time()
            sock.send(command)
            spent += time.process_time() - started
            got = 0
            while got < reply:
                got += len(sock.recv(65536))
    finally:
        sock.close()
    return spent / SENDS * 1e6


def main() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("needs two CPUs")
    reader, other = cpus[0], cpus[1]
    server = RedisServer(Path(tempfile.mkdtemp(prefix="sendcost-")))
    server.start()
    try:
        os.sched_setaffinity(server.pid, {reader})
        for label, cpu in (("same CPU as the reader", reader), ("another CPU", other)):
            os.sched_setaffinity(0, {cpu})
            sys.stdout.write(f"sender on {label}: {_measure(server.port):.1f} µs CPU per send\n")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
