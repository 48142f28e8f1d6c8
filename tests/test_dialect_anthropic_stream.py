"""Hand-written cases for the streaming translators."""

from __future__ import annotations

import orjson
import pytest
from anthropic.types import RawMessageStreamEvent
from openai.types.chat import ChatCompletionChunk
from pydantic import TypeAdapter

from bastion.dialects import ChatToMessagesStream, MessagesToChatStream
from bastion.errors import UpstreamError

EVENT = TypeAdapter(RawMessageStreamEvent)


def check_events(events):
    """Anthropic event sequence is well-formed; returns it unchanged."""
    types = [t for t, _ in events]
    assert types[0] == "message_start"
    assert types[-2:] == ["message_delta", "message_stop"]
    assert types.count("message_start") == 1 and types.count("message_stop") == 1
    open_index = None
    next_index = 0
    for kind, data in events:
        assert data["type"] == kind
        if kind != "ping":
            EVENT.validate_python(data)
        if kind == "content_block_start":
            assert open_index is None and data["index"] == next_index
            open_index = data["index"]
            next_index += 1
        elif kind == "content_block_delta":
            assert data["index"] == open_index
        elif kind == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
        elif kind in ("message_delta", "message_stop"):
            assert open_index is None
    return events


ANTHROPIC_STREAM = [
    ("message_start", {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": [],
        "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 25, "output_tokens": 1, "cache_read_input_tokens": 5}}}),
    ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ("ping", {"type": "ping"}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get", "input": {}}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"city": '}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None}, "usage": {"output_tokens": 15}}),
    ("message_stop", {"type": "message_stop"}),
]  # fmt: skip


def test_messages_to_chat_stream():
    s = MessagesToChatStream()
    chunks = []
    for kind, data in ANTHROPIC_STREAM:
        chunks.extend(s.feed(kind, data))
    assert s.done
    assert s.finish() == []
    for c in chunks:
        ChatCompletionChunk.model_validate(c)
        assert c["id"] == "chatcmpl-msg_1" and c["model"] == "claude-x" and c["system_fingerprint"] is None
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"] for c in chunks[1:-2]]
    assert deltas == [
        {"content": "Hello"},
        {"content": "!"},
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get", "arguments": ""},
                }
            ]
        },
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]},
    ]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 30,
        "completion_tokens": 15,
        "total_tokens": 45,
        "prompt_tokens_details": {"cached_tokens": 5},
    }


def test_messages_to_chat_openai_accumulator():
    from openai.lib.streaming.chat import ChatCompletionStreamState

    state = ChatCompletionStreamState()
    s = MessagesToChatStream(model="alias", include_usage=False)
    for kind, data in ANTHROPIC_STREAM:
        for c in s.feed(kind, data):
            state.handle_chunk(ChatCompletionChunk.model_validate(c))
    done = state.get_final_completion()
    assert done.model == "alias"
    assert done.choices[0].message.content == "Hello!"
    assert done.choices[0].message.tool_calls[0].function.arguments == '{"city": "Paris"}'
    assert done.choices[0].finish_reason == "tool_calls"


def test_messages_to_chat_error_event_raises():
    s = MessagesToChatStream()
    s.feed(*ANTHROPIC_STREAM[0])
    with pytest.raises(UpstreamError) as exc:
        s.feed("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    assert "Overloaded" in exc.value.message
    assert exc.value.status == 503 and exc.value.retryable
    assert exc.value.upstream_body["error"]["type"] == "overloaded_error"


def test_messages_to_chat_truncated():
    s = MessagesToChatStream()
    for kind, data in ANTHROPIC_STREAM[:5]:
        s.feed(kind, data)
    assert not s.done and s.finish() == []
    # message_delta seen but message_stop lost: the usage chunk is still owed
    s = MessagesToChatStream()
    for kind, data in ANTHROPIC_STREAM[:-1]:
        s.feed(kind, data)
    assert not s.done
    owed = s.finish()
    assert len(owed) == 1 and owed[0]["usage"]["completion_tokens"] == 15


def test_messages_to_chat_thinking():
    s = MessagesToChatStream()
    s.feed(*ANTHROPIC_STREAM[0])
    out = s.feed(
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        },
    )
    out += s.feed(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}},
    )
    out += s.feed(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "x"}},
    )
    assert [c["choices"][0]["delta"] for c in out] == [{"reasoning_content": "hm"}]


def openai_chunk(delta=None, finish=None, usage=None, choices=True):
    c = {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "gpt-x"}
    c["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish}] if choices else []
    if usage is not None:
        c["usage"] = usage
    return c


def test_chat_to_messages_text_then_tools_usage_later():
    s = ChatToMessagesStream(model="claude-alias", input_tokens=7)
    events = []
    events += s.feed(openai_chunk({"role": "assistant", "content": ""}))
    events += s.feed(openai_chunk({"content": "Hi"}))
    events += s.feed(
        openai_chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "f", "arguments": ""},
                    }
                ]
            }
        )
    )
    events += s.feed(openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"x":'}}]}))
    events += s.feed(openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}))
    events += s.feed(
        openai_chunk(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "g", "arguments": "{}"},
                    }
                ]
            }
        )
    )
    finish = s.feed(openai_chunk({}, finish="tool_calls"))
    assert [t for t, _ in finish] == ["content_block_stop"]  # message_delta waits for usage
    events += finish
    events += s.feed(
        openai_chunk(
            choices=False,
            usage={
                "prompt_tokens": 20,
                "completion_tokens": 11,
                "total_tokens": 31,
                "prompt_tokens_details": {"cached_tokens": 4},
            },
        )
    )
    assert s.done and s.finish() == []
    check_events(events)
    assert events[0][1]["message"]["id"] == "msg_9"
    assert events[0][1]["message"]["model"] == "claude-alias"
    assert events[0][1]["message"]["usage"]["input_tokens"] == 7
    assert [t for t, _ in events] == [
        "message_start", "ping",
        "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop",
    ]  # fmt: skip
    assert events[5][1]["content_block"] == {"type": "tool_use", "id": "call_a", "name": "f", "input": {}}
    assert events[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 11, "input_tokens": 16, "cache_read_input_tokens": 4},
    }


def test_chat_to_messages_anthropic_accumulator():
    from anthropic.lib.streaming._messages import accumulate_event

    s = ChatToMessagesStream(model="m", message_id="msg_fixed")
    events = s.feed(openai_chunk({"role": "assistant", "content": "Hel"}))
    events += s.feed(openai_chunk({"content": "lo"}, finish="stop"))
    events += s.finish()
    check_events(events)
    snapshot, bufs = None, {}
    for kind, data in events:
        if kind != "ping":
            snapshot = accumulate_event(
                event=EVENT.validate_python(data), current_snapshot=snapshot, json_bufs=bufs
            )
    assert snapshot.id == "msg_fixed"
    assert snapshot.content[0].text == "Hello"
    assert snapshot.stop_reason == "end_turn"
    assert snapshot.usage.output_tokens == 0  # no usage chunk came


def test_chat_to_messages_usage_in_finish_chunk():
    s = ChatToMessagesStream(model="m")
    events = s.feed(openai_chunk({"content": "x"}))
    events += s.feed(
        openai_chunk(
            {}, finish="length", usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
        )
    )
    assert s.done
    check_events(events)
    assert events[-2][1]["delta"]["stop_reason"] == "max_tokens"
    assert events[-2][1]["usage"]["output_tokens"] == 2


def test_chat_to_messages_broken_stream():
    s = ChatToMessagesStream(model="m")
    events = s.feed(openai_chunk({"content": "partial"}))
    assert s.finish() == []
    assert not s.done
    assert "message_stop" not in [t for t, _ in events]
    assert ChatToMessagesStream(model="m").finish() == []


def test_chat_to_messages_error_chunk():
    s = ChatToMessagesStream(model="m")
    with pytest.raises(UpstreamError, match="boom"):
        s.feed({"error": {"message": "boom", "type": "server_error"}})


def test_chat_to_messages_interleaved_tool_calls_rejected():
    s = ChatToMessagesStream(model="m")
    s.feed(
        openai_chunk({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f", "arguments": "{"}}]})
    )
    s.feed(
        openai_chunk({"tool_calls": [{"index": 1, "id": "b", "function": {"name": "g", "arguments": "{"}}]})
    )
    with pytest.raises(UpstreamError):
        s.feed(openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]}))


def test_chat_to_messages_empty_answer():
    s = ChatToMessagesStream(model="m")
    events = s.feed(openai_chunk({"role": "assistant", "content": ""}))
    events += s.feed(openai_chunk({}, finish="stop"))
    events += s.finish()
    check_events(events)
    assert [t for t, _ in events] == ["message_start", "ping", "message_delta", "message_stop"]


# --- property: OpenAI chunks -> Anthropic events -> OpenAI chunks ---------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


def split(draw, s: str) -> list[str]:
    cuts = sorted(draw(st.sets(st.integers(1, max(len(s) - 1, 1)), max_size=4))) if len(s) > 1 else []
    bounds = [0, *cuts, len(s)]
    return [s[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if s[a:b]]


@st.composite
def chat_stream(draw):
    segments = []
    for _ in range(draw(st.integers(0, 5))):
        if draw(st.booleans()):
            segments.append(("text", draw(st.text(min_size=1, max_size=15))))
        else:
            args = orjson_dumps(
                draw(
                    st.dictionaries(
                        st.text(max_size=4), st.integers(-(2**53), 2**53) | st.text(max_size=6), max_size=3
                    )
                )
            )
            segments.append(
                (
                    "tool",
                    draw(st.from_regex(r"call_[a-z0-9]{3,6}", fullmatch=True)),
                    draw(st.from_regex(r"[a-z_]{1,8}", fullmatch=True)),
                    args,
                )
            )
    has_tools = any(s[0] == "tool" for s in segments)
    finish = "tool_calls" if has_tools else draw(st.sampled_from(["stop", "length", "content_filter"]))
    usage = None
    if draw(st.booleans()):
        prompt = draw(st.integers(0, 5000))
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": draw(st.integers(0, 5000)),
            "prompt_tokens_details": {"cached_tokens": draw(st.integers(0, prompt))},
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    chunks = [openai_chunk({"role": "assistant", "content": ""})]
    tool_index = 0
    for seg in segments:
        if seg[0] == "text":
            chunks += [openai_chunk({"content": piece}) for piece in split(draw, seg[1])]
        else:
            _, call_id, name, args = seg
            head = {
                "index": tool_index,
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }
            chunks.append(openai_chunk({"tool_calls": [head]}))
            chunks += [
                openai_chunk({"tool_calls": [{"index": tool_index, "function": {"arguments": p}}]})
                for p in split(draw, args)
            ]
            tool_index += 1
    usage_in_finish = usage is not None and draw(st.booleans())
    chunks.append(openai_chunk({}, finish=finish, usage=usage if usage_in_finish else None))
    if usage is not None and not usage_in_finish:
        chunks.append(openai_chunk(choices=False, usage=usage))
    return segments, finish, usage, chunks


def orjson_dumps(value):
    return orjson.dumps(value).decode()


@settings(max_examples=150, deadline=None)
@given(chat_stream(), st.booleans())
def test_stream_round_trip(case, include_usage):
    from anthropic.lib.streaming._messages import accumulate_event
    from openai.lib.streaming.chat import ChatCompletionStreamState

    segments, finish, usage, chunks = case
    forward = ChatToMessagesStream(model="claude-x", input_tokens=3)
    events = []
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
        events += forward.feed(chunk)
    events += forward.finish()
    assert forward.done
    check_events(events)

    # The Anthropic SDK's own accumulator agrees with the segments.
    snapshot, bufs = None, {}
    for kind, data in events:
        if kind != "ping":
            snapshot = accumulate_event(
                event=EVENT.validate_python(data), current_snapshot=snapshot, json_bufs=bufs
            )
    texts = "".join(s[1] for s in segments if s[0] == "text")
    assert "".join(b.text for b in snapshot.content if b.type == "text") == texts
    tools = [(s[1], s[2], orjson.loads(s[3])) for s in segments if s[0] == "tool"]
    assert [(b.id, b.name, b.input) for b in snapshot.content if b.type == "tool_use"] == tools

    back = MessagesToChatStream(include_usage=include_usage)
    out = []
    for kind, data in events:
        out += back.feed(kind, data)
    out += back.finish()
    assert back.done
    state = ChatCompletionStreamState()
    for c in out:
        state.handle_chunk(ChatCompletionChunk.model_validate(c))
    final = state.current_completion_snapshot
    choice = final.choices[0]
    assert (choice.message.content or "") == texts
    assert [(t.id, t.function.name, t.function.arguments) for t in choice.message.tool_calls or []] == [
        (s[1], s[2], s[3]) for s in segments if s[0] == "tool"
    ]
    assert choice.finish_reason == finish
    usage_chunks = [c for c in out if c["choices"] == []]
    assert len(usage_chunks) == (1 if include_usage else 0)
    if include_usage and usage is not None:
        assert usage_chunks[0]["usage"] == usage
