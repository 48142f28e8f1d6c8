"""The upstream simulator against the official OpenAI and Anthropic SDKs (a real subprocess)."""

from __future__ import annotations

import asyncio
import json
import math

import anthropic
import httpx
import openai
import pytest
from pydantic import BaseModel

from bastion.metering.tokens import count_chat
from bastion.sim.generate import count_tokens
from tests.sim_fixtures import claude, oai, sim  # noqa: F401  (fixtures)

SIM_YAML = """
seed: 7
model_version: "2026-11-01"
system_fingerprint: "fp_test"
output_tokens: {min: 5, max: 20}
"""


USER = [{"role": "user", "content": "Tell me about rivers."}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "detail": {"type": "object", "properties": {"hourly": {"type": "boolean"}},
                           "required": ["hourly"]},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["city", "unit", "days", "detail", "tags"],
        },
    },
}
TIME_TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}}


# --- OpenAI ------------------------------------------------------------------------------------


def test_chat_completion_shape(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(model="sim-small", messages=USER, seed=1)
    assert r.object == "chat.completion"
    assert r.id.startswith("chatcmpl-")
    assert r.model == "sim-small-2026-11-01"
    assert r.system_fingerprint == "fp_test"
    assert r.created > 0
    c = r.choices[0]
    assert c.finish_reason == "stop" and c.message.role == "assistant" and c.message.content
    assert 5 <= r.usage.completion_tokens <= 20
    assert r.usage.completion_tokens == count_tokens(c.message.content)
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    # 3 per message + "user" (1 token) + the content, 3 for the reply: OpenAI's chat counting, o200k
    assert r.usage.prompt_tokens == count_chat(USER, "gpt-4o") == count_tokens("Tell me about rivers.") + 3 + 1 + 3
    assert r.usage.prompt_tokens_details.cached_tokens == 0
    assert r.usage.completion_tokens_details.reasoning_tokens == 0


def test_stream_matches_non_stream_and_reports_usage(oai: openai.OpenAI) -> None:
    full = oai.chat.completions.create(model="sim-small", messages=USER, seed=3)
    chunks = list(oai.chat.completions.create(model="sim-small", messages=USER, seed=3, stream=True,
                                              stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" and c.system_fingerprint == "fp_test" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    last = chunks[-1]
    assert last.choices == [] and last.usage.completion_tokens == full.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_without_usage_option(oai: openai.OpenAI) -> None:
    chunks = list(oai.chat.completions.create(model="sim-small", messages=USER, stream=True))
    assert all(c.usage is None and len(c.choices) == 1 for c in chunks)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_async_client(sim: str) -> None:
    async def run() -> tuple[str, str]:
        async with openai.AsyncOpenAI(base_url=sim + "/v1", api_key="x", max_retries=0) as client:
            r = await client.chat.completions.create(model="sim-large", messages=USER, temperature=0)
            stream = await client.chat.completions.create(model="sim-large", messages=USER, temperature=0,
                                                          stream=True)
            text = "".join([c.choices[0].delta.content or "" async for c in stream])
            return r.choices[0].message.content, text

    a, b = asyncio.run(run())
    assert a and a == b


def _check_weather_args(args: dict) -> None:
    assert isinstance(args["city"], str)
    assert args["unit"] in ("celsius", "fahrenheit")
    assert isinstance(args["days"], int) and 1 <= args["days"] <= 7
    assert isinstance(args["detail"]["hourly"], bool)
    assert isinstance(args["tags"], list) and all(isinstance(t, str) for t in args["tags"])


def test_tool_call(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(model="sim-small", messages=USER, tools=[WEATHER, TIME_TOOL])
    c = r.choices[0]
    assert c.finish_reason == "tool_calls" and c.message.content is None
    call = c.message.tool_calls[0]
    assert call.id.startswith("call_") and call.type == "function" and call.function.name == "get_weather"
    _check_weather_args(json.loads(call.function.arguments))
    named = oai.chat.completions.create(model="sim-small", messages=USER, tools=[WEATHER, TIME_TOOL],
                                        tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert named.choices[0].message.tool_calls[0].function.name == "get_time"
    none = oai.chat.completions.create(model="sim-small", messages=USER, tools=[WEATHER], tool_choice="none")
    assert none.choices[0].message.tool_calls is None and none.choices[0].message.content
    after = oai.chat.completions.create(model="sim-small", tools=[WEATHER], messages=[
        *USER, {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"}])
    assert after.choices[0].finish_reason == "stop" and after.choices[0].message.content


def test_tool_call_stream(oai: openai.OpenAI) -> None:
    chunks = list(oai.chat.completions.create(model="sim-small", messages=USER, tools=[WEATHER], stream=True))
    first = chunks[0].choices[0].delta.tool_calls[0]
    assert first.index == 0 and first.id.startswith("call_") and first.type == "function"
    assert first.function.name == "get_weather" and first.function.arguments == ""
    rest = [c.choices[0].delta.tool_calls[0] for c in chunks[1:] if c.choices[0].delta.tool_calls]
    assert all(t.id is None and t.function.name is None for t in rest)
    _check_weather_args(json.loads("".join(t.function.arguments for t in rest)))
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    # the SDK's stream helper accumulates the same call
    with oai.chat.completions.stream(model="sim-small", messages=USER, tools=[WEATHER]) as s:
        final = s.get_final_completion()
    _check_weather_args(json.loads(final.choices[0].message.tool_calls[0].function.arguments))


class Item(BaseModel):
    name: str
    qty: int


class Order(BaseModel):
    customer: str
    express: bool
    items: list[Item]
    total: float


def test_structured_outputs(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.parse(model="sim-small", messages=USER, response_format=Order)
    order = r.choices[0].message.parsed
    assert isinstance(order, Order) and all(isinstance(i, Item) for i in order.items)
    j = oai.chat.completions.create(model="sim-small", messages=USER, response_format={"type": "json_object"})
    assert isinstance(json.loads(j.choices[0].message.content), dict)


def test_n_choices_and_logprobs(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(model="sim-small", messages=USER, n=2, seed=5, logprobs=True,
                                    top_logprobs=3)
    assert [c.index for c in r.choices] == [0, 1]
    assert r.choices[0].message.content != r.choices[1].message.content
    assert r.usage.completion_tokens == sum(count_tokens(c.message.content) for c in r.choices)
    for c in r.choices:
        lp = c.logprobs.content
        assert "".join(t.token for t in lp) == c.message.content
        for t in lp:
            assert t.logprob <= 0 and bytes(t.bytes).decode() == t.token and len(t.top_logprobs) == 3
            assert t.top_logprobs[0].token == t.token
    chunks = list(oai.chat.completions.create(model="sim-small", messages=USER, n=2, seed=5, stream=True))
    for i in range(2):
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices[0].index == i)
        assert text == r.choices[i].message.content


def test_max_tokens_and_stop(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(model="sim-small", messages=[{"role": "user", "content": "x [[sim:tokens=30]]"}],
                                    seed=2, max_tokens=4)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 4
    full = oai.chat.completions.create(model="sim-small", messages=USER, seed=2).choices[0].message.content
    word = full.split()[2]
    cut = oai.chat.completions.create(model="sim-small", messages=USER, seed=2, stop=[" " + word])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == full[: full.index(" " + word)]


def test_directives(oai: openai.OpenAI) -> None:
    r = oai.chat.completions.create(model="sim-small", messages=[
        {"role": "user", "content": [{"type": "text", "text": "Repeat after me: hello world [[sim:echo]]"}]}])
    assert r.choices[0].message.content == "Repeat after me: hello world"
    r = oai.chat.completions.create(model="sim-small", messages=[{"role": "user", "content": "[[sim:tokens=13]]"}])
    assert r.usage.completion_tokens == 13
    r = oai.chat.completions.create(model="sim-small", messages=USER, extra_headers={"x-sim-tokens": "2"})
    assert r.usage.completion_tokens == 2
    chunks = list(oai.chat.completions.create(
        model="sim-small", stream=True,
        messages=[{"role": "user", "content": "hi [[sim:tokens=4]] [[sim:tps=2000]] [[sim:latency_ms=1]]"}]))
    assert len([c for c in chunks if c.choices[0].delta.content]) == 4


def test_embeddings(oai: openai.OpenAI) -> None:
    r = oai.embeddings.create(model="sim-embed", input="hello")  # the SDK asks for base64
    v = r.data[0].embedding
    assert len(v) == 384 and math.isclose(sum(x * x for x in v), 1.0, rel_tol=1e-4)
    assert r.model == "sim-embed-2026-11-01" and r.usage.prompt_tokens == 1
    f = oai.embeddings.create(model="sim-embed", input=["hello", "world"], encoding_format="float")
    assert [d.index for d in f.data] == [0, 1]
    assert all(math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7) for a, b in zip(f.data[0].embedding, v, strict=True))
    assert f.data[0].embedding != f.data[1].embedding
    d = oai.embeddings.create(model="sim-embed", input=[[1, 2, 3]], dimensions=64)
    assert len(d.data[0].embedding) == 64 and d.usage.prompt_tokens == 3


def test_models(oai: openai.OpenAI) -> None:
    ids = [m.id for m in oai.models.list()]
    assert ids == ["sim-small", "sim-large", "sim-embed"]
    assert oai.models.retrieve("sim-large").id == "sim-large"
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("nope")


def test_azure(sim: str) -> None:
    az = openai.AzureOpenAI(azure_endpoint=sim, api_key="k", api_version="2024-10-21", max_retries=0)
    r = az.chat.completions.create(model="my-deploy", messages=USER)
    assert r.model == "my-deploy-2026-11-01" and r.choices[0].message.content
    e = az.embeddings.create(model="emb-deploy", input="hi")
    assert len(e.data[0].embedding) == 384


def test_openai_validation(sim: str, oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as ei:
        oai.chat.completions.create(model="sim-small", messages=[])
    assert ei.value.code == "empty_array" and ei.value.param == "messages"
    cases = [
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": "hi"}, "messages"),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"model": "m", "messages": USER, "n": "2"}, "n"),
        ({"messages": USER}, None),
    ]
    for body, param in cases:
        r = httpx.post(sim + "/v1/chat/completions", json=body)
        assert r.status_code == 400, body
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"} and err["param"] == param
    r = httpx.post(sim + "/v1/chat/completions", content=b"{not json")
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


# --- Anthropic ---------------------------------------------------------------------------------

CLAUDE_TOOL = {"name": "get_weather", "description": "weather", "input_schema": WEATHER["function"]["parameters"]}


def test_anthropic_message(claude: anthropic.Anthropic) -> None:
    m = claude.messages.create(model="claude-sim", max_tokens=100, system="Be brief.", messages=USER)
    assert m.id.startswith("msg_") and m.type == "message" and m.role == "assistant"
    assert m.model == "claude-sim-2026-11-01"
    assert m.stop_reason == "end_turn" and m.stop_sequence is None
    assert m.content[0].type == "text" and m.usage.output_tokens == count_tokens(m.content[0].text)
    assert m.usage.input_tokens > 0
    short = claude.messages.create(model="claude-sim", max_tokens=3, messages=[
        {"role": "user", "content": "go [[sim:tokens=10]]"}])
    assert short.stop_reason == "max_tokens" and short.usage.output_tokens == 3
    assert claude.messages.count_tokens(model="claude-sim", messages=USER).input_tokens == m.usage.input_tokens - count_tokens("Be brief.")


def test_anthropic_stream(claude: anthropic.Anthropic) -> None:
    full = claude.messages.create(model="claude-sim", max_tokens=100, messages=USER, extra_body={"temperature": 0})
    with claude.messages.stream(model="claude-sim", max_tokens=100, messages=USER, extra_body={"temperature": 0}) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text == full.content[0].text == final.content[0].text
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == full.usage.output_tokens
    raw = list(claude.messages.create(model="claude-sim", max_tokens=100, messages=USER, stream=True))
    kinds = [e.type for e in raw]  # the SDK drops ping events
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[2:-3]) == {"content_block_delta"}
    assert raw[0].message.content == [] and raw[0].message.stop_reason is None
    assert raw[-2].delta.stop_reason == "end_turn" and raw[-2].usage.output_tokens == len(kinds) - 5


def test_anthropic_raw_sse(sim: str) -> None:
    body = {"model": "claude-sim", "max_tokens": 50, "stream": True,
            "messages": [{"role": "user", "content": "hi [[sim:tokens=2]]"}]}
    r = httpx.post(sim + "/v1/messages", json=body)
    assert r.headers["content-type"].startswith("text/event-stream")
    events = [block.split("\n") for block in r.text.strip().split("\n\n")]
    names = [e[0].removeprefix("event: ") for e in events]
    assert names == ["message_start", "content_block_start", "ping", "content_block_delta",
                     "content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    for name, data in ((e[0].removeprefix("event: "), json.loads(e[1].removeprefix("data: "))) for e in events):
        assert data["type"] == name


def test_anthropic_tools(claude: anthropic.Anthropic) -> None:
    m = claude.messages.create(model="claude-sim", max_tokens=200, messages=USER, tools=[CLAUDE_TOOL])
    assert m.stop_reason == "tool_use"
    block = m.content[0]
    assert block.type == "tool_use" and block.id.startswith("toolu_") and block.name == "get_weather"
    _check_weather_args(block.input)
    with claude.messages.stream(model="claude-sim", max_tokens=200, messages=USER, tools=[CLAUDE_TOOL]) as s:
        final = s.get_final_message()
    assert final.stop_reason == "tool_use"
    _check_weather_args(final.content[0].input)
    done = claude.messages.create(model="claude-sim", max_tokens=200, tools=[CLAUDE_TOOL], messages=[
        *USER, {"role": "assistant", "content": [block.model_dump()]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "sunny"}]}])
    assert done.stop_reason == "end_turn" and done.content[0].type == "text"
    none = claude.messages.create(model="claude-sim", max_tokens=200, messages=USER, tools=[CLAUDE_TOOL],
                                  tool_choice={"type": "none"})
    assert none.content[0].type == "text"


def test_anthropic_stop_sequence(claude: anthropic.Anthropic) -> None:
    full = claude.messages.create(model="claude-sim", max_tokens=100, messages=USER, extra_headers={"x-sim-seed": "9"})
    word = " " + full.content[0].text.split()[1]
    cut = claude.messages.create(model="claude-sim", max_tokens=100, messages=USER, extra_headers={"x-sim-seed": "9"},
                                 stop_sequences=[word])
    assert cut.stop_reason == "stop_sequence" and cut.stop_sequence == word
    assert cut.content[0].text == full.content[0].text[: full.content[0].text.index(word)]


def test_anthropic_validation(sim: str, claude: anthropic.Anthropic) -> None:
    r = httpx.post(sim + "/v1/messages", json={"model": "claude-sim", "messages": USER})
    assert r.status_code == 400
    assert r.json() == {"type": "error", "error": {"type": "invalid_request_error",
                                                   "message": "max_tokens: Field required"}}
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(model="claude-sim", max_tokens=10, messages=[{"role": "system", "content": "x"}])


def test_malformed_tool_choice_is_not_a_crash(sim: str) -> None:
    """A tool_choice of the wrong shape: Anthropic's 400, or OpenAI's first tool; never a 500 (the endpoint
    fuzz found both crashing the simulator)."""
    r = httpx.post(sim + "/v1/messages", json={"model": "claude-sim", "max_tokens": 5, "messages": USER,
                                               "tools": [CLAUDE_TOOL], "tool_choice": "auto"})
    assert r.status_code == 400 and "tool_choice" in r.json()["error"]["message"]
    r = httpx.post(sim + "/v1/chat/completions", json={"model": "m", "messages": USER, "tools": [WEATHER],
                                                       "tool_choice": {"type": "function", "function": "x"}})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"


def test_healthz(sim: str) -> None:
    assert httpx.get(sim + "/healthz").json() == {"status": "ok"}
