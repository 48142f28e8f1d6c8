"""Simulator heavy-tail latency, context windows and content-filter refusals (a real subprocess)."""

from __future__ import annotations

import time

import anthropic
import httpx
import openai
import pytest

from bastion.metering.tokens import count_chat
from bastion.sim.faults import CONTENT_FILTER_OPENAI
from tests.sim_fixtures import claude, oai, sim  # noqa: F401  (fixtures)

SIM_YAML = """
seed: 5
context_window: 4000
profiles:
  always_slow: {latency: {median_ms: 10, slow_rate: 1, slow_factor: 20}}
  tail: {latency: {median_ms: 2, slow_rate: 0.25, slow_factor: 50}, faults: {rate_429: 0.3}}
  filtered: {faults: {rate_content_filter: 1.0}}
  mixed: {faults: {rate_429: 0.3}}
  tiny: {context_window: 40}
  unlimited: {context_window: 0}
  ctxmut: {}
"""
USER = [{"role": "user", "content": "Tell me about rivers."}]  # 12 prompt tokens in both dialects
N_USER = count_chat(USER, "gpt-4o")
LONG = " ".join(["river"] * 4100)
SLOW_S = 0.2  # always_slow: 10 ms x 20


def force(kind: str) -> list[dict]:
    return [{"role": "user", "content": f"Tell me about rivers. [[sim:fault={kind}]]"}]


def client(sim: str, profile: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{sim}/p/{profile}/v1", api_key="x", max_retries=0)


# --- heavy-tail latency --------------------------------------------------------------------------


def test_slow_requests_multiply_latency_and_ttft(sim: str) -> None:
    c = client(sim, "always_slow")
    t0 = time.perf_counter()
    c.chat.completions.create(model="m", messages=USER)
    assert time.perf_counter() - t0 >= SLOW_S
    t0 = time.perf_counter()
    stream = c.chat.completions.create(model="m", messages=USER, stream=True)
    first = next(iter(stream))  # headers come at once, the first token after the (slow) latency
    ttft = time.perf_counter() - t0
    assert first.choices[0].delta.role == "assistant" and ttft >= SLOW_S
    list(stream)
    t0 = time.perf_counter()
    anthropic.Anthropic(base_url=sim + "/p/always_slow", api_key="x").messages.create(
        model="c", max_tokens=10, messages=USER)
    assert time.perf_counter() - t0 >= SLOW_S
    t0 = time.perf_counter()  # a forced latency is exact: not multiplied
    c.chat.completions.create(model="m", messages=USER, extra_headers={"x-sim-latency-ms": "0"})
    assert time.perf_counter() - t0 < SLOW_S
    st = httpx.get(sim + "/sim/stats").json()["always_slow"]
    assert st["slow_requests"] == 3


def test_slow_pattern_is_reproducible_and_does_not_shift_faults(sim: str) -> None:
    http = httpx.Client(base_url=sim)
    body = {"model": "m", "messages": USER}

    def run() -> list[tuple[int, bool]]:
        http.post("/sim/reset")
        out = []
        for _ in range(24):
            t0 = time.perf_counter()
            status = http.post("/p/tail/v1/chat/completions", json=body).status_code
            out.append((status, status == 200 and time.perf_counter() - t0 > 0.09))  # slow: >= 100 ms, fast: ~2 ms
        return out

    first = run()
    slow_stat = http.get("/sim/stats").json()["tail"]["slow_requests"]
    assert run() == first
    statuses = [s for s, _ in first]
    assert {200, 429} <= set(statuses)
    n_slow = sum(slow for _, slow in first)
    assert 0 < n_slow <= slow_stat < 24  # slow_requests also counts the 429s that drew "slow"
    # without the heavy tail the fault pattern is the same: the slow draw has an RNG of its own
    assert http.post("/sim/config", json={"profile": "tail", "latency": {"slow_rate": 0}}).status_code == 200
    assert [s for s, _ in run()] == statuses
    assert http.post("/sim/config", json={"profile": "tail", "latency": {"slow_rate": 0.25}}).status_code == 200


def test_slow_config_validation(sim: str) -> None:
    for bad in ({"slow_rate": 1.5}, {"slow_rate": -0.1}, {"slow_factor": 0.5}):
        r = httpx.post(sim + "/sim/config", json={"profile": "tail", "latency": bad})
        assert r.status_code == 400, bad
    cfg = httpx.get(sim + "/sim/config").json()
    assert cfg["latency"]["slow_rate"] == 0 and cfg["latency"]["slow_factor"] == 10
    assert cfg["profiles"]["tail"]["latency"]["slow_rate"] == 0.25


# --- context window ------------------------------------------------------------------------------


def test_context_window_openai(oai: openai.OpenAI, sim: str) -> None:
    assert oai.chat.completions.create(model="m", messages=USER).choices[0].message.content
    n = count_chat([{"role": "user", "content": LONG}], "gpt-4o")
    with pytest.raises(openai.BadRequestError) as ei:
        oai.chat.completions.create(model="m", messages=[{"role": "user", "content": LONG}])
    assert ei.value.status_code == 400
    assert ei.value.body == {
        "message": f"This model's maximum context length is 4000 tokens. However, your messages resulted in {n} "
                   "tokens. Please reduce the length of the messages.",
        "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}
    tiny = client(sim, "tiny")
    assert tiny.chat.completions.create(model="m", messages=USER, max_tokens=40 - N_USER).choices
    with pytest.raises(openai.BadRequestError) as ei:  # prompt + max_tokens over the window
        tiny.chat.completions.create(model="m", messages=USER, max_completion_tokens=41 - N_USER, stream=True)
    assert ei.value.code == "context_length_exceeded"
    assert ei.value.body["message"] == (
        f"This model's maximum context length is 40 tokens. However, you requested 41 tokens ({N_USER} in the "
        f"messages, {41 - N_USER} in the completion). Please reduce the length of the messages or completion.")
    az = openai.AzureOpenAI(azure_endpoint=sim + "/p/tiny", api_key="k", api_version="2024-10-21", max_retries=0)
    with pytest.raises(openai.BadRequestError) as ei:
        az.chat.completions.create(model="dep", messages=USER, max_tokens=100)
    assert ei.value.code == "context_length_exceeded" and ei.value.param == "messages"
    long_ok = client(sim, "unlimited").chat.completions.create(model="m", messages=[{"role": "user", "content": LONG}])
    assert long_ok.usage.prompt_tokens == n


def test_context_window_anthropic(sim: str) -> None:
    tiny = anthropic.Anthropic(base_url=sim + "/p/tiny", api_key="x", max_retries=0)
    assert tiny.messages.create(model="c", max_tokens=40 - N_USER, messages=USER).content
    r = httpx.post(sim + "/p/tiny/v1/messages", json={"model": "c", "max_tokens": 30, "messages": USER})
    assert r.status_code == 400
    assert r.json() == {"type": "error", "error": {"type": "invalid_request_error",
                                                   "message": f"prompt is too long: {N_USER + 30} tokens > 40 maximum"}}
    with pytest.raises(anthropic.BadRequestError) as ei:
        tiny.messages.create(model="c", max_tokens=30, messages=USER, stream=True)
    assert ei.value.body["error"]["message"].startswith("prompt is too long:")


def test_context_window_changes_at_run_time(sim: str) -> None:
    c = client(sim, "ctxmut")
    assert c.chat.completions.create(model="m", messages=USER).choices
    assert httpx.post(sim + "/sim/config", json={"profile": "ctxmut", "context_window": 10}).status_code == 200
    with pytest.raises(openai.BadRequestError) as ei:
        c.chat.completions.create(model="m", messages=USER)
    assert "maximum context length is 10 tokens" in ei.value.message
    # 0 lifts the limit for the profile (null would inherit the default's 4000)
    assert httpx.post(sim + "/sim/config", json={"profile": "ctxmut", "context_window": 0}).status_code == 200
    assert c.chat.completions.create(model="m", messages=[{"role": "user", "content": LONG}]).choices
    assert httpx.post(sim + "/sim/config", json={"profile": "ctxmut", "context_window": None}).status_code == 200
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="m", messages=[{"role": "user", "content": LONG}])
    assert httpx.post(sim + "/sim/config", json={"context_window": -1}).status_code == 400
    st = httpx.get(sim + "/sim/stats").json()["ctxmut"]
    assert st["faults"] == {"context_length": 2}


def test_context_length_forced(oai: openai.OpenAI, claude: anthropic.Anthropic, sim: str) -> None:
    n = count_chat(force("context_length"), "gpt-4o")
    with pytest.raises(openai.BadRequestError) as ei:
        oai.chat.completions.create(model="m", messages=force("context_length"))
    assert ei.value.code == "context_length_exceeded"
    assert ei.value.body["message"].startswith(f"This model's maximum context length is {n - 1} tokens. However, your "
                                       f"messages resulted in {n} tokens.")
    with pytest.raises(anthropic.BadRequestError) as ai:
        claude.messages.create(model="c", max_tokens=5, messages=USER,
                               extra_headers={"x-sim-fault": "context_length"})
    assert ai.value.body == {"type": "error", "error": {
        "type": "invalid_request_error", "message": f"prompt is too long: {N_USER + 5} tokens > {N_USER - 1} maximum"}}
    r = httpx.post(sim + "/v1/embeddings", json={"model": "e", "input": "a b c"},
                   headers={"x-sim-fault": "context_length"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert r.json()["error"]["param"] == "input"


# --- content filter ------------------------------------------------------------------------------

OPENAI_FILTERED = {"message": CONTENT_FILTER_OPENAI, "type": "invalid_request_error", "param": "prompt",
                   "code": "content_filter"}
ANTHROPIC_FILTERED = {"type": "error", "error": {"type": "invalid_request_error",
                                                 "message": "Output blocked by content filtering policy"}}


def test_content_filter_forced(oai: openai.OpenAI, claude: anthropic.Anthropic, sim: str) -> None:
    assert CONTENT_FILTER_OPENAI.startswith("The response was filtered due to the prompt triggering Azure "
                                            "OpenAI's content management policy.")
    with pytest.raises(openai.BadRequestError) as ei:
        oai.chat.completions.create(model="m", messages=force("content_filter"))
    assert ei.value.status_code == 400 and ei.value.body == OPENAI_FILTERED
    with pytest.raises(openai.BadRequestError) as ei:
        list(oai.chat.completions.create(model="m", messages=USER, stream=True,
                                         extra_headers={"x-sim-fault": "content_filter"}))
    assert ei.value.code == "content_filter"
    az = openai.AzureOpenAI(azure_endpoint=sim, api_key="k", api_version="2024-10-21", max_retries=0)
    with pytest.raises(openai.BadRequestError) as ei:
        az.chat.completions.create(model="dep", messages=force("content_filter"))
    assert ei.value.body == OPENAI_FILTERED
    with pytest.raises(anthropic.BadRequestError) as ai:
        claude.messages.create(model="c", max_tokens=10, messages=force("content_filter"))
    assert ai.value.body == ANTHROPIC_FILTERED
    r = httpx.post(sim + "/v1/messages", headers={"x-sim-fault": "content_filter"},
                   json={"model": "c", "max_tokens": 10, "messages": USER, "stream": True})
    assert r.status_code == 400 and r.json() == ANTHROPIC_FILTERED


def test_content_filter_rate(sim: str) -> None:
    with pytest.raises(openai.BadRequestError) as ei:
        client(sim, "filtered").chat.completions.create(model="m", messages=USER)
    assert ei.value.code == "content_filter"
    r = httpx.post(sim + "/p/filtered/v1/messages", json={"model": "c", "max_tokens": 10, "messages": USER})
    assert r.status_code == 400 and r.json() == ANTHROPIC_FILTERED
    assert httpx.get(sim + "/sim/stats").json()["filtered"]["faults"] == {"content_filter": 2}
    # the rate counts in the sum-of-rates check
    bad = httpx.post(sim + "/sim/config", json={"profile": "filtered", "faults": {"rate_500": 0.1}})
    assert bad.status_code == 400


def test_content_filter_comes_last_in_fault_order(sim: str) -> None:
    http = httpx.Client(base_url=sim)
    body = {"model": "m", "messages": USER}

    def run() -> list[int]:
        http.post("/sim/reset")
        return [http.post("/p/mixed/v1/chat/completions", json=body).status_code for _ in range(30)]

    before = run()
    assert http.post("/sim/config", json={"profile": "mixed", "faults": {"rate_content_filter": 0.3}}).status_code == 200
    after = run()
    # adding the content filter leaves the 429s where they were; some of the 200s become 400s
    assert [i for i, s in enumerate(after) if s == 429] == [i for i, s in enumerate(before) if s == 429]
    assert {before[i] for i, s in enumerate(after) if s == 400} == {200}
    assert 400 in after and 200 in after
