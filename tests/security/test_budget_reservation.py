"""Findings: (1) the budget reservation priced the client's body, before the guards added the canary and the
protective text around untrusted content, so concurrent requests overspent a hard budget (about +18 % in both
dialects); the extra paid calls of the guards (JSON repair, refusal fallback) were not reserved at all.
(2) Settlement had no cap and said nothing: an upstream that ignored ``max_tokens`` settled at 38x its
reservation. Now the reservation prices the body as sent upstream, an extra call reserves its own worst case
first (and is not made when the budget cannot take it), and a settlement above the reservation is recorded
truthfully but flagged ``over_reservation``, counted in a metric and alerted once per deployment per hour."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import anthropic
import openai
import pytest

from bastion.metering.tokens import count_chat, count_messages_request
from tests.procs import Proc
from tests.security.budget_stack import Stack, config, nusd, spent_nusd

LIMIT_NUSD = 1_000_000_000  # $1.00
BUDGETS = """
budgets:
  - {name: guarded-openai, scope: tenant, match: go, limit_usd: "1.00", period: day}
  - {name: guarded-anthropic, scope: tenant, match: ga, limit_usd: "1.00", period: day}
  - {name: repair-cap, scope: tenant, match: rep, limit_usd: "0.15", period: day}
  - {name: roomy, scope: tenant, match: big, limit_usd: "1000", period: day}
"""
SYSTEM = "You are the support assistant of ACME. Answer briefly and politely."
DOC = ("Quarterly report. Revenue grew in every region; the northern office opened two new branches, and the "
       "support team answered most tickets within a day. Costs stayed flat. ") * 2
ASK = "[[sim:latency_ms=600]] [[sim:tokens=5]] Summarise the document."


@pytest.fixture(scope="module")
def stack(sim: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    d = tmp_path_factory.mktemp("reservation")
    st = Stack(sim, None, config(d / "bastion.yaml", sim.url, d / "b.db", BUDGETS, ("go", "ga", "rep", "big")),
               d / "b.db")
    for tenant in ("go", "ga", "rep", "big"):
        st.key(tenant)
    st.start()
    yield st
    assert st.gateway is not None
    st.gateway.stop()


def _openai_body() -> dict:
    return {"model": "priced", "max_tokens": 5, "messages": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": [{"type": "text", "text": ASK}, {"type": "text", "text": DOC, "untrusted": True}]}]}


def _anthropic_body() -> dict:
    return {"model": "claude-priced", "max_tokens": 5, "system": SYSTEM, "messages": [
        {"role": "user", "content": [{"type": "text", "text": ASK}, {"type": "text", "text": DOC, "untrusted": True}]}]}


async def _burst_openai(st: Stack, n: int) -> list[str]:
    async with openai.AsyncOpenAI(base_url=st.base + "/v1", api_key=st.key("go"), max_retries=0, timeout=60) as c:
        async def one() -> str:
            try:
                await c.chat.completions.create(**_openai_body())
                return "ok"
            except openai.RateLimitError as e:
                return e.body["code"]  # type: ignore[index]
        return list(await asyncio.gather(*(one() for _ in range(n))))


async def _burst_anthropic(st: Stack, n: int) -> list[str]:
    async with anthropic.AsyncAnthropic(base_url=st.base, api_key=st.key("ga"), max_retries=0, timeout=60) as c:
        async def one() -> str:
            try:
                await c.messages.create(**_anthropic_body())
                return "ok"
            except anthropic.RateLimitError as e:
                return "budget_exceeded" if "budget" in e.message else e.message
        return list(await asyncio.gather(*(one() for _ in range(n))))


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_concurrent_guarded_requests_never_overspend(stack: Stack, dialect: str) -> None:
    tenant = "go" if dialect == "openai" else "ga"
    if dialect == "openai":
        outcomes = asyncio.run(_burst_openai(stack, 40))
        client_prompt = count_chat(_openai_body()["messages"], "sim-small")
    else:
        outcomes = asyncio.run(_burst_anthropic(stack, 40))
        client_prompt = count_messages_request(_anthropic_body(), "sim-claude")
    ok = outcomes.count("ok")
    assert ok > 0 and outcomes.count("budget_exceeded") == len(outcomes) - ok
    rows = stack.wait_rows("tenant = ? AND status = 200", (tenant,), ok)
    assert len(rows) == ok
    # the guards made the prompt the upstream billed much longer than the one the client sent
    assert all(r["prompt_tokens"] > client_prompt * 1.3 for r in rows)
    assert spent_nusd(rows) <= LIMIT_NUSD


def test_the_json_repair_call_is_reserved_before_it_is_made(stack: Stack) -> None:
    """A budget with room for the first answer but not for a second call: no repair call, no overspend."""
    client = openai.OpenAI(base_url=stack.base + "/v1", api_key=stack.key("rep"), max_retries=0, timeout=30)
    raw = client.chat.completions.with_raw_response.create(
        model="priced", max_tokens=30, response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "[[sim:echo]] this answer is not JSON at all, so the guard wants a "
                                              "repair of it"}])
    assert raw.status_code == 200
    row = stack.wait_rows("id = ?", (raw.headers["x-bastion-request-id"],), 1)[0]
    attempts = json.loads(row["attempts"])
    assert [a["kind"] for a in attempts] == ["first"]  # the repair call was not made
    assert any("repair call" in (g.get("message") or "") and "was not made" in g["message"]
               for g in json.loads(row["guards"]))
    assert spent_nusd(stack.rows("tenant = 'rep'")) <= 150_000_000


def _metric(st: Stack, name: str) -> float:
    import httpx

    total = 0.0
    for line in httpx.get(st.base + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_an_upstream_that_ignores_max_tokens_is_flagged_and_alerted(stack: Stack) -> None:
    # the simulator does not cap tool-call arguments by max_tokens: a long string argument ignores it
    tool = {"type": "function", "function": {"name": "write_essay", "parameters": {
        "type": "object", "properties": {"essay": {"type": "string", "minLength": 2000}}, "required": ["essay"]}}}
    client = openai.OpenAI(base_url=stack.base + "/v1", api_key=stack.key("big"), max_retries=0, timeout=30)
    before = _metric(stack, "bastion_budget_over_reservation_total")
    ids = []
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(
            model="priced", max_tokens=5, tools=[tool], messages=[{"role": "user", "content": "write an essay"}])
        out = raw.parse()
        assert out.usage is not None and out.usage.completion_tokens > 5 * 20
        ids.append((raw.headers["x-bastion-request-id"], out.usage.prompt_tokens, out.usage.completion_tokens))
    for rid, prompt, completion in ids:
        row = stack.wait_rows("id = ?", (rid,), 1)[0]
        assert row["cost_nusd"] == nusd(prompt, completion)  # the money was spent: recorded as it is
        assert "over_reservation" in json.loads(row["flags"])
    assert _metric(stack, "bastion_budget_over_reservation_total") == before + 2
    deadline = time.monotonic() + 10
    while not stack.alerts("over_reservation") and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    alerts = stack.alerts("over_reservation")
    assert len(alerts) == 1  # once per deployment per hour, however many requests
    data = json.loads(alerts[0]["data"])
    assert data["deployment"] == rows_deployment(stack, ids[0][0])
    assert data["request_id"] == ids[0][0] and "ignored max_tokens" in alerts[0]["message"]


def rows_deployment(st: Stack, rid: str) -> str:
    return st.rows("id = ?", (rid,))[0]["deployment"]
