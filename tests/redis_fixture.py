"""A real ``redis-server`` for the tests of the Redis state backend: one per test session, on 127.0.0.1 at a
free port, without persistence, in a temporary directory; stopped at the end of the session.

Tests that need it skip (with the reason) only when ``redis-server`` is not installed; ``.ci/run`` installs it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class RedisServer:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def fresh_url(self) -> str:
        """The server's URL with a key prefix of its own, so tests sharing the server never see each other's keys."""
        return f"{self.url}?prefix=t{uuid.uuid4().hex[:12]}:"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis(d: Path) -> tuple[subprocess.Popen[bytes], RedisServer]:
    """Start a redis-server in directory ``d`` at a free port; wait until it answers PING."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run installs it)")
    port = _free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(d),
         "--daemonize", "no", "--logfile", str(d / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 20
    while not _ping(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log = (d / "redis.log").read_text() if (d / "redis.log").exists() else ""
            raise RuntimeError(f"redis-server did not start on port {port}:\n{log}")
        time.sleep(0.05)
    return proc, RedisServer("127.0.0.1", port)


def stop_redis(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    proc, server = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        stop_redis(proc)
