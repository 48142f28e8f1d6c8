"""End to end: the official ``openai`` SDK, used as a user would, against a running gateway and simulator."""

from __future__ import annotations

import asyncio
import base64
import json
import struct

import openai
import pytest

CHAT_ALIASES = ["sim-small", "azure-gpt", "compat", "sim-claude"]
OPENAI_UPSTREAMS = ["sim-small", "azure-gpt", "compat"]  # aliases whose upstream speaks OpenAI
DEPLOYMENTS = {
    "sim-small": "sim/sim-small",
    "azure-gpt": "sim-azure/gpt-4o-prod",
    "compat": "sim-compatible/llama-3-8b",
    "sim-claude": "sim-anthropic/sim-claude",
}
UPSTREAM_MODEL = {"sim-small": "sim-small", "azure-gpt": "gpt-4o-prod", "compat": "llama-3-8b",
                  "sim-claude": "sim-claude"}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["city", "unit"],
        },
    },
}
PNG_DATA_URL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _params(row) -> dict:
    return json.loads(row["params"]) if row["params"] else {}


# ---- plain and streamed chat, on every kind of upstream ------------------------------------------------


@pytest.mark.parametrize("alias", CHAT_ALIASES)
def test_chat_headers_and_log_row(alias, oai, wait_row):
    raw = oai.chat.completions.with_raw_response.create(
        model=alias,
        messages=[{"role": "system", "content": "Be brief."}, *user("Hello there")],
        seed=7,
        temperature=0.3,
        max_tokens=60,
        user="user-123",
        extra_headers={"x-bastion-session": f"sess-{alias}"},
    )
    rid = raw.headers["x-bastion-request-id"]
    assert rid.startswith("req_")
    assert raw.headers["x-bastion-deployment"] == DEPLOYMENTS[alias]
    assert raw.headers["x-bastion-attempts"] == "1"
    r = raw.parse()
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.model.startswith(UPSTREAM_MODEL[alias])
    assert raw.headers["x-bastion-model"] == r.model
    assert raw.headers["x-request-id"] == rid and r._request_id == rid

    row = wait_row(rid)
    assert row["tenant"] == "default"
    assert row["user"] == "user-123"
    assert row["session"] == f"sess-{alias}"
    assert row["endpoint"] == "chat" and row["dialect"] == "openai"
    assert row["alias"] == alias
    assert row["deployment"] == DEPLOYMENTS[alias]
    assert row["upstream_model"] == UPSTREAM_MODEL[alias]
    assert row["served_model"] == r.model
    if alias in OPENAI_UPSTREAMS:
        assert row["system_fingerprint"] == r.system_fingerprint == "fp_sim_0001"
    params = _params(row)
    assert params["seed"] == 7 and params["temperature"] == 0.3 and params["max_tokens"] == 60
    assert row["status"] == 200 and row["error_code"] is None
    assert row["stream"] == 0
    assert row["prompt_tokens"] == r.usage.prompt_tokens
    assert row["completion_tokens"] == r.usage.completion_tokens
    assert row["ttft_ms"] is not None and row["ttft_ms"] >= 0
    assert row["latency_ms"] is not None and row["latency_ms"] >= row["ttft_ms"]
    attempts = json.loads(row["attempts"])
    assert len(attempts) == 1
    assert attempts[0]["deployment"] == DEPLOYMENTS[alias] and attempts[0]["outcome"] == "ok"
    assert json.loads(row["response"])["choices"][0]["message"]["content"] == r.choices[0].message.content


@pytest.mark.parametrize("alias", CHAT_ALIASES)
def test_stream_without_usage_option_sends_no_usage_chunk(alias, oai, wait_row):
    raw = oai.chat.completions.with_raw_response.create(
        model=alias,
        messages=user("Tell me something [[sim:tokens=12]]"),
        stream=True,
        extra_headers={"x-bastion-user": "header-user", "x-bastion-session": "s-stream"},
        user="body-user",
    )
    rid = raw.headers["x-bastion-request-id"]
    assert raw.headers["x-bastion-deployment"] == DEPLOYMENTS[alias]
    chunks = list(raw.parse())
    assert chunks, "no chunks"
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks), "a usage-only chunk arrived although include_usage was not asked"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert sum(1 for c in chunks if c.choices[0].finish_reason) == 1

    row = wait_row(rid)
    assert row["user"] == "header-user"  # x-bastion-user wins over the body's user field
    assert row["session"] == "s-stream"
    assert row["stream"] == 1 and row["status"] == 200 and row["error_code"] is None
    # Bastion asks the upstream for usage itself: a stream is never logged at zero tokens.
    assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0
    assert row["ttft_ms"] is not None and row["latency_ms"] >= row["ttft_ms"]
    assert len(json.loads(row["attempts"])) == 1
    assert row["served_model"] and row["served_model"].startswith(UPSTREAM_MODEL[alias])
    if alias in OPENAI_UPSTREAMS:
        assert row["system_fingerprint"] == chunks[0].system_fingerprint == "fp_sim_0001"
    assert json.loads(row["response"])["choices"][0]["message"]["content"] == text


@pytest.mark.parametrize("alias", CHAT_ALIASES)
def test_stream_with_include_usage(alias, oai, wait_row):
    raw = oai.chat.completions.with_raw_response.create(
        model=alias, messages=user("Count [[sim:tokens=9]]"), stream=True, stream_options={"include_usage": True}
    )
    rid = raw.headers["x-bastion-request-id"]
    chunks = list(raw.parse())
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1
    last = chunks[-1]
    assert last is usage_chunks[0] and last.choices == []
    assert last.usage.completion_tokens > 0 and last.usage.prompt_tokens > 0
    row = wait_row(rid)
    assert row["completion_tokens"] == last.usage.completion_tokens
    assert row["prompt_tokens"] == last.usage.prompt_tokens


def test_forced_token_count_is_reported(oai):
    r = oai.chat.completions.create(model="sim-small", messages=user("Go [[sim:tokens=17]]"))
    assert r.usage.completion_tokens == 17


# ---- tools ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alias", CHAT_ALIASES)
def test_tool_call_and_round_trip(alias, oai):
    msgs = user("What is the weather in Paris?")
    r = oai.chat.completions.create(model=alias, messages=msgs, tools=[WEATHER_TOOL], tool_choice="auto")
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls and calls[0].type == "function" and calls[0].function.name == "get_weather"
    args = json.loads(calls[0].function.arguments)
    assert isinstance(args["city"], str) and args["unit"] in ("c", "f")
    assert calls[0].id

    follow = oai.chat.completions.create(
        model=alias,
        tools=[WEATHER_TOOL],
        messages=[
            *msgs,
            {"role": "assistant", "content": None, "tool_calls": [c.model_dump(exclude_none=True) for c in calls]},
            {"role": "tool", "tool_call_id": calls[0].id, "content": '{"temp": 21}'},
        ],
    )
    assert follow.choices[0].finish_reason == "stop"
    assert follow.choices[0].message.content


@pytest.mark.parametrize("alias", CHAT_ALIASES)
def test_streamed_tool_call_deltas_reassemble(alias, oai, wait_row):
    raw = oai.chat.completions.with_raw_response.create(
        model=alias, messages=user("Weather in Oslo?"), tools=[WEATHER_TOOL], stream=True
    )
    rid = raw.headers["x-bastion-request-id"]
    calls: dict[int, dict] = {}
    finish = None
    for chunk in raw.parse():
        for ch in chunk.choices:
            finish = ch.finish_reason or finish
            for tc in ch.delta.tool_calls or ():
                slot = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
                if tc.id:
                    assert slot["id"] is None, "tool call id sent twice"
                    slot["id"] = tc.id
                if tc.function and tc.function.name:
                    slot["name"] = tc.function.name
                if tc.function and tc.function.arguments:
                    slot["arguments"] += tc.function.arguments
    assert finish == "tool_calls"
    assert list(calls) == [0]
    assert calls[0]["id"] and calls[0]["name"] == "get_weather"
    args = json.loads(calls[0]["arguments"])
    assert set(args) >= {"city", "unit"}
    row = wait_row(rid)
    assert row["status"] == 200 and row["finish_reason"] == "tool_calls"
    logged = json.loads(row["response"])["choices"][0]["message"]["tool_calls"][0]
    assert json.loads(logged["function"]["arguments"]) == args


# ---- structured output, seed, n, logprobs, multimodal --------------------------------------------------

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0, "maximum": 120}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("alias", OPENAI_UPSTREAMS)
def test_response_format_json_object(alias, oai):
    r = oai.chat.completions.create(
        model=alias, messages=user("Describe a cat as JSON"), response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(r.choices[0].message.content), dict)


@pytest.mark.parametrize("alias", OPENAI_UPSTREAMS)
def test_response_format_json_schema(alias, oai):
    r = oai.chat.completions.create(
        model=alias,
        messages=user("A person"),
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA, "strict": True}},
    )
    data = json.loads(r.choices[0].message.content)
    assert isinstance(data["name"], str) and 0 <= data["age"] <= 120


@pytest.mark.parametrize("alias", OPENAI_UPSTREAMS)
def test_response_format_json_schema_streamed(alias, oai):
    stream = oai.chat.completions.create(
        model=alias,
        messages=user("A person"),
        stream=True,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}},
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert set(json.loads(text)) == {"name", "age"}


def test_response_format_to_anthropic_upstream_is_accepted(oai, wait_row):
    """OpenAI → Anthropic: response_format becomes a system-prompt instruction (docs/dialects.md) — an
    approximation, so only acceptance is checked, not that the simulator's answer parses."""
    raw = oai.chat.completions.with_raw_response.create(
        model="sim-claude",
        messages=user("A person"),
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}},
    )
    assert raw.parse().choices[0].message.content
    row = wait_row(raw.headers["x-bastion-request-id"])
    assert _params(row)["response_format"]["type"] == "json_schema"


@pytest.mark.parametrize("alias", OPENAI_UPSTREAMS)
def test_same_seed_same_answer(alias, oai):
    def ask(seed: int) -> str:
        r = oai.chat.completions.create(model=alias, messages=user("Write a line"), seed=seed, temperature=0.9)
        return r.choices[0].message.content

    first, second, other = ask(1234), ask(1234), ask(99)
    assert first == second
    assert first != other


def test_temperature_zero_is_deterministic_through_anthropic(oai):
    """Anthropic has no seed (Bastion drops it); temperature 0 still gives one answer."""
    answers = {
        oai.chat.completions.create(model="sim-claude", messages=user("Write a line"), temperature=0)
        .choices[0].message.content
        for _ in range(2)
    }
    assert len(answers) == 1


@pytest.mark.parametrize("alias", OPENAI_UPSTREAMS)
def test_n_two_choices(alias, oai):
    r = oai.chat.completions.create(model=alias, messages=user("Hi"), n=2, seed=5)
    assert [c.index for c in r.choices] == [0, 1]
    assert all(c.message.content for c in r.choices)


@pytest.mark.parametrize("alias", OPENAI_UPSTREAMS)
def test_logprobs(alias, oai):
    r = oai.chat.completions.create(model=alias, messages=user("Hi [[sim:tokens=5]]"), logprobs=True, top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert content and "".join(t.token for t in content) == r.choices[0].message.content
    for t in content:
        assert t.logprob <= 0
        assert len(t.top_logprobs) == 3


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [({"n": 2}, "n"), ({"logprobs": True}, "logprobs"), ({"logprobs": True, "top_logprobs": 2}, "logprobs")],
)
def test_anthropic_upstream_rejects_n_and_logprobs_clearly(kwargs, param, oai, wait_row):
    with pytest.raises(openai.BadRequestError) as ei:
        oai.chat.completions.create(model="sim-claude", messages=user("Hi"), **kwargs)
    e = ei.value
    assert e.status_code == 400
    assert param.split("_")[0] in e.message and "Anthropic" in e.message
    assert e.code == "unsupported_parameter"
    rid = e.response.headers["x-bastion-request-id"]
    assert e.body["request_id"] == rid
    row = wait_row(rid)
    assert row["status"] == 400 and row["error_code"] == "unsupported_parameter"


@pytest.mark.parametrize("alias", CHAT_ALIASES)
def test_multimodal_image_part_passes(alias, oai, wait_row):
    raw = oai.chat.completions.with_raw_response.create(
        model=alias,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in this image? [[sim:echo]]"},
                    {"type": "image_url", "image_url": {"url": PNG_DATA_URL, "detail": "low"}},
                ],
            }
        ],
    )
    assert raw.parse().choices[0].message.content.startswith("What is in this image?")
    row = wait_row(raw.headers["x-bastion-request-id"])
    parts = json.loads(row["request"])["messages"][0]["content"]
    assert parts[1] == {"type": "image_url", "image_url": {"url": PNG_DATA_URL, "detail": "low"}}


def test_bad_image_url_to_anthropic_is_a_400(oai):
    with pytest.raises(openai.BadRequestError) as ei:
        oai.chat.completions.create(
            model="sim-claude",
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}],
        )
    assert "image" in ei.value.message.lower() or "url" in ei.value.message.lower()


# ---- async client ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("alias", ["sim-small", "sim-claude"])
def test_async_client_concurrent_and_streamed(alias, stack, wait_row):
    async def main() -> None:
        async with openai.AsyncOpenAI(base_url=stack.base + "/v1", api_key=stack.acme_key, max_retries=0) as c:
            results = await asyncio.gather(
                *(c.chat.completions.create(model=alias, messages=user(f"Q{i} [[sim:tokens=6]]")) for i in range(5))
            )
            assert all(r.usage.completion_tokens == 6 for r in results)
            raw = await c.chat.completions.with_raw_response.create(
                model=alias, messages=user("stream [[sim:tokens=8]]"), stream=True,
                stream_options={"include_usage": True},
            )
            stream = raw.parse()
            chunks = [ch async for ch in stream]
            assert chunks[-1].usage.completion_tokens == 8
            row = await asyncio.to_thread(wait_row, raw.headers["x-bastion-request-id"])
            assert row["tenant"] == "acme" and row["user"] == "alice"  # the key's bound user
            assert row["completion_tokens"] == 8

    asyncio.run(main())


# ---- embeddings and models --------------------------------------------------------------------------------


def test_embeddings_float_and_base64(oai, stack, wait_row):
    raw = oai.embeddings.with_raw_response.create(model="sim-embed", input=["hello", "world"], encoding_format="float")
    r = raw.parse()
    assert [d.index for d in r.data] == [0, 1]
    v = r.data[0].embedding
    assert len(v) > 8 and all(isinstance(x, float) for x in v)
    assert abs(sum(x * x for x in v) - 1) < 1e-3
    assert r.usage.prompt_tokens > 0

    # The SDK's default asks for base64 and decodes it; the vectors must be the same.
    again = oai.embeddings.create(model="sim-embed", input=["hello", "world"])
    assert again.data[0].embedding == pytest.approx(v, abs=1e-6)

    # And on the wire, the default really is a base64 string of little-endian float32.
    import httpx

    wire = httpx.post(
        stack.base + "/v1/embeddings",
        json={"model": "sim-embed", "input": "hello", "encoding_format": "base64"},
        headers={"authorization": f"Bearer {stack.key}"},
    )
    assert wire.status_code == 200
    b64 = wire.json()["data"][0]["embedding"]
    assert isinstance(b64, str)
    decoded = struct.unpack(f"<{len(v)}f", base64.b64decode(b64))
    assert decoded == pytest.approx(v, abs=1e-6)

    row = wait_row(raw.headers["x-bastion-request-id"])
    assert row["endpoint"] == "embeddings" and row["alias"] == "sim-embed" and row["status"] == 200
    assert row["prompt_tokens"] == r.usage.prompt_tokens
    assert _params(row)["encoding_format"] == "float"


def test_embeddings_dimensions(oai):
    r = oai.embeddings.create(model="sim-embed", input="hello", dimensions=16, encoding_format="float")
    assert len(r.data[0].embedding) == 16


def test_models_list(oai):
    models = {m.id: m for m in oai.models.list()}
    assert {"sim-small", "sim-claude", "azure-gpt", "compat", "dead-model", "sim-embed"} <= set(models)
    assert models["sim-small"].object == "model"
    assert models["sim-small"].owned_by
