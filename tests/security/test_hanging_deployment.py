"""A deployment that accepts connections and then hangs, with no first-token timeout configured: its
attempts fail at the per-mode default limit and fall back, and its breaker opens, instead of holding each
request it gets until total_s (finding 6: one hanging deployment failed 33% of requests)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from bastion.config.model import ProviderConfig
from bastion.config.reliability import TimeoutsConfig
from bastion.pipeline.deadlines import Deadlines
from tests.procs import create_key, start_gateway, start_sim


def test_a_first_token_limit_always_applies() -> None:
    async def run() -> tuple[float | None, float | None, float | None]:
        dl = Deadlines(600.0, {})
        prov = ProviderConfig(type="sim", base_url="http://127.0.0.1:9/v1")
        t = TimeoutsConfig()
        configured = TimeoutsConfig(first_token_s=7)
        return (dl.for_attempt(t, prov, stream=True).first_token_s, dl.for_attempt(t, prov, stream=False).first_token_s,
                dl.for_attempt(configured, prov, stream=False).first_token_s)

    assert asyncio.run(run()) == (30.0, 300.0, 7.0)


@pytest.fixture
def hanging(tmp_path: Path):
    sim_cfg = tmp_path / "sim.yaml"
    sim_cfg.write_text("seed: 3\noutput_tokens: {min: 4, max: 4}\n"
                       "profiles:\n  hang: {faults: {rate_timeout: 1.0, hang_s: 60}}\n")
    sim = start_sim(sim_cfg)
    cfg = tmp_path / "bastion.yaml"
    cfg.write_text(f"""
server: {{port: 0}}
store: {{url: "sqlite:///{tmp_path / 'b.db'}", flush_interval_ms: 50}}
providers:
  ok: {{type: sim, base_url: "{sim.url}/v1"}}
  stuck: {{type: sim, base_url: "{sim.url}/p/hang/v1"}}
routing:
  # first_token_s is NOT set: the per-mode defaults apply (lowered from 30 s / 300 s to keep the test short)
  timeouts: {{stream_first_token_s: 2, response_s: 2, total_s: 20}}
models:
  two:
    deployments: [{{provider: ok, model: sim-small}}, {{provider: stuck, model: sim-small}}]
tenants: {{default: {{}}}}
""")
    key = create_key(cfg)
    gw = start_gateway(cfg)
    yield gw, key
    gw.stop()
    sim.stop()


def test_a_hanging_deployment_fails_over_instead_of_failing_requests(hanging) -> None:
    gw, key = hanging

    async def run() -> list[int]:
        sem = asyncio.Semaphore(10)
        async with httpx.AsyncClient(base_url=gw.url, headers={"authorization": f"Bearer {key}"}, timeout=60) as c:
            async def one(i: int) -> int:
                async with sem:
                    body = {"model": "two", "messages": [{"role": "user", "content": f"hang {i}"}], "stream": i % 2 == 1}
                    r = await c.post("/v1/chat/completions", json=body)
                    ok = r.status_code == 200 and (b"[DONE]" in r.content if i % 2 else b"choices" in r.content)
                    return 200 if ok else r.status_code
            return await asyncio.gather(*(one(i) for i in range(60)))

    codes = asyncio.run(run())
    failed = sum(1 for c in codes if c != 200)
    print(f"\nhanging deployment, default first-token limits: {len(codes)} requests, {failed} failed")
    assert failed == 0, codes
    metrics = httpx.get(gw.url + "/metrics").text
    assert 'bastion_breaker_state{deployment="stuck/sim-small"} 2.0' in metrics
