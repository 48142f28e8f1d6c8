"""Hand-written cases for non-streaming response translation."""

from __future__ import annotations

import anthropic.types
import openai.types.chat
import pytest

from bastion.dialects import chat_response_to_messages, messages_response_to_chat


def anthropic_message(**kw):
    msg = {
        "id": "msg_01abc",
        "type": "message",
        "role": "assistant",
        "model": "claude-x-1",
        "content": [{"type": "text", "text": "Hello"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5},
    }
    msg.update(kw)
    return msg


def chat_completion(**kw):
    resp = {
        "id": "chatcmpl-xyz",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-x",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi"},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }
    resp.update(kw)
    return resp


def test_text_response():
    out = messages_response_to_chat(anthropic_message())
    openai.types.chat.ChatCompletion.model_validate(out)
    assert out["id"] == "chatcmpl-msg_01abc"
    assert out["object"] == "chat.completion"
    assert out["model"] == "claude-x-1"
    assert out["choices"][0]["message"]["content"] == "Hello"
    assert out["choices"][0]["finish_reason"] == "stop"
    assert messages_response_to_chat(anthropic_message(), model="alias")["model"] == "alias"


def test_tool_use_response():
    content = [
        {"type": "thinking", "thinking": "let me think", "signature": "sig"},
        {"type": "text", "text": "Calling. "},
        {"type": "tool_use", "id": "toolu_1", "name": "get", "input": {"q": "x"}},
        {"type": "text", "text": "Done."},
    ]
    out = messages_response_to_chat(anthropic_message(content=content, stop_reason="tool_use"))
    openai.types.chat.ChatCompletion.model_validate(out)
    msg = out["choices"][0]["message"]
    assert msg["content"] == "Calling. Done."
    assert msg["tool_calls"] == [
        {"id": "toolu_1", "type": "function", "function": {"name": "get", "arguments": '{"q":"x"}'}}
    ]
    assert msg["reasoning_content"] == "let me think"
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    only_tool = messages_response_to_chat(anthropic_message(content=content[2:3], stop_reason="tool_use"))
    assert only_tool["choices"][0]["message"]["content"] is None


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
    ],
)
def test_stop_reason_mapping(stop, finish):
    assert (
        messages_response_to_chat(anthropic_message(stop_reason=stop))["choices"][0]["finish_reason"]
        == finish
    )


def test_usage_with_cache_tokens():
    usage = {
        "input_tokens": 10,
        "output_tokens": 7,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 20,
    }
    out = messages_response_to_chat(anthropic_message(usage=usage))
    assert out["usage"] == {
        "prompt_tokens": 130,
        "completion_tokens": 7,
        "total_tokens": 137,
        "prompt_tokens_details": {"cached_tokens": 100},
        "cache_creation_input_tokens": 20,
    }
    back = chat_response_to_messages(out)
    assert back["usage"] == {
        "input_tokens": 10,
        "output_tokens": 7,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 20,
    }


def test_chat_to_messages_text():
    out = chat_response_to_messages(chat_completion())
    anthropic.types.Message.model_validate(out)
    assert out["id"] == "msg_xyz"
    assert out["type"] == "message"
    assert out["content"] == [{"type": "text", "text": "Hi"}]
    assert out["stop_reason"] == "end_turn"
    assert out["stop_sequence"] is None
    assert out["usage"]["input_tokens"] == 12 and out["usage"]["output_tokens"] == 3
    assert chat_response_to_messages(chat_completion(), model="m")["model"] == "m"


def test_chat_to_messages_tools_and_cached():
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": [1]}'}},
            {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "not json"}},
        ],
    }
    resp = chat_completion(
        choices=[{"index": 0, "message": message, "finish_reason": "tool_calls"}],
        usage={
            "prompt_tokens": 50,
            "completion_tokens": 9,
            "total_tokens": 59,
            "prompt_tokens_details": {"cached_tokens": 30},
        },
    )
    out = chat_response_to_messages(resp)
    anthropic.types.Message.model_validate(out)
    assert out["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": [1]}},
        {"type": "tool_use", "id": "call_2", "name": "g", "input": {"_raw_arguments": "not json"}},
    ]
    assert out["stop_reason"] == "tool_use"
    assert out["usage"] == {
        "input_tokens": 20,
        "output_tokens": 9,
        "cache_read_input_tokens": 30,
        "cache_creation_input_tokens": 0,
    }


@pytest.mark.parametrize(
    ("finish", "stop"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("function_call", "tool_use"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
    ],
)
def test_finish_reason_mapping(finish, stop):
    resp = chat_completion()
    resp["choices"][0]["finish_reason"] = finish
    assert chat_response_to_messages(resp)["stop_reason"] == stop


def test_chat_refusal():
    resp = chat_completion(
        choices=[
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "refusal": "no"},
                "finish_reason": "stop",
            }
        ]
    )
    out = chat_response_to_messages(resp)
    assert out["content"] == [{"type": "text", "text": "no"}]
    assert out["stop_reason"] == "refusal"


def test_ids_round_trip():
    msg = anthropic_message()
    assert chat_response_to_messages(messages_response_to_chat(msg))["id"] == "msg_01abc"
    resp = chat_completion(id="chatcmpl-abc")
    assert messages_response_to_chat(chat_response_to_messages(resp))["id"] == "chatcmpl-msg_abc"
