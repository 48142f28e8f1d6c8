"""Exact offline token counts (bastion.metering.tokens) and the simulator's usage built on them."""

from __future__ import annotations

import math
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
import tiktoken.load

from bastion.metering import tokens
from bastion.metering.tokens import (
    count_chat,
    count_messages_request,
    count_text,
    encoding_for_model,
    get_encoding,
    is_exact,
)
from tests.procs import start

# --- encoding identity: token ids pin the exact vocabulary, not just the counts --------------------

IDS = {
    ("o200k_base", "Hello, world!"): [13225, 11, 2375, 0],
    ("cl100k_base", "Hello, world!"): [9906, 11, 1917, 0],
    # the example in OpenAI's "How to count tokens with tiktoken" guide
    ("cl100k_base", "tiktoken is great!"): [83, 1609, 5963, 374, 2294, 0],
    ("o200k_base", "tiktoken is great!"): [83, 8251, 2488, 382, 2212, 0],
    ("o200k_base", "Ünïcødé — 東京タワー 🦊"): [8858, 77, 191375, 36314, 377, 2733, 185244, 12288, 34022, 3022, 9552,
                                                 99, 232],
}

# (text, o200k count, cl100k count)
COUNTS = [
    ("", 0, 0),
    ("Hello, world!", 4, 4),
    ("Bastion routes requests to LLM providers.", 10, 10),
    ("Ünïcødé — 東京タワー 🦊", 13, 17),
    ("def f(x):\n    return x**2\n", 10, 10),
    ("<|endoftext|> is text here", 10, 10),  # a special-token marker in user text is plain text
    ("Bonjour, ça va ? 日本語のテキスト 🦊", 14, 16),
]


@pytest.mark.parametrize(("name", "text"), list(IDS))
def test_token_ids_pin_the_encoding(name: str, text: str) -> None:
    enc = get_encoding(name)
    assert enc.encode_ordinary(text) == IDS[(name, text)]
    assert enc.decode(IDS[(name, text)]) == text


def test_encoding_definitions() -> None:
    o200k, cl100k = get_encoding("o200k_base"), get_encoding("cl100k_base")
    assert (o200k.name, o200k.n_vocab, o200k.eot_token) == ("o200k_base", 200019, 199999)
    assert (cl100k.name, cl100k.n_vocab, cl100k.eot_token) == ("cl100k_base", 100277, 100257)
    assert o200k.encode("<|endoftext|>", allowed_special="all") == [199999]
    assert cl100k.encode("<|endofprompt|>", allowed_special="all") == [100276]
    assert get_encoding("o200k_base") is o200k  # built once, then cached
    tokens.warm()
    assert get_encoding("cl100k_base") is cl100k
    with pytest.raises(ValueError):
        get_encoding("p50k_base")


@pytest.mark.parametrize(("text", "n_o200k", "n_cl100k"), COUNTS)
def test_known_counts(text: str, n_o200k: int, n_cl100k: int) -> None:
    assert count_text(text, "gpt-4o") == n_o200k
    assert count_text(text, "gpt-4-turbo") == n_cl100k
    assert count_text(text, "sim-small") == n_o200k


# --- offline: no download, no cache, no network -----------------------------------------------------


def test_loads_offline_with_empty_cache_and_no_sockets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    tried: list[Any] = []

    def no_network(*args: Any, **kwargs: Any) -> Any:
        tried.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(tiktoken.load, "read_file", no_network)  # tiktoken's own download/cache path
    monkeypatch.setattr(tokens, "_cache", {})  # force a fresh build in this process
    for name in tokens.ENCODINGS:
        enc = get_encoding(name)
        assert enc.encode_ordinary("Hello, world!") == IDS[(name, "Hello, world!")]
    assert count_chat([{"role": "user", "content": "Hello, world!"}], "gpt-4o") == 11
    assert tried == [] and list(cache.iterdir()) == []


def test_bundled_files_must_match_the_official_hash() -> None:
    url = "https://example.invalid/encodings/cl100k_base.tiktoken"
    with pytest.raises(RuntimeError, match="sha256"):
        tokens._bundled_bpe(url, "0" * 64)
    with pytest.raises(RuntimeError, match="unverified"):
        tokens._bundled_bpe(url, None)
    # the hash the real constructor passes is tiktoken_ext's official one, and it matches
    ranks = tokens._bundled_bpe(url, "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7")
    assert len(ranks) == 100256 and ranks[b"Hello"] == 9906


# --- models ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "name"), [
    ("gpt-4o", "o200k_base"), ("gpt-4o-mini-2024-07-18", "o200k_base"), ("chatgpt-4o-latest", "o200k_base"),
    ("gpt-4.1-nano", "o200k_base"), ("gpt-5", "o200k_base"), ("o1-mini", "o200k_base"), ("o3", "o200k_base"),
    ("o4-mini", "o200k_base"), ("sim-small", "o200k_base"), ("sim-claude", "o200k_base"),
    ("openai/gpt-4o", "o200k_base"), ("ft:gpt-4o-mini:acme::abc123", "o200k_base"), ("GPT-4O", "o200k_base"),
    ("gpt-4", "cl100k_base"), ("gpt-4-turbo", "cl100k_base"), ("gpt-4-0613", "cl100k_base"),
    ("gpt-3.5-turbo", "cl100k_base"), ("text-embedding-3-small", "cl100k_base"),
    ("text-embedding-ada-002", "cl100k_base"),
    ("claude-sonnet-4-5", None), ("gemini-2.5-pro", None), ("llama-3.1-70b", None), ("mistral-large", None),
    ("davinci-002", None), ("", None),
])
def test_encoding_for_model(model: str, name: str | None) -> None:
    enc = encoding_for_model(model)
    assert (enc.name if enc is not None else None) == name
    assert is_exact(model) is (name is not None)


def test_estimates_for_other_families() -> None:
    text = "The gateway routes every request to the cheapest healthy deployment. " * 10
    n = count_text(text, "gpt-4o")
    assert n == 111
    assert count_text(text, "claude-3-5-sonnet-20241022") == math.ceil(n * 1.15) == 128
    assert count_text(text, "anthropic.claude-3-haiku-20240307-v1:0") == 128  # Bedrock-style name
    assert count_text(text, "gemini-1.5-pro") == math.ceil(n * 1.05)
    assert count_text(text, "meta-llama/Llama-3.1-8B-Instruct") == math.ceil(n * 1.05)
    assert count_text(text, "mistral-small-latest") == math.ceil(n * 1.10)
    assert count_text(text, "some-new-model") == math.ceil(n * tokens.DEFAULT_FACTOR)
    assert count_text("", "claude-opus-4") == 0


# --- count_chat: hand-worked examples -----------------------------------------------------------------

# Single messages whose prompt_tokens OpenAI's API reported (published with openai-messages-token-helper's
# test data): (message, gpt-4o, gpt-4).
API_REPORTED = [
    ({"role": "system", "content": "You are a bot."}, 12, 12),
    ({"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate "
                                   "jargon into plain English."}, 24, 25),
    ({"role": "system", "content": "á"}, 8, 8),
    ({"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."}, 20, 20),
    ({"role": "user", "content": "Hello, how are you?"}, 13, 13),
    ({"role": "user", "content": "What happens in a performance review?"}, 14, 14),
    ({"role": "assistant", "content": "Yes, there is a dress code at Contoso Electronics. Look sharp! "
                                      "[employee_handbook-1.pdf]"}, 30, 30),
]


@pytest.mark.parametrize(("message", "n_4o", "n_4"), API_REPORTED)
def test_count_chat_matches_counts_reported_by_the_api(message: dict[str, Any], n_4o: int, n_4: int) -> None:
    assert count_chat([message], "gpt-4o") == n_4o
    assert count_chat([message], "gpt-4") == n_4


def test_count_chat_by_hand() -> None:
    # 3 (message) + 1 ("user") + 4 ("Hello", ",", " world", "!") + 3 (reply priming)
    assert count_chat([{"role": "user", "content": "Hello, world!"}], "gpt-4o") == 11
    # + 3 + 1 ("system") + 3 ("Be", " brief", ".") for a system message
    two = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello, world!"}]
    assert count_chat(two, "gpt-4o") == 18
    # a name: its tokens ("example", "_user") + 1
    named = [{"role": "user", "name": "example_user", "content": "Hello, world!"}]
    assert count_chat(named, "gpt-4o") == 11 + 2 + 1
    # content parts: the text parts' tokens, whatever the split
    parts = [{"role": "user", "content": [{"type": "text", "text": "Hello,"}, {"type": "text", "text": " world!"}]}]
    assert count_chat(parts, "gpt-4o") == 11


def test_count_chat_images() -> None:
    def msg(detail: str | None) -> list[dict[str, Any]]:
        image: dict[str, Any] = {"url": "data:image/png;base64,iVBORw0KGgo="}
        if detail:
            image["detail"] = detail
        return [{"role": "user", "content": [{"type": "text", "text": "Describe this picture:"},
                                             {"type": "image_url", "image_url": image}]}]

    # 3 + 1 ("user") + 4 ("Describe", " this", " picture", ":") + image + 3
    assert count_chat(msg("low"), "gpt-4o") == 11 + tokens.IMAGE_TOKENS_LOW == 96
    assert count_chat(msg("high"), "gpt-4o") == 11 + tokens.IMAGE_TOKENS_HIGH == 776
    assert count_chat(msg(None), "gpt-4o") == 776


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
TOOL_ROUND = [
    {"role": "user", "content": "What's the weather in Rome?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 24C"},
]


def test_count_chat_tool_calls_and_results() -> None:
    # user:      3 + 1 ("user") + 6 ("What's the weather in Rome?")
    # assistant: 3 + 1 ("assistant") + 2 ("get", "_weather") + 5 ('{"', 'city', '":"', 'Rome', '"}')
    # tool:      3 + 1 ("tool") + 6 ("sunny, 24C"); its tool_call_id is not counted
    # reply:     3
    assert count_chat(TOOL_ROUND, "gpt-4o") == 10 + 11 + 10 + 3 == 34
    # tools add the tokens of their compact JSON (34 here)
    tools_json = orjson.dumps([WEATHER_TOOL]).decode()
    assert count_text(tools_json, "gpt-4o") == 34
    assert count_chat(TOOL_ROUND, "gpt-4o", tools=[WEATHER_TOOL]) == 34 + 34
    # the legacy function_call counts the same way
    legacy = [TOOL_ROUND[0], {"role": "assistant", "content": None,
                              "function_call": {"name": "get_weather", "arguments": '{"city":"Rome"}'}}]
    assert count_chat(legacy, "gpt-4o") == 10 + 11 + 3


def test_count_chat_estimate_for_other_families() -> None:
    exact = count_chat(TOOL_ROUND, "sim-small")
    assert count_chat(TOOL_ROUND, "claude-3-opus") == math.ceil(exact * 1.15)
    assert count_chat([], "gpt-4o") == 3


def test_count_messages_request() -> None:
    body = {"model": "claude-x", "max_tokens": 10, "system": "Be brief.",
            "messages": [{"role": "user", "content": "Hello, world!"}]}
    # 3 ("Be brief.") + 3 + 1 ("user") + 4 + 3 (reply)
    assert count_messages_request(body, "sim-claude") == 14
    assert count_messages_request(body, "claude-sonnet-4-5") == math.ceil(14 * 1.15) == 17
    blocks = {**body, "system": [{"type": "text", "text": "Be brief."}],
              "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello, world!"}]}]}
    assert count_messages_request(blocks, "sim-claude") == 14
    tool_round = {"messages": [
        {"role": "user", "content": "What's the weather in Rome?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                           "input": {"city": "Rome"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny, 24C"},
                                     {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                  "data": "iVBORw0KGgo="}}]},
    ], "tools": [{"name": "get_weather", "input_schema": WEATHER_TOOL["function"]["parameters"]}]}
    tools_n = count_text(orjson.dumps(tool_round["tools"]).decode(), "gpt-4o")
    assert count_messages_request(tool_round, "gpt-4o") == (
        3 + (3 + 1 + 6) + (3 + 1 + 2 + 5) + (3 + 1 + 6 + tokens.ANTHROPIC_IMAGE_TOKENS) + tools_n)


# --- the simulator reports these counts ---------------------------------------------------------------


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A simulator subprocess (as tests/sim_fixtures.py starts one) with an empty tiktoken cache directory:
    it must count without ever writing (or reading) a tiktoken cache."""
    d = tmp_path_factory.mktemp("sim")
    (d / "sim.yaml").write_text("seed: 11\noutput_tokens: {min: 5, max: 40}\n")
    (d / "cache").mkdir()
    proc = start(["-m", "bastion.sim.server", "--port", "0", "--config", str(d / "sim.yaml")],
                 env={"TIKTOKEN_CACHE_DIR": str(d / "cache")})
    yield proc.url
    proc.stop()
    assert list((d / "cache").iterdir()) == []


@pytest.fixture(scope="module")
def oai(sim: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim + "/v1", api_key="sk-test", max_retries=0)


CHATS = [
    [{"role": "user", "content": "Tell me about rivers."}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello! How can I help?"}, {"role": "user", "content": "Explain caching."}],
    [{"role": "user", "content": "Ünïcødé — 東京タワー 🦊, ça va ? Привет!"}],
    [{"role": "user", "name": "alice", "content": [{"type": "text", "text": "Look:"},
                                                   {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}],
    TOOL_ROUND,
    [{"role": "user", "content": "Echo this back [[sim:echo]]: naïve café — 42 µs, {\"k\": [1, 2]}"}],
]


@pytest.mark.parametrize("messages", CHATS)
def test_sim_openai_usage_is_exact(oai: openai.OpenAI, messages: list[dict[str, Any]]) -> None:
    r = oai.chat.completions.create(model="sim-small", messages=messages)  # type: ignore[arg-type]
    assert r.usage is not None
    assert r.usage.prompt_tokens == count_chat(messages, "gpt-4o")
    assert r.usage.completion_tokens == count_text(r.choices[0].message.content or "", "gpt-4o") > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_sim_openai_stream_usage_is_exact(oai: openai.OpenAI) -> None:
    for messages in CHATS:
        chunks = list(oai.chat.completions.create(model="sim-small", messages=messages, stream=True,  # type: ignore[arg-type]
                                                  stream_options={"include_usage": True}))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        usage = chunks[-1].usage
        assert usage is not None
        assert usage.prompt_tokens == count_chat(messages, "gpt-4o")
        assert usage.completion_tokens == count_text(text, "gpt-4o")


def test_sim_forced_tokens_are_real_tokens_one_delta_each(oai: openai.OpenAI) -> None:
    for n in (1, 7, 33):
        messages = [{"role": "user", "content": f"Go [[sim:tokens={n}]]"}]
        chunks = list(oai.chat.completions.create(model="sim-small", messages=messages, stream=True,  # type: ignore[arg-type]
                                                  stream_options={"include_usage": True}))
        deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
        assert len(deltas) == n and count_text("".join(deltas), "gpt-4o") == n
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == n


def test_sim_tool_call_and_max_tokens_and_n(oai: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Weather in Rome?"}]
    r = oai.chat.completions.create(model="sim-small", messages=messages, tools=[WEATHER_TOOL])  # type: ignore[arg-type,list-item]
    assert r.usage is not None and r.usage.prompt_tokens == count_chat(messages, "gpt-4o", tools=[WEATHER_TOOL])
    call = r.choices[0].message.tool_calls[0].function  # type: ignore[index,union-attr]
    assert r.usage.completion_tokens == count_text(call.name, "gpt-4o") + count_text(call.arguments, "gpt-4o")
    echo = [{"role": "user", "content": "[[sim:echo]] " + "naïve café, 東京タワー! " * 20}]
    capped = oai.chat.completions.create(model="sim-small", messages=echo, max_tokens=17)  # type: ignore[arg-type]
    assert capped.choices[0].finish_reason == "length" and capped.usage is not None
    assert capped.usage.completion_tokens == count_text(capped.choices[0].message.content or "", "gpt-4o") <= 17
    two = oai.chat.completions.create(model="sim-small", messages=messages, n=2)  # type: ignore[arg-type]
    assert two.usage is not None
    assert two.usage.completion_tokens == sum(count_text(c.message.content or "", "gpt-4o") for c in two.choices)


def test_sim_anthropic_usage_is_exact(sim: str) -> None:
    claude = anthropic.Anthropic(base_url=sim, api_key="sk-ant-test", max_retries=0)
    bodies: list[dict[str, Any]] = [
        {"system": "Be brief.", "messages": [{"role": "user", "content": "Tell me about rivers."}]},
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "Ünïcødé 東京タワー 🦊"}]},
                      {"role": "assistant", "content": "Noted."}, {"role": "user", "content": "More."}]},
    ]
    for body in bodies:
        m = claude.messages.create(model="sim-claude", max_tokens=200, **body)
        assert m.usage.input_tokens == count_messages_request(body, "gpt-4o")
        assert m.usage.output_tokens == count_text(m.content[0].text, "gpt-4o")  # type: ignore[union-attr]
        counted = httpx.post(sim + "/v1/messages/count_tokens", json={"model": "sim-claude", **body}).json()
        assert counted["input_tokens"] == m.usage.input_tokens
        with claude.messages.stream(model="sim-claude", max_tokens=200, **body) as s:
            text = "".join(s.text_stream)
            final = s.get_final_message()
        assert final.usage.output_tokens == count_text(text, "gpt-4o")


def test_sim_prose_pieces_are_single_tokens() -> None:
    import random

    from bastion.sim import generate as gen

    enc = get_encoding("o200k_base")
    assert all(len(enc.encode_ordinary(" " + w)) == 1 for w in gen.VOCAB)
    caps = gen._capital_vocab()
    assert len(caps) > 150 and "River" in caps and "Meadow" not in caps  # "Meadow" is two tokens
    for seed in range(300):
        pieces = gen.prose(random.Random(seed), 80)
        assert all(len(enc.encode_ordinary(p)) == 1 for p in pieces)
        assert len(enc.encode_ordinary("".join(pieces))) == 80
