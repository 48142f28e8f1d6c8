"""kill -9 under load: with ``store.commit_before_answer`` every request whose answer reached its client
(a whole JSON body, or a stream up to its terminal event) is in the log; without it, what sat in the
flush window is lost (the documented trade-off)."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path

import httpx
import pytest

from tests.procs import Proc, create_key, start_gateway, write_config


async def _load_then_kill(gw: Proc, key: str, n: int, kill_after: int) -> tuple[set[str], int]:
    """Send ``n`` requests (half streamed) at concurrency 30; kill -9 the gateway once ``kill_after`` are
    answered. Returns the ids whose answers arrived whole, and how many were cut off."""
    acked: set[str] = set()
    cut = 0
    sem = asyncio.Semaphore(30)
    killed = asyncio.Event()

    async def one(c: httpx.AsyncClient, i: int) -> None:
        nonlocal cut
        async with sem:
            if killed.is_set():
                return
            body = {"model": "sim-small", "messages": [{"role": "user", "content": f"k9 {i} [[sim:tokens=12]]"}]}
            try:
                if i % 2:
                    async with c.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
                        data = b"".join([b async for b in r.aiter_bytes()])
                        if r.status_code == 200 and data.rstrip().endswith(b"data: [DONE]"):
                            acked.add(r.headers["x-bastion-request-id"])
                        else:
                            cut += 1
                else:
                    r = await c.post("/v1/chat/completions", json=body)
                    if r.status_code == 200 and r.json().get("choices"):
                        acked.add(r.headers["x-bastion-request-id"])
                    else:
                        cut += 1
            except (httpx.HTTPError, ValueError):
                cut += 1
            if len(acked) >= kill_after and not killed.is_set():
                killed.set()
                gw.popen.send_signal(signal.SIGKILL)

    async with httpx.AsyncClient(base_url=gw.url, headers={"authorization": f"Bearer {key}"}, timeout=30) as c:
        await asyncio.gather(*(one(c, i) for i in range(n)))
    gw.popen.wait(30)
    return acked, cut


def _logged(db: Path) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        return {r[0] for r in conn.execute("SELECT id FROM requests")}
    finally:
        conn.close()


@pytest.mark.parametrize("durable", [True, False])
def test_kill9_loses_no_answered_record_when_answers_wait_for_the_log(sim: Proc, tmp_path: Path, durable: bool) -> None:
    db = tmp_path / "b.db"
    cfg = write_config(tmp_path / "bastion.yaml", sim.url, store=db, flush_ms=60_000)
    if durable:
        cfg.write_text(cfg.read_text().replace("  flush_interval_ms: 60000\n",
                                               "  flush_interval_ms: 60000\n  commit_before_answer: true\n"))
    key = create_key(cfg)
    gw = start_gateway(cfg)
    acked, cut = asyncio.run(_load_then_kill(gw, key, 400, 150))
    # a restart ingests whatever was spilled; then the log is what survived the crash
    gw2 = start_gateway(cfg)
    gw2.stop()
    logged = _logged(db)
    lost = acked - logged
    print(f"\ncommit_before_answer={durable}: answered {len(acked)}, cut off by the kill {cut}, "
          f"logged {len(logged)}, answered but lost {len(lost)}")
    assert len(acked) >= 150
    if durable:
        assert not lost, f"{len(lost)} answered requests lost"
    else:
        assert lost, "with a 60 s flush window the crash should lose the answered records still queued"
