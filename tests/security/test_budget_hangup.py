"""Finding: a client that hung up mid-stream was logged as a 499 with no tokens and $0, so a hard budget
admitted request after request while the clients received tokens (1,000 of 1,000 against $0.001). A cut
stream is now billed for the prompt as sent upstream and the text relayed (counted offline, flagged
``usage_estimated``), unless the upstream's own usage arrived; the same for an upstream that breaks off
mid-stream. The bill goes through the budget's settlement, so admissions stop once the budget is spent."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import openai
import pytest

from bastion.metering.tokens import count_text
from tests.procs import Proc
from tests.security.budget_stack import Stack, config, nusd, spent_nusd

LIMIT_NUSD = 300_000_000  # $0.30
MAX_TOKENS = 20
PROMPT = f"[[sim:tokens={MAX_TOKENS}]] [[sim:tps=10]] tell me a long story"
BUDGETS = """
budgets:
  - {name: hang-openai, scope: tenant, match: hang, limit_usd: "0.30", period: day}
  - {name: hang-anthropic, scope: tenant, match: hang2, limit_usd: "0.30", period: day}
  - {name: roomy, scope: tenant, match: broke, limit_usd: "100", period: day}
"""


@pytest.fixture(scope="module")
def stack(sim: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    d = tmp_path_factory.mktemp("hangup")
    st = Stack(sim, None, config(d / "bastion.yaml", sim.url, d / "b.db", BUDGETS,
                                     ("hang", "hang2", "broke", "free")), d / "b.db")
    for tenant in ("hang", "hang2", "broke", "free"):
        st.key(tenant)
    st.start()
    yield st
    assert st.gateway is not None
    st.gateway.stop()


def _prompt_tokens(st: Stack, model: str) -> int:
    """The prompt's tokens as the upstream counts them (a whole request by a tenant without a budget)."""
    if model == "claude-priced":
        c = anthropic.Anthropic(base_url=st.base, api_key=st.key("free"), max_retries=0)
        return c.messages.create(model=model, max_tokens=1, messages=[{"role": "user", "content": PROMPT}]
                                 ).usage.input_tokens
    o = openai.OpenAI(base_url=st.base + "/v1", api_key=st.key("free"), max_retries=0)
    r = o.chat.completions.create(model=model, max_tokens=1, messages=[{"role": "user", "content": PROMPT}])
    assert r.usage is not None
    return r.usage.prompt_tokens


def _hang_up_openai(client: openai.OpenAI, after: int) -> tuple[str | None, int]:
    """Stream, read ``after`` content chunks, hang up: (request id or None if refused, chunks seen)."""
    try:
        stream = client.chat.completions.create(model="priced", max_tokens=MAX_TOKENS, stream=True,
                                                messages=[{"role": "user", "content": PROMPT}])
    except openai.RateLimitError as e:
        assert e.body["code"] == "budget_exceeded"  # type: ignore[index]
        return None, 0
    rid = stream.response.headers["x-bastion-request-id"]
    seen = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            seen += 1
            if seen >= after:
                break
    stream.close()
    return rid, seen


def _hang_up_anthropic(client: anthropic.Anthropic, after: int) -> tuple[str | None, int]:
    try:
        stream = client.messages.create(model="claude-priced", max_tokens=MAX_TOKENS, stream=True,
                                        messages=[{"role": "user", "content": PROMPT}])
    except anthropic.RateLimitError as e:
        assert e.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
        return None, 0
    rid = stream.response.headers["x-bastion-request-id"]
    seen = 0
    for event in stream:
        if event.type == "content_block_delta":
            seen += 1
            if seen >= after:
                break
    stream.close()
    return rid, seen


@pytest.mark.parametrize("dialect", ["openai", "anthropic"])
def test_hang_ups_are_billed_and_the_budget_stops_admitting(stack: Stack, dialect: str) -> None:
    tenant, model = ("hang", "priced") if dialect == "openai" else ("hang2", "claude-priced")
    prompt = _prompt_tokens(stack, model)
    reservation = nusd(prompt, MAX_TOKENS)
    oc = openai.OpenAI(base_url=stack.base + "/v1", api_key=stack.key(tenant), max_retries=0, timeout=30)
    ac = anthropic.Anthropic(base_url=stack.base, api_key=stack.key(tenant), max_retries=0, timeout=30)
    results = []
    for _ in range(16):
        rid, seen = _hang_up_openai(oc, 3) if dialect == "openai" else _hang_up_anthropic(ac, 3)
        if rid is not None:  # settled (its row is written after the settlement): the next one sees its cost
            stack.wait_rows("id = ?", (rid,), 1)
        results.append((rid, seen))
    admitted = [(rid, seen) for rid, seen in results if rid is not None]
    # the budget ran out: some requests were refused, and once refused, every later one was
    assert 0 < len(admitted) < len(results)
    first_refused = next(i for i, (rid, _) in enumerate(results) if rid is None)
    assert all(rid is None for rid, _ in results[first_refused:])
    rows = stack.wait_rows("tenant = ? AND status IN (200, 499)", (tenant,), len(admitted))
    by_id = {r["id"]: r for r in rows}
    assert set(by_id) == {rid for rid, _ in admitted}
    hung_up = 0
    for rid, seen in admitted:
        row = by_id[rid]
        assert row["prompt_tokens"] == prompt  # the prompt as sent upstream
        assert row["cost_nusd"] == nusd(row["prompt_tokens"], row["completion_tokens"])
        if row["status"] == 200:
            # now and then the server does not notice the hang-up (an SDK's close): the stream runs to its end
            # and is billed in full from the upstream's own usage
            assert row["completion_tokens"] == MAX_TOKENS and not row["flags"]
            continue
        hung_up += 1
        assert row["error_code"] == "client_closed"
        assert "usage_estimated" in json.loads(row["flags"])
        # billed for at least the text the client saw, never beyond max_tokens
        assert seen <= row["completion_tokens"] <= MAX_TOKENS
    assert hung_up >= len(admitted) // 2
    # what the log says was spent is what the budget counted: it refused only once the money was gone
    total = spent_nusd(rows)
    assert total <= LIMIT_NUSD
    assert total > LIMIT_NUSD - reservation


def test_an_upstream_that_breaks_mid_stream_is_billed_for_what_it_relayed(stack: Stack) -> None:
    oc = openai.OpenAI(base_url=stack.base + "/v1", api_key=stack.key("broke"), max_retries=0, timeout=30)
    text = "[[sim:fault=drop]] [[sim:tokens=40]] break off half way"
    stream = oc.chat.completions.create(model="priced", max_tokens=50, stream=True,
                                        messages=[{"role": "user", "content": text}])
    rid = stream.response.headers["x-bastion-request-id"]
    seen: list[str] = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                seen.append(chunk.choices[0].delta.content)
    assert seen
    row = stack.wait_rows("id = ?", (rid,), 1)[0]
    assert row["status"] == 502 and row["error_code"] == "upstream_stream_broken"
    assert "usage_estimated" in json.loads(row["flags"])
    # the tokens of the text that reached the client (the simulator's tokens are o200k's, like sim-small's)
    received = count_text("".join(seen), "sim-small")
    assert 0 < received < 40 and row["completion_tokens"] == received
    assert row["prompt_tokens"] > 0
    assert row["cost_nusd"] == nusd(row["prompt_tokens"], received)
