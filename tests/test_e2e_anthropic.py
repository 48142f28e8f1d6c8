"""End to end: the official ``anthropic`` SDK against a running gateway, on an Anthropic upstream
(``sim-claude``, pass-through) and an OpenAI upstream (``sim-small``, translated)."""

from __future__ import annotations

import asyncio
import json

import anthropic
import httpx
import pytest

ALIASES = ["sim-claude", "sim-small"]
DEPLOYMENTS = {"sim-claude": "sim-anthropic/sim-claude", "sim-small": "sim/sim-small"}
WEATHER = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city", "unit"],
    },
}


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def parse_sse(text: str) -> list[tuple[str | None, dict]]:
    events = []
    for block in text.split("\n\n"):
        name, data = None, []
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if data:
            events.append((name, json.loads("\n".join(data))))
    return events


@pytest.mark.parametrize("alias", ALIASES)
def test_create_and_log_row(alias, anth, wait_row):
    raw = anth.messages.with_raw_response.create(
        model=alias,
        max_tokens=200,
        system="You are terse.",
        messages=user("Hello [[sim:tokens=10]]"),
        extra_body={"temperature": 0.5},  # this SDK version no longer has a temperature argument
        metadata={"user_id": "anthropic-user"},
        extra_headers={"x-bastion-session": "anth-sess"},
    )
    rid = raw.headers["x-bastion-request-id"]
    assert raw.headers["request-id"] == rid
    assert raw.headers["x-bastion-deployment"] == DEPLOYMENTS[alias]
    assert raw.headers["x-bastion-attempts"] == "1"
    m = raw.parse()
    assert m.type == "message" and m.role == "assistant"
    assert m.id.startswith("msg_")
    assert m.stop_reason == "end_turn"
    assert [b.type for b in m.content] == ["text"] and m.content[0].text
    assert m.usage.input_tokens > 0 and m.usage.output_tokens == 10
    row = wait_row(rid)
    assert (row["tenant"], row["user"], row["session"]) == ("default", "anthropic-user", "anth-sess")
    assert row["endpoint"] == "messages" and row["dialect"] == "anthropic"
    assert row["alias"] == alias and row["deployment"] == DEPLOYMENTS[alias]
    assert row["served_model"] == m.model
    assert row["status"] == 200 and row["error_code"] is None
    assert row["completion_tokens"] == 10
    assert row["finish_reason"] == "end_turn"
    params = json.loads(row["params"])
    assert params["max_tokens"] == 200 and params["temperature"] == 0.5
    assert len(json.loads(row["attempts"])) == 1
    assert row["ttft_ms"] is not None and row["latency_ms"] >= row["ttft_ms"]


@pytest.mark.parametrize("alias", ALIASES)
def test_messages_stream_helper(alias, anth, wait_row):
    with anth.messages.stream(model=alias, max_tokens=200, messages=user("Tell me [[sim:tokens=15]]")) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        rid = stream.response.headers["x-bastion-request-id"]
    assert text and final.content[0].text == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 15 and final.usage.input_tokens > 0
    row = wait_row(rid)
    assert row["stream"] == 1 and row["status"] == 200
    assert row["completion_tokens"] == 15 and row["prompt_tokens"] > 0
    assert row["ttft_ms"] is not None
    assert json.loads(row["response"])["content"][0]["text"] == text


@pytest.mark.parametrize("alias", ALIASES)
def test_raw_stream_event_sequence(alias, anth):
    events = list(anth.messages.create(model=alias, max_tokens=100, messages=user("Hi [[sim:tokens=6]]"), stream=True))
    types = [e.type for e in events]
    assert types[0] == "message_start"
    assert types[1] == "content_block_start"
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(types[2:-3]) == {"content_block_delta"}
    assert events[0].message.content == [] and events[0].message.usage.output_tokens in (0, 1)
    assert events[-2].delta.stop_reason == "end_turn" and events[-2].usage.output_tokens == 6
    assert "".join(e.delta.text for e in events[2:-3]).strip()


@pytest.mark.parametrize("alias", ALIASES)
def test_wire_event_sequence_is_exactly_anthropics(alias, stack):
    """On the wire (where the SDK hides pings): every event named, type matching, in Anthropic's order."""
    r = httpx.post(
        stack.base + "/v1/messages",
        json={"model": alias, "max_tokens": 100, "stream": True, "messages": user("Hi [[sim:tokens=5]]")},
        headers={"x-api-key": stack.key, "anthropic-version": "2023-06-01"},
        timeout=30,
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    assert all(name == data["type"] for name, data in events)
    names = [n for n, _ in events if n != "ping"]
    assert names[:2] == ["message_start", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[2:-3]) == {"content_block_delta"}
    pings = [i for i, (n, _) in enumerate(events) if n == "ping"]
    assert all(i >= 1 for i in pings), "ping before message_start"
    assert "[DONE]" not in r.text


@pytest.mark.parametrize("alias", ALIASES)
def test_tool_use_and_result_round_trip(alias, anth):
    msgs = user("What's the weather in Paris?")
    m = anth.messages.create(model=alias, max_tokens=300, tools=[WEATHER], messages=msgs)
    assert m.stop_reason == "tool_use"
    uses = [b for b in m.content if b.type == "tool_use"]
    assert len(uses) == 1 and uses[0].name == "get_weather" and uses[0].id
    assert isinstance(uses[0].input["city"], str) and uses[0].input["unit"] in ("c", "f")

    follow = anth.messages.create(
        model=alias,
        max_tokens=300,
        tools=[WEATHER],
        messages=[
            *msgs,
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in m.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "21 C"}]},
        ],
    )
    assert follow.stop_reason == "end_turn"
    assert follow.content[0].type == "text" and follow.content[0].text


@pytest.mark.parametrize("alias", ALIASES)
def test_streamed_tool_use_input_json_delta(alias, anth, wait_row):
    with anth.messages.stream(model=alias, max_tokens=300, tools=[WEATHER], messages=user("Weather in Rome?")) as s:
        events = list(s)
        final = s.get_final_message()
        rid = s.response.headers["x-bastion-request-id"]
    starts = [e for e in events if e.type == "content_block_start"]
    assert starts and starts[-1].content_block.type == "tool_use"
    assert starts[-1].content_block.input == {}
    pieces = [e.delta.partial_json for e in events if e.type == "content_block_delta"
              and e.delta.type == "input_json_delta"]
    assert len(pieces) >= 1
    streamed = json.loads("".join(pieces))
    tool = [b for b in final.content if b.type == "tool_use"][0]
    assert tool.input == streamed and tool.name == "get_weather"
    assert final.stop_reason == "tool_use"
    row = wait_row(rid)
    assert row["status"] == 200 and row["finish_reason"] == "tool_use"


@pytest.mark.parametrize("alias", ALIASES)
def test_async_client(alias, stack, wait_row):
    async def main() -> None:
        async with anthropic.AsyncAnthropic(base_url=stack.base, api_key=stack.acme_key, max_retries=0) as c:
            ms = await asyncio.gather(
                *(c.messages.create(model=alias, max_tokens=50, messages=user(f"Q{i} [[sim:tokens=4]]")) for i in range(4))
            )
            assert all(m.usage.output_tokens == 4 for m in ms)
            async with c.messages.stream(model=alias, max_tokens=50, messages=user("S [[sim:tokens=7]]")) as s:
                text = "".join([t async for t in s.text_stream])
                final = await s.get_final_message()
                rid = s.response.headers["x-bastion-request-id"]
            assert final.content[0].text == text and final.usage.output_tokens == 7
            row = await asyncio.to_thread(wait_row, rid)
            assert (row["tenant"], row["user"]) == ("acme", "alice")

    asyncio.run(main())


@pytest.mark.parametrize("alias", ALIASES)
def test_stop_sequence_and_max_tokens(alias, anth):
    m = anth.messages.create(model=alias, max_tokens=3, messages=user("Write a long story [[sim:tokens=40]]"))
    assert m.stop_reason == "max_tokens" and m.usage.output_tokens <= 3


def test_output_config_json_schema_to_openai_upstream(anth):
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
              "required": ["name", "age"], "additionalProperties": False}
    m = anth.messages.create(
        model="sim-small",
        max_tokens=200,
        messages=user("A person"),
        output_config={"format": {"type": "json_schema", "schema": schema}},
    )
    data = json.loads(m.content[0].text)
    assert isinstance(data["name"], str) and isinstance(data["age"], int)


def test_stream_log_row_keeps_fingerprint_when_translating(anth, wait_row):
    """Anthropic client → OpenAI upstream, streamed: the upstream's system_fingerprint is logged like it is
    for the same call unstreamed (the request log promises the served model's fingerprint)."""
    plain = anth.messages.with_raw_response.create(model="sim-small", max_tokens=50, messages=user("a"))
    assert wait_row(plain.headers["x-bastion-request-id"])["system_fingerprint"] == "fp_sim_0001"
    with anth.messages.stream(model="sim-small", max_tokens=50, messages=user("b")) as s:
        s.until_done()
        rid = s.response.headers["x-bastion-request-id"]
    assert wait_row(rid)["system_fingerprint"] == "fp_sim_0001"
