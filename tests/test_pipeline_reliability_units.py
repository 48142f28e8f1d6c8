"""Units of the attempt loop that the chaos tests reach only indirectly."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from bastion.config.model import BastionConfig
from bastion.config.reliability import DegradedConfig, TimeoutsConfig
from bastion.errors import InvalidRequest
from bastion.pipeline.context import Attempt
from bastion.pipeline.deadlines import parse_overrides
from bastion.pipeline.degraded import degraded_body, degraded_stream
from bastion.pipeline.executor import Ready, _filtered_answer
from bastion.routing import Candidate, Failure, Router

CFG = BastionConfig.model_validate({
    "providers": {"p": {"type": "sim", "base_url": "http://127.0.0.1:9/v1"}},
    "models": {"m": {"deployments": [{"provider": "p", "model": "x"}]}},
})


def _ready(data: dict) -> Ready:
    route = Router(CFG).routes["m"]
    return Ready(Candidate(route.deployments[0], route), Attempt("p/x", 0.0), False, 0, data=data)


def test_filtered_200_answer_becomes_a_content_filter_failure_only_when_rerouted() -> None:
    filtered = {"choices": [{"index": 0, "finish_reason": "content_filter", "message": {"content": ""}}]}
    assert _filtered_answer(_ready(filtered), ()) is None
    f = _filtered_answer(_ready(filtered), ("other",))
    assert f is not None and f.kind is Failure.CONTENT_FILTER and f.error.code == "content_filter"
    refusal = {"type": "message", "stop_reason": "refusal", "content": []}
    assert _filtered_answer(_ready(refusal), ("other",)) is not None
    fine = {"choices": [{"index": 0, "finish_reason": "stop", "message": {"content": "hi"}}]}
    assert _filtered_answer(_ready(fine), ("other",)) is None


def test_timeout_overrides_are_bounded_and_named() -> None:
    bounds = TimeoutsConfig(max_override_s=30)
    assert parse_overrides({"timeout-total": "12.5", "timeout-first-token": "2"}, bounds) == {
        "total_s": 12.5, "first_token_s": 2.0}
    for value in ("31", "-1", "0", "nan", "abc"):
        with pytest.raises(InvalidRequest) as ei:
            parse_overrides({"timeout-chunk-gap": value}, bounds)
        assert "x-bastion-timeout-chunk-gap" in ei.value.message


def test_degraded_answer_in_both_dialects_and_streams() -> None:
    cfg = DegradedConfig(content="busy")
    oa = degraded_body("openai", "m", cfg)
    assert oa["choices"][0]["message"]["content"] == "busy" and oa["model"] == "m"
    an = degraded_body("anthropic", "m", cfg)
    assert an["type"] == "message" and an["content"][0]["text"] == "busy" and an["stop_reason"] == "end_turn"

    async def collect(dialect: str, usage: bool) -> bytes:
        return b"".join([c async for c in degraded_stream(dialect, "m", cfg, usage)])

    raw = asyncio.run(collect("openai", True)).decode()
    chunks = [orjson.loads(line[6:]) for line in raw.split("\n\n") if line.startswith("data: {")]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "busy"
    assert chunks[-1]["usage"] is not None and raw.endswith("data: [DONE]\n\n")
    araw = asyncio.run(collect("anthropic", False)).decode()
    assert araw.startswith("event: message_start") and araw.rstrip().split("\n")[-2] == "event: message_stop"


def test_answer_on_failure_hook_is_consulted_before_the_error(tmp_path) -> None:
    from bastion.errors import UpstreamUnavailable
    from bastion.pipeline import Gateway, RequestContext, Result

    cfg = BastionConfig.model_validate({
        "store": {"url": f"sqlite:///{tmp_path / 'b.db'}"},
        "providers": {"dead": {"type": "openai", "base_url": "http://127.0.0.1:9/v1", "connect_timeout_s": 1}},
        "models": {"m": {"deployments": [{"provider": "dead", "model": "x"}], "retry": {"max_attempts": 1}}},
    })
    seen: list[str] = []

    async def cached(ctx, route, body, err):
        seen.append(err.code)
        return Result(headers={"x-bastion-cache": "stale"}, body=b'{"cached": true}')

    async def go() -> tuple[Result | None, str | None]:
        gw = Gateway(cfg)
        await gw.start()
        try:
            body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
            gw.answer_on_failure = cached
            hit = await gw.chat(RequestContext(endpoint="chat", dialect="openai", body=body), body)
            gw.answer_on_failure = None
            try:
                await gw.chat(RequestContext(endpoint="chat", dialect="openai", body=body), body)
            except UpstreamUnavailable as e:
                return hit, e.code
            return hit, None
        finally:
            await gw.stop()

    hit, code = asyncio.run(go())
    assert hit is not None and hit.body == b'{"cached": true}' and seen == ["upstream_unavailable"]
    assert code == "upstream_unavailable"


def test_usage_is_estimated_when_the_upstream_reports_none(tmp_path) -> None:
    from bastion.metering.meter import Meter
    from bastion.metering.tokens import count_chat, count_text
    from bastion.state import MemoryState
    from bastion.store.sqlite import SQLiteStore

    meter = Meter(CFG, MemoryState(), SQLiteStore(str(tmp_path / "m.db")))
    body = {"messages": [{"role": "user", "content": "How many tokens is this?"}]}
    resp = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "Exactly nine tokens, I think."}}]}
    usage = meter.estimate_usage("openai", body, resp, "gpt-4o")
    assert usage == {"prompt_tokens": count_chat(body["messages"], "gpt-4o"),
                     "completion_tokens": count_text("Exactly nine tokens, I think.", "gpt-4o"),
                     "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}
    anth = meter.estimate_usage("anthropic", {"messages": body["messages"], "max_tokens": 5},
                                {"content": [{"type": "text", "text": "hi there"}]}, "claude-sonnet-4-5")
    assert anth is not None and anth["completion_tokens"] > 0
