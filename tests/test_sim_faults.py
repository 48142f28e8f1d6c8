"""Simulator faults, determinism, profiles and the admin API (a real subprocess)."""

from __future__ import annotations

import json

import anthropic
import httpx
import openai
import pytest

from tests.sim_fixtures import claude, oai, sim  # noqa: F401  (fixtures)

SIM_YAML = """
seed: 11
profiles:
  flaky: {faults: {rate_500: 1.0}}
  chaos: {faults: {rate_429: 0.2, rate_500: 0.2, rate_503: 0.2}}
  pinned: {model_version: "2025-01-01", system_fingerprint: "fp_pinned"}
  mutable: {}
  counted: {}
"""
USER = [{"role": "user", "content": "Tell me about rivers."}]
# the anthropic SDK lets the transport's error escape from a stream cut mid-body
try:
    import httpx2

    STREAM_BROKEN: tuple[type[BaseException], ...] = (anthropic.APIConnectionError, httpx.RemoteProtocolError,
                                                     httpx2.RemoteProtocolError)
except ImportError:
    STREAM_BROKEN = (anthropic.APIConnectionError, httpx.RemoteProtocolError)


def fault(kind: str) -> list[dict]:
    return [{"role": "user", "content": f"Tell me about rivers. [[sim:fault={kind}]] [[sim:tokens=10]]"}]


# --- faults --------------------------------------------------------------------------------------


def test_429_keeps_retry_after(oai: openai.OpenAI, claude: anthropic.Anthropic, sim: str) -> None:
    with pytest.raises(openai.RateLimitError) as ei:
        oai.chat.completions.create(model="m", messages=fault("429"))
    assert ei.value.response.headers["retry-after"] == "1"
    assert ei.value.response.headers["retry-after-ms"] == "1000"
    assert ei.value.code == "rate_limit_exceeded"
    with pytest.raises(anthropic.RateLimitError) as ai:
        claude.messages.create(model="c", max_tokens=10, messages=fault("429"))
    assert ai.value.response.headers["retry-after"] == "1"
    assert ai.value.body["error"]["type"] == "rate_limit_error"
    r = httpx.post(sim + "/v1/embeddings", json={"model": "e", "input": "x"}, headers={"x-sim-fault": "429"})
    assert r.status_code == 429 and r.headers["retry-after"] == "1"


def test_5xx(oai: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    for kind, status in (("500", 500), ("503", 503)):
        with pytest.raises(openai.InternalServerError) as ei:
            oai.chat.completions.create(model="m", messages=fault(kind))
        assert ei.value.status_code == status and ei.value.body["type"] == "server_error"
        with pytest.raises(anthropic.APIStatusError) as ai:
            claude.messages.create(model="c", max_tokens=10, messages=fault(kind))
        assert ai.value.status_code == status
        assert ai.value.body["type"] == "error"
    assert ai.value.body["error"]["type"] == "overloaded_error"


def test_drop(oai: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    with pytest.raises(openai.APIConnectionError):
        oai.chat.completions.create(model="m", messages=fault("drop"))
    got: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in oai.chat.completions.create(model="m", messages=fault("drop"), stream=True):
            got.append(chunk.choices[0].delta.content or "")
    assert len(got) >= 1  # the role chunk and some tokens arrived before the drop
    with pytest.raises(anthropic.APIConnectionError):
        claude.messages.create(model="c", max_tokens=50, messages=fault("drop"))
    with pytest.raises(STREAM_BROKEN), claude.messages.stream(
            model="c", max_tokens=50, messages=fault("drop")) as s:
        s.get_final_message()


def test_truncate(oai: openai.OpenAI, sim: str) -> None:
    chunks = list(oai.chat.completions.create(model="m", messages=fault("truncate"), stream=True))
    assert chunks and all(c.choices[0].finish_reason is None for c in chunks)
    body = {"model": "m", "messages": fault("truncate"), "stream": True}
    r = httpx.post(sim + "/v1/chat/completions", json=body)
    assert r.status_code == 200 and "[DONE]" not in r.text and r.text.endswith("\n\n")
    r = httpx.post(sim + "/v1/messages", json={**body, "max_tokens": 50})
    assert r.status_code == 200 and "message_stop" not in r.text and "message_start" in r.text
    r = httpx.post(sim + "/v1/chat/completions", json={**body, "stream": False})
    assert r.status_code == 200 and r.text.startswith('{"id":"chatcmpl-')
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.text)


def test_malformed(oai: openai.OpenAI, claude: anthropic.Anthropic, sim: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        list(oai.chat.completions.create(model="m", messages=fault("malformed"), stream=True))
    with pytest.raises(json.JSONDecodeError):
        list(claude.messages.create(model="c", max_tokens=50, messages=fault("malformed"), stream=True))
    body = {"model": "m", "messages": fault("malformed"), "stream": True}
    r = httpx.post(sim + "/v1/chat/completions", json=body)
    datas = [line[6:] for line in r.text.split("\n") if line.startswith("data: ")]
    assert datas[-1] == "[DONE]"
    bad = []
    for d in datas[:-1]:
        try:
            json.loads(d)
        except json.JSONDecodeError:
            bad.append(d)
    assert len(bad) == 1 and 0 < datas.index(bad[0]) < len(datas) - 2
    r = httpx.post(sim + "/v1/chat/completions", json={**body, "stream": False})
    assert r.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.text)


def test_timeout(sim: str) -> None:
    client = openai.OpenAI(base_url=sim + "/v1", api_key="x", max_retries=0, timeout=0.3)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="m", messages=fault("timeout"))
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(sim + "/v1/messages", timeout=0.3, headers={"x-sim-fault": "timeout"},
                   json={"model": "c", "max_tokens": 5, "messages": USER})
    assert httpx.get(sim + "/healthz").status_code == 200  # the sim is still responsive


def test_fault_pattern_is_reproducible(sim: str) -> None:
    client = httpx.Client(base_url=sim)

    def run() -> list[int]:
        client.post("/sim/reset")
        return [client.post("/p/chaos/v1/chat/completions", json={"model": "m", "messages": USER}).status_code
                for _ in range(30)]

    first = run()
    assert run() == first
    assert {200, 429, 500, 503} <= set(first)


# --- determinism and config -----------------------------------------------------------------------


def _text(oai: openai.OpenAI, **kw: object) -> str:
    return oai.chat.completions.create(model="sim-small", messages=USER, **kw).choices[0].message.content


def test_determinism(oai: openai.OpenAI) -> None:
    assert _text(oai, seed=1) == _text(oai, seed=1)
    assert _text(oai, seed=1) != _text(oai, seed=2)
    assert _text(oai, temperature=0) == _text(oai, temperature=0)
    assert len({_text(oai) for _ in range(4)}) > 1  # no seed, default temperature: sampled


def test_model_version_change(sim: str) -> None:
    client = openai.OpenAI(base_url=sim + "/p/mutable/v1", api_key="x", max_retries=0)
    before = client.chat.completions.create(model="sim-small", messages=USER, seed=4)
    assert before.model == "sim-small-2026-11-01" and before.system_fingerprint == "fp_sim_0001"
    r = httpx.post(sim + "/sim/config", json={"profile": "mutable", "model_version": "2027-02-02",
                                              "system_fingerprint": "fp_new"})
    assert r.status_code == 200 and r.json()["profiles"]["mutable"]["model_version"] == "2027-02-02"
    after = client.chat.completions.create(model="sim-small", messages=USER, seed=4)
    assert after.model == "sim-small-2027-02-02" and after.system_fingerprint == "fp_new"
    assert after.choices[0].message.content != before.choices[0].message.content
    # the default deployment is untouched
    assert httpx.get(sim + "/sim/config").json()["model_version"] == "2026-11-01"
    bad = httpx.post(sim + "/sim/config", json={"faults": {"rate_500": 7}})
    assert bad.status_code == 400


def test_profiles(sim: str) -> None:
    flaky = openai.OpenAI(base_url=sim + "/p/flaky/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.InternalServerError):
        flaky.chat.completions.create(model="m", messages=USER)
    pinned = anthropic.Anthropic(base_url=sim + "/p/pinned", api_key="x", max_retries=0)
    m = pinned.messages.create(model="claude-sim", max_tokens=20, messages=USER)
    assert m.model == "claude-sim-2025-01-01"
    fp = openai.OpenAI(base_url=sim + "/p/pinned/v1", api_key="x").chat.completions.create(
        model="m", messages=USER).system_fingerprint
    assert fp == "fp_pinned"


def test_stats(sim: str) -> None:
    base = sim + "/p/counted"
    client = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0)
    client.chat.completions.create(model="m", messages=USER)
    list(client.chat.completions.create(model="m", messages=USER, stream=True))
    client.embeddings.create(model="e", input="hi")
    client.models.list()
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="m", messages=fault("429"))
    list(client.chat.completions.create(model="m", messages=fault("truncate"), stream=True))
    anthropic.Anthropic(base_url=base, api_key="x").messages.create(model="c", max_tokens=9, messages=USER)
    st = httpx.get(sim + "/sim/stats").json()["counted"]
    assert st["requests"] == 7
    assert st["endpoints"] == {"chat.completions": 4, "embeddings": 1, "models": 1, "messages": 1}
    assert st["faults"] == {"429": 1, "truncate": 1} and st["faults_total"] == 2
    assert st["streams_started"] == 2 and st["streams_completed"] == 1
    assert st["completion_tokens"] > 0 and st["prompt_tokens"] > 0
    assert httpx.post(sim + "/sim/reset").status_code == 200
    assert "counted" not in httpx.get(sim + "/sim/stats").json()
