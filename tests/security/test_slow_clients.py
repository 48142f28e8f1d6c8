"""Slow and vanishing clients: half-sent heads and bodies are timed out with a 408 and closed, and a client
that hangs up while sending its body is logged as a 499, without a traceback (finding 6)."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from tests.procs import Proc, create_key, start_gateway, write_config

LIMITS = """
server:
  header_timeout_s: 1
  body_timeout_s: 1
"""


@pytest.fixture(scope="module")
def gw(sim: Proc, tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("slow")
    cfg = write_config(d / "bastion.yaml", sim.url, store=d / "b.db")
    cfg.write_text(cfg.read_text().replace("server:\n  port: 0\n", "server:\n  port: 0\n  header_timeout_s: 1\n"
                                           "  body_timeout_s: 1\n"))
    key = create_key(cfg)
    proc = start_gateway(cfg)
    yield proc, key, d / "b.db"
    proc.stop()


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    return s


def _closed_by_server(s: socket.socket, within: float) -> bytes | None:
    """What the server sent before closing, or None if it kept the connection open for ``within`` s."""
    s.settimeout(within)
    got = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return got
            got += chunk
    except TimeoutError:
        return None
    except ConnectionResetError:
        return got


def test_many_half_sent_heads_are_closed(gw) -> None:
    proc, key, _ = gw
    socks = []
    for i in range(300):
        s = _connect(proc.url)
        if i % 3 == 0:
            pass  # connects and sends nothing at all
        else:
            s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: appl")  # never finishes
        socks.append(s)
    start = time.monotonic()
    answers = [_closed_by_server(s, within=10) for s in socks]
    waited = time.monotonic() - start
    for s in socks:
        s.close()
    assert all(a is not None for a in answers), "a half-sent request was held open"
    assert waited < 10
    assert sum(1 for a in answers if a and a.startswith(b"HTTP/1.1 408")) >= 150
    # the gateway still serves
    r = httpx.get(proc.url + "/healthz")
    assert r.status_code == 200


def test_half_sent_bodies_get_a_408(gw) -> None:
    proc, key, db = gw
    socks = []
    for _ in range(100):
        s = _connect(proc.url)
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Authorization: Bearer " + key.encode() + b"\r\nContent-Length: 1000\r\n\r\n{\"model\": \"sim")
        socks.append(s)
    answers = [_closed_by_server(s, within=10) for s in socks]
    for s in socks:
        s.close()
    assert all(a is not None and a.startswith(b"HTTP/1.1 408") for a in answers), answers[:3]
    assert b"server.body_timeout_s" in answers[0]


def test_hang_up_while_sending_the_body_is_a_499_row(gw) -> None:
    import sqlite3

    proc, key, db = gw
    s = _connect(proc.url)
    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"x-bastion-session: hangup-mid-body\r\n"
              b"Authorization: Bearer " + key.encode() + b"\r\nContent-Length: 1000\r\n\r\n{\"model\": \"sim")
    time.sleep(0.2)
    s.close()
    deadline = time.monotonic() + 10
    rows: list = []
    while time.monotonic() < deadline and not rows:
        conn = sqlite3.connect(db)
        rows = conn.execute("SELECT status, error_code FROM requests WHERE session = 'hangup-mid-body'").fetchall()
        conn.close()
        time.sleep(0.1)
    assert rows == [(499, "client_closed")]
    assert not any("Traceback" in line for line in proc.output), "".join(proc.output)[-3000:]
