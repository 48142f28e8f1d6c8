"""Chaos tests: the real gateway in front of simulator deployments with different fault mixes.

Each scenario has its own simulator profile (served at ``/p/<name>/v1``) and its own provider, so that
breakers and budgets of one scenario do not leak into another.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from tests.procs import Proc, create_key, start_gateway, start_sim, wait_log_row

SIM_YAML = """
profiles:
  flaky:      {faults: {rate_429: 0.08, retry_after_s: 0, rate_500: 0.06, rate_503: 0.06, rate_timeout: 0.04,
                        hang_s: 30, rate_drop: 0.06}}
  flaky-s:    {faults: {rate_429: 0.10, retry_after_s: 0, rate_500: 0.08, rate_503: 0.07, rate_timeout: 0.05,
                        hang_s: 30}}
  healthy:    {}
  healthy-s:  {}
  hang:       {faults: {rate_timeout: 1.0, hang_s: 60}}
  rescue:     {}
  breaks:     {faults: {rate_truncate: 1.0}}
  deadable:   {faults: {rate_500: 1.0}}
  alive:      {}
  slow:       {latency: {distribution: fixed, median_ms: 1500}}
  fast:       {}
  small-ctx:  {context_window: 60}
  long-ctx:   {}
  filtering:  {faults: {rate_content_filter: 1.0}}
  always503:  {faults: {rate_503: 1.0}}
  limited:    {}
  ratelimit:  {faults: {rate_429: 1.0, retry_after_s: 0.3}}
  lat-slow:   {latency: {distribution: fixed, median_ms: 150}}
  lat-fast:   {}
"""

PROFILES = ["flaky", "flaky-s", "healthy", "healthy-s", "hang", "rescue", "breaks", "deadable", "alive", "slow", "fast", "small-ctx",
            "long-ctx", "filtering", "always503", "limited", "ratelimit", "lat-slow", "lat-fast"]

MODELS_YAML = """
routing:
  breaker: {consecutive_failures: 5, open_s: 1}
models:
  chaos:
    deployments: [{provider: flaky, model: sim-small}, {provider: healthy, model: sim-small}]
    timeouts: {first_token_s: 0.5}
    breaker: {consecutive_failures: 12}   # 30% failures must not open it: this test is about retries
  chaos-stream:
    deployments: [{provider: flaky-s, model: sim-small}, {provider: healthy-s, model: sim-small}]
    timeouts: {first_token_s: 0.5}
    breaker: {consecutive_failures: 12}
  hangs:
    deployments: [{provider: hang, model: sim-small}]
    timeouts: {first_token_s: 0.5, max_override_s: 30, min_override_s: 0.1}
    breaker: {enabled: false}
    fallback: {models: [rescue]}
  rescue:
    deployments: [{provider: rescue, model: sim-small}]
  breaks:
    deployments: [{provider: breaks, model: sim-small}]
    fallback: {models: [rescue]}
  pair:
    deployments: [{provider: deadable, model: sim-small}, {provider: alive, model: sim-small}]
    breaker: {consecutive_failures: 3, open_s: 1, min_requests: 1000}
  down:
    deployments: [{provider: nowhere, model: x}, {provider: nowhere2, model: x}]
  down-degraded:
    deployments: [{provider: nowhere3, model: x}]
    fallback:
      degraded: {content: "We are busy right now; please try again in a minute."}
  short:
    deployments: [{provider: small-ctx, model: sim-small}]
    fallback: {on_context_overflow: [long]}
  short-only:
    deployments: [{provider: small-ctx, model: sim-small}]
  long:
    deployments: [{provider: long-ctx, model: sim-small}]
  filtered:
    deployments: [{provider: filtering, model: sim-small}]
    fallback: {on_content_filter: [rescue]}
  budgeted:
    deployments: [{provider: always503, model: sim-small}]
    retry: {max_attempts: 3, backoff_base_ms: 1, backoff_max_ms: 2, budget_ratio: 0.1, budget_min_per_s: 0.1,
            budget_window_s: 30}
    breaker: {enabled: false}
  limited:
    deployments: [{provider: limited, model: sim-small, rpm: 3}]
  ratelimited:
    deployments: [{provider: ratelimit, model: sim-small}]
    retry: {max_attempts: 2}
    breaker: {enabled: false}
  hedged:
    deployments: [{provider: slow, model: sim-small, weight: 1000}, {provider: fast, model: sim-small, weight: 0.001}]
    hedge: {enabled: true, delay_ms: 100}
  nearest:
    strategy: lowest_latency
    deployments: [{provider: lat-slow, model: sim-small}, {provider: lat-fast, model: sim-small}]
"""


@dataclass
class Chaos:
    sim: Proc
    gw: Proc
    store: Path
    key: str

    @property
    def base(self) -> str:
        return self.gw.url

    def row(self, rid: str, timeout: float = 15) -> dict:
        r = wait_log_row(self.store, rid, timeout)
        r["attempts"] = json.loads(r["attempts"])
        return r

    def post(self, model: str, content: str = "hi", *, stream: bool = False, headers: dict | None = None,
             path: str = "/v1/chat/completions", **extra) -> httpx.Response:
        body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
        if stream:
            body["stream"] = True
        if path == "/v1/messages":
            body.setdefault("max_tokens", 64)
        return httpx.post(self.base + path, json=body, timeout=60,
                          headers={"authorization": f"Bearer {self.key}", **(headers or {})})

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(self.base + "/metrics").text
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def sim_config(self, patch: dict) -> None:
        httpx.post(self.sim.url + "/sim/config", json=patch).raise_for_status()


@pytest.fixture(scope="module")
def chaos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chaos]:
    d = tmp_path_factory.mktemp("chaos")
    (d / "sim.yaml").write_text(SIM_YAML)
    sim = start_sim(d / "sim.yaml")
    providers = "\n".join(f"  {p}: {{type: sim, base_url: {sim.url}/p/{p}/v1}}" for p in PROFILES)
    dead = "\n".join(f"  {n}: {{type: openai, base_url: http://127.0.0.1:9/v1, connect_timeout_s: 1}}"
                     for n in ("nowhere", "nowhere2", "nowhere3"))
    store = d / "bastion.db"
    cfg = d / "bastion.yaml"
    cfg.write_text(f"server: {{port: 0}}\nstore: {{url: 'sqlite:///{store}', flush_interval_ms: 20}}\n"
                   f"providers:\n{providers}\n{dead}\n{MODELS_YAML}")
    key = create_key(cfg)
    gw = start_gateway(cfg)
    yield Chaos(sim, gw, store, key)
    gw.stop()
    sim.stop()


def _sse(text: str) -> list[tuple[str | None, dict | str]]:
    out: list[tuple[str | None, dict | str]] = []
    for block in text.strip().split("\n\n"):
        event, data = None, None
        for line in block.splitlines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = line[5:].strip()
        if data is not None:
            out.append((event, data if data == "[DONE]" else json.loads(data)))
    return out


# ---- 30% failures on one of two deployments ------------------------------------------------------


def test_thousand_requests_through_30_percent_faults_all_succeed_within_retry_budget(chaos: Chaos) -> None:
    client = openai.AsyncOpenAI(base_url=chaos.base + "/v1", api_key=chaos.key, max_retries=0, timeout=60)
    sem = asyncio.Semaphore(50)

    async def one(i: int) -> tuple[str, str]:
        async with sem:
            msgs = [{"role": "user", "content": f"request {i}"}]
            if i % 4 == 0:
                # A quarter streamed, through a deployment whose faults all strike before the first token
                # (a drop after tokens were sent cannot be retried: see the broken-stream tests below).
                stream = await client.chat.completions.create(model="chaos-stream", messages=msgs, stream=True)
                text = ""
                async for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        text += chunk.choices[0].delta.content
                rid = stream.response.headers["x-bastion-request-id"]
                return rid, text
            raw = await client.chat.completions.with_raw_response.create(model="chaos", messages=msgs)
            return raw.headers["x-bastion-request-id"], raw.parse().choices[0].message.content or ""

    async def run() -> list[tuple[str, str]]:
        try:
            return await asyncio.gather(*(one(i) for i in range(1000)))
        finally:
            await client.close()

    results = asyncio.run(run())  # any failed client request raises here
    assert len(results) == 1000 and all(text for _, text in results)
    rows = [chaos.row(rid) for rid, _ in results]
    assert all(r["status"] == 200 for r in rows)
    attempts = [a for r in rows for a in r["attempts"] if a["outcome"] != "skipped"]
    failed = [a for a in attempts if a["outcome"] in ("error", "timeout")]
    for dep, n in (("flaky/sim-small", 750), ("flaky-s/sim-small", 250)):
        flaky = [a for a in attempts if a["deployment"] == dep]
        # the fault mix really hit: about 30% of the flaky deployment's attempts failed
        assert 0.2 < sum(a["outcome"] != "ok" for a in flaky) / len(flaky) < 0.4, dep
        assert n * 0.3 < len(flaky) < n * 0.8
    codes = {a["error_code"] for a in failed}
    assert {"upstream_rate_limited", "upstream_server_error", "upstream_overloaded", "upstream_timeout",
            "upstream_unavailable"} <= codes
    assert {a["deployment"] for a in failed} == {"flaky/sim-small", "flaky-s/sim-small"}
    # retries (a deployment tried again within one request) stay inside the budget:
    # 20% of requests + 2/s over the 10 s window, per deployment
    for dep in ("flaky/sim-small", "healthy/sim-small", "flaky-s/sim-small", "healthy-s/sim-small"):
        retries = sum(1 for a in attempts if a["deployment"] == dep and a["kind"] == "retry")
        requests = sum(1 for a in attempts if a["deployment"] == dep and a["kind"] != "retry")
        assert retries <= 0.2 * requests + 20, (dep, retries, requests)
    assert len(attempts) / 1000 < 1.4
    assert chaos.metric("bastion_fallbacks_total", model="chaos") >= len(failed) * 0.5


# ---- a deployment that hangs ---------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_hanging_deployment_falls_back_within_first_token_timeout(chaos: Chaos, stream: bool) -> None:
    t0 = time.monotonic()
    r = chaos.post("hangs", stream=stream)
    elapsed = time.monotonic() - t0
    assert r.status_code == 200
    assert r.headers["x-bastion-fallback-model"] == "rescue"
    assert r.headers["x-bastion-deployment"] == "rescue/sim-small"
    assert r.headers["x-bastion-attempts"] == "2"
    row = chaos.row(r.headers["x-bastion-request-id"])
    hang, ok = row["attempts"]
    assert (hang["deployment"], hang["outcome"], hang["error_code"]) == ("hang/sim-small", "timeout", "upstream_timeout")
    assert "0.5s" in hang["error"] and "first token" in hang["error"]
    assert (ok["deployment"], ok["outcome"], ok["kind"], ok["alias"]) == ("rescue/sim-small", "ok", "fallback", "rescue")
    # the hung attempt was cut at the first-token timeout, not at the upstream's 60 s hang
    assert 0.45 <= hang["ended_at"] - hang["started_at"] < 5
    healthy_attempt = ok["ended_at"] - ok["started_at"] if not stream else ok["first_byte_at"] - ok["started_at"]
    assert elapsed < 0.5 + healthy_attempt + 5
    assert row["status"] == 200 and row["alias"] == "hangs"


def test_timeout_header_overrides_within_bounds(chaos: Chaos) -> None:
    r = chaos.post("hangs", headers={"x-bastion-timeout-first-token": "0.2"})
    assert r.status_code == 200
    hang = chaos.row(r.headers["x-bastion-request-id"])["attempts"][0]
    assert "0.2s" in hang["error"] and hang["ended_at"] - hang["started_at"] < 0.5
    for value, needle in (("999", "between"), ("soon", "number of seconds"), ("0", "between")):
        bad = chaos.post("hangs", headers={"x-bastion-timeout-total": value})
        assert bad.status_code == 400, value
        err = bad.json()["error"]
        assert err["type"] == "invalid_request_error" and needle in err["message"]
        assert "x-bastion-timeout-total" in err["message"]


def test_total_timeout_header_ends_the_request(chaos: Chaos) -> None:
    r = chaos.post("hangs", headers={"x-bastion-timeout-total": "0.3", "x-bastion-timeout-first-token": "5"})
    assert r.status_code == 504
    err = r.json()["error"]
    assert err["code"] == "upstream_timeout" and "total timeout" in err["message"]


# ---- a stream that breaks after tokens were sent -------------------------------------------------


def test_stream_broken_after_tokens_openai_error_event_no_retry(chaos: Chaos) -> None:
    retries_before = chaos.metric("bastion_retries_total")
    r = chaos.post("breaks", "[[sim:tokens=20]]", stream=True)
    assert r.status_code == 200
    events = _sse(r.text)
    assert events[-1][1] != "[DONE]" and all(data != "[DONE]" for _, data in events)
    err = events[-1][1]
    assert isinstance(err, dict) and err["error"]["code"] == "upstream_stream_truncated"
    assert err["error"]["request_id"] == r.headers["x-bastion-request-id"]
    text = "".join((c["choices"][0]["delta"].get("content") or "") for _, c in events[:-1]
                   if isinstance(c, dict) and c.get("choices"))
    assert text
    row = chaos.row(r.headers["x-bastion-request-id"])
    assert len(row["attempts"]) == 1 and row["attempts"][0]["deployment"] == "breaks/sim-small"
    assert row["error_code"] == "upstream_stream_truncated"
    logged = json.loads(row["response"])["choices"][0]["message"]["content"]
    assert logged == text  # what the client got, once: nothing duplicated, nothing re-sent
    assert chaos.metric("bastion_retries_total") == retries_before


def test_stream_broken_after_tokens_anthropic_error_event_no_retry(chaos: Chaos) -> None:
    r = chaos.post("breaks", "[[sim:tokens=20]]", stream=True, path="/v1/messages")
    assert r.status_code == 200
    events = _sse(r.text)
    kind, err = events[-1]
    assert kind == "error" and isinstance(err, dict)
    assert err["type"] == "error" and err["error"]["type"] == "api_error"
    assert "truncated" in err["error"]["message"]
    assert not any(k == "message_stop" for k, _ in events)
    deltas = [d["delta"]["text"] for k, d in events if k == "content_block_delta" and isinstance(d, dict)]
    assert deltas
    row = chaos.row(r.headers["request-id"])
    assert len(row["attempts"]) == 1 and row["status"] >= 500


def test_stream_broken_through_the_sdks(chaos: Chaos) -> None:
    client = openai.OpenAI(base_url=chaos.base + "/v1", api_key=chaos.key, max_retries=0)
    got = []
    with pytest.raises(openai.APIError) as ei:
        for chunk in client.chat.completions.create(
                model="breaks", stream=True, messages=[{"role": "user", "content": "[[sim:tokens=20]]"}]):
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)
    assert got and "truncated" in str(ei.value)
    ac = anthropic.Anthropic(base_url=chaos.base, api_key=chaos.key, max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as ai:  # noqa: PT012
        with ac.messages.stream(model="breaks", max_tokens=64,
                                messages=[{"role": "user", "content": "[[sim:tokens=20]]"}]) as s:
            for _ in s.text_stream:
                pass
    assert "truncated" in str(ai.value)


# ---- a dead deployment: breaker opens, traffic moves, probing brings it back ----------------------


def test_dead_deployment_breaker_opens_moves_traffic_and_recovers(chaos: Chaos) -> None:
    rows = []
    for i in range(30):
        r = chaos.post("pair", f"q{i}")
        assert r.status_code == 200, r.text
        rows.append(chaos.row(r.headers["x-bastion-request-id"]))
    tried_dead = [a for row in rows for a in row["attempts"]
                  if a["deployment"] == "deadable/sim-small" and a["outcome"] != "skipped"]
    assert 3 <= len(tried_dead) <= 5  # three failures in a row open it; at most a probe or two after
    skipped = [a for row in rows for a in row["attempts"] if a["outcome"] == "skipped"]
    assert skipped and all(a["error_code"] == "breaker_open" for a in skipped)
    assert chaos.metric("bastion_breaker_state", deployment="deadable/sim-small") in (1, 2)
    assert chaos.metric("bastion_breaker_transitions_total", deployment="deadable/sim-small", state="open") >= 1

    chaos.sim_config({"profile": "deadable", "faults": {"rate_500": 0}})  # it recovers
    time.sleep(1.2)  # past open_s: the next request to pick it is the half-open probe
    served_by_dead = 0
    for i in range(40):
        r = chaos.post("pair", f"after {i}")
        assert r.status_code == 200
        served_by_dead += r.headers["x-bastion-deployment"] == "deadable/sim-small"
        if served_by_dead >= 3:
            break
        time.sleep(0.05)
    assert served_by_dead >= 3  # probed, closed, and taking traffic again
    assert chaos.metric("bastion_breaker_transitions_total", deployment="deadable/sim-small", state="half_open") >= 1
    assert chaos.metric("bastion_breaker_transitions_total", deployment="deadable/sim-small", state="closed") >= 1
    assert chaos.metric("bastion_breaker_state", deployment="deadable/sim-small") == 0


# ---- every upstream down ---------------------------------------------------------------------------


def test_every_upstream_down_is_a_clear_503_in_both_dialects(chaos: Chaos) -> None:
    r = chaos.post("down")
    assert r.status_code == 503
    err = r.json()["error"]
    assert err["code"] in ("upstreams_failed", "circuit_open") and "nowhere" in err["message"]
    assert r.headers["retry-after"]
    a = chaos.post("down", path="/v1/messages")
    assert a.status_code == 503
    body = a.json()
    assert body["type"] == "error" and body["error"]["type"] == "overloaded_error"
    ac = anthropic.Anthropic(base_url=chaos.base, api_key=chaos.key, max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as ei:
        ac.messages.create(model="down", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    assert ei.value.status_code == 503
    oc = openai.OpenAI(base_url=chaos.base + "/v1", api_key=chaos.key, max_retries=0)
    with pytest.raises(openai.InternalServerError) as oi:
        oc.chat.completions.create(model="down", messages=[{"role": "user", "content": "hi"}])
    assert oi.value.status_code == 503


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
@pytest.mark.parametrize("stream", [False, True])
def test_every_upstream_down_serves_the_degraded_answer(chaos: Chaos, path: str, stream: bool) -> None:
    r = chaos.post("down-degraded", stream=stream, path=path)
    assert r.status_code == 200 and r.headers["x-bastion-degraded"] == "true"
    want = "We are busy right now; please try again in a minute."
    if not stream:
        body = r.json()
        text = body["choices"][0]["message"]["content"] if path.endswith("completions") else body["content"][0]["text"]
    else:
        events = _sse(r.text)
        if path.endswith("completions"):
            assert events[-1][1] == "[DONE]"
            text = "".join(c["choices"][0]["delta"].get("content") or "" for _, c in events[:-1] if c["choices"])
        else:
            assert events[-1][0] == "message_stop"
            text = "".join(d["delta"]["text"] for k, d in events if k == "content_block_delta")
    assert text == want
    rid = r.headers.get("x-request-id") or r.headers["request-id"]
    row = chaos.row(rid)
    assert row["status"] == 200 and row["error_code"] == "degraded" and "nowhere3" in row["error_message"]


def test_degraded_answer_through_the_sdk(chaos: Chaos) -> None:
    oc = openai.OpenAI(base_url=chaos.base + "/v1", api_key=chaos.key, max_retries=0)
    out = oc.chat.completions.create(model="down-degraded", messages=[{"role": "user", "content": "hi"}])
    assert out.choices[0].message.content.startswith("We are busy")


# ---- re-routing on context overflow and content filter ---------------------------------------------


def test_context_overflow_goes_to_the_longer_context_model(chaos: Chaos) -> None:
    long_prompt = "word " * 200
    r = chaos.post("short", long_prompt)
    assert r.status_code == 200
    assert r.headers["x-bastion-fallback-model"] == "long"
    first, second = chaos.row(r.headers["x-bastion-request-id"])["attempts"]
    assert first["status"] == 400 and "context" in first["error"]
    assert second["deployment"] == "long-ctx/sim-small"
    # without a configured fallback the 400 goes to the client as it is, never retried
    r = chaos.post("short-only", long_prompt)
    assert r.status_code == 400 and "maximum context length" in r.json()["error"]["message"]
    assert len(chaos.row(r.headers["x-bastion-request-id"])["attempts"]) == 1
    assert chaos.post("short", "hi").headers["x-bastion-deployment"] == "small-ctx/sim-small"


def test_content_filter_refusal_goes_to_the_configured_fallback(chaos: Chaos) -> None:
    r = chaos.post("filtered")
    assert r.status_code == 200 and r.headers["x-bastion-fallback-model"] == "rescue"
    first = chaos.row(r.headers["x-bastion-request-id"])["attempts"][0]
    assert first["status"] == 400 and "content" in first["error"].lower()


def test_bad_request_is_never_retried(chaos: Chaos) -> None:
    r = chaos.post("chaos", max_tokens="lots")
    assert r.status_code == 400
    r = chaos.post("rescue", "[[sim:fault=context_length]]")
    assert r.status_code == 400
    assert r.headers["x-bastion-attempts"] == "1"


# ---- budgets and limits ----------------------------------------------------------------------------


def test_retry_budget_caps_retries_against_a_failing_deployment(chaos: Chaos) -> None:
    statuses = []
    for i in range(40):
        r = chaos.post("budgeted", f"b{i}")
        statuses.append(r.status_code)
        chaos.row(r.headers["x-bastion-request-id"])
    assert set(statuses) <= {503}
    conn = sqlite3.connect(chaos.store)
    rows = [json.loads(a) for (a,) in conn.execute("SELECT attempts FROM requests WHERE alias = 'budgeted'")]
    conn.close()
    sent = [a for att in rows for a in att if a["outcome"] != "skipped"]
    retries = [a for a in sent if a["kind"] == "retry"]
    # budget: 10% of 40 requests + 0.1/s over 30 s = 7 retries at most, where 80 would be asked for
    assert len(retries) <= 7 and len(sent) <= 47
    assert any(a["error_code"] == "retry_budget" for att in rows for a in att if a["outcome"] == "skipped")


def test_rpm_limit_is_respected_and_says_when(chaos: Chaos) -> None:
    codes = [chaos.post("limited", f"r{i}").status_code for i in range(3)]
    assert codes == [200, 200, 200]
    r = chaos.post("limited", "one too many")
    assert r.status_code == 429
    err = r.json()["error"]
    assert err["code"] == "deployment_rate_limited" and "requests-per-minute" in err["message"]
    assert r.headers["retry-after"]


def test_429_retry_after_is_honoured(chaos: Chaos) -> None:
    r = chaos.post("ratelimited")
    assert r.status_code == 429 and r.json()["error"]["code"] == "upstream_rate_limited"
    first, second = chaos.row(r.headers["x-bastion-request-id"])["attempts"]
    assert second["kind"] == "retry" and second["backoff_ms"] >= 300  # retry-after-ms: 300
    assert second["started_at"] - first["ended_at"] >= 0.29


# ---- hedging and balancing ---------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_hedge_answers_from_the_fast_deployment_and_cancels_the_slow(chaos: Chaos, stream: bool) -> None:
    won_before = chaos.metric("bastion_hedges_total", model="hedged", outcome="won")
    r = chaos.post("hedged", stream=stream)
    assert r.status_code == 200 and r.headers["x-bastion-deployment"] == "fast/sim-small"
    row = chaos.row(r.headers["x-bastion-request-id"])
    slow, fast = sorted(row["attempts"], key=lambda a: a["started_at"])
    assert slow["deployment"] == "slow/sim-small" and slow["outcome"] == "cancelled"
    assert fast["kind"] == "hedge" and fast["outcome"] == "ok"
    assert fast["started_at"] - slow["started_at"] >= 0.09  # started after the 100 ms hedge delay
    assert chaos.metric("bastion_hedges_total", model="hedged", outcome="won") == won_before + 1
    if stream:
        assert _sse(r.text)[-1][1] == "[DONE]"


def test_hedge_can_be_turned_off_per_request(chaos: Chaos) -> None:
    r = chaos.post("hedged", headers={"x-bastion-hedge": "off"})
    assert r.status_code == 200 and r.headers["x-bastion-deployment"] == "slow/sim-small"
    assert r.headers["x-bastion-attempts"] == "1"


def test_lowest_latency_strategy_prefers_the_faster_deployment(chaos: Chaos) -> None:
    served = [chaos.post("nearest", f"n{i}").headers["x-bastion-deployment"] for i in range(30)]
    assert served[10:].count("lat-fast/sim-small") >= 15
