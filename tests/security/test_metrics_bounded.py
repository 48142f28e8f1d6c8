"""Metric label sets are bounded: a client's made-up model names never become series; /metrics can be put
behind a credential (finding 5)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx

from tests.conftest import Stack
from tests.procs import Proc, create_key, start_gateway, write_config


def test_made_up_model_names_do_not_grow_metrics(stack: Stack) -> None:
    before = len(httpx.get(stack.base + "/metrics").content)

    async def run() -> None:
        async with httpx.AsyncClient(base_url=stack.base, headers={"authorization": f"Bearer {stack.key}"},
                                     timeout=30) as c:
            sem = asyncio.Semaphore(50)

            async def one(i: int) -> None:
                async with sem:
                    r = await c.post("/v1/chat/completions", json={
                        "model": f"made-up-{i}", "messages": [{"role": "user", "content": "hi"}]})
                    assert r.status_code == 404

            await asyncio.gather(*(one(i) for i in range(2000)))

    asyncio.run(run())
    text = httpx.get(stack.base + "/metrics").text
    assert "made-up-" not in text
    assert len(text) < before + 20_000  # a handful of new series (the "-" label), not 2,000


def test_metrics_key(sim: Proc, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "bastion.yaml", sim.url, store=tmp_path / "b.db")
    cfg.write_text(cfg.read_text().replace("server:\n  port: 0\n", "server:\n  port: 0\n  metrics_key_env: TEST_METRICS_TOKEN\n"))
    create_key(cfg)
    os.environ["TEST_METRICS_TOKEN"] = "scrape-me-7f3a"
    try:
        gw = start_gateway(cfg)
    finally:
        del os.environ["TEST_METRICS_TOKEN"]
    try:
        assert httpx.get(gw.url + "/metrics").status_code == 401
        bad = httpx.get(gw.url + "/metrics", headers={"authorization": "Bearer wrong"})
        assert bad.status_code == 401 and "server.metrics_key_env" in bad.text
        ok = httpx.get(gw.url + "/metrics", headers={"authorization": "Bearer scrape-me-7f3a"})
        assert ok.status_code == 200 and "bastion_requests" in ok.text
        assert httpx.get(gw.url + "/healthz").status_code == 200
    finally:
        gw.stop()
