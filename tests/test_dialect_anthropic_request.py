"""Hand-written cases for request translation in both directions."""

from __future__ import annotations

import orjson
import pytest

from bastion.dialects import DEFAULT_MAX_TOKENS, chat_request_to_messages, messages_request_to_chat
from bastion.errors import InvalidRequest, UnsupportedParameter


def anth(**kw):
    body = {"model": "claude-x", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    body.update(kw)
    return body


def chat(**kw):
    body = {"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]}
    body.update(kw)
    return body


# --- Anthropic -> chat ------------------------------------------------------------------------------


def test_minimal_and_scalars():
    out = messages_request_to_chat(
        anth(
            system="be brief",
            temperature=0.3,
            top_p=0.9,
            top_k=40,
            stop_sequences=["END"],
            stream=True,
            metadata={"user_id": "u1"},
        )
    )
    assert out == {
        "model": "claude-x",
        "max_tokens": 100,
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "temperature": 0.3,
        "top_p": 0.9,
        "top_k": 40,
        "stop": ["END"],
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "u1",
    }


def test_system_blocks_joined():
    out = messages_request_to_chat(
        anth(
            system=[
                {"type": "text", "text": "a"},
                {"type": "text", "text": "b", "cache_control": {"type": "ephemeral"}},
            ]
        )
    )
    assert out["messages"][0] == {"role": "system", "content": "a\n\nb"}


def test_images_base64_and_url():
    content = [
        {"type": "text", "text": "look"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}},
    ]
    out = messages_request_to_chat(anth(messages=[{"role": "user", "content": content}]))
    assert out["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}},
            ],
        }
    ]


def test_documents():
    content = [
        {
            "type": "document",
            "title": "T",
            "source": {"type": "text", "media_type": "text/plain", "data": "body"},
        },
        {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "x"}]}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"}},
    ]
    out = messages_request_to_chat(anth(messages=[{"role": "user", "content": content}]))
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "[document: T]\nbody"},
        {"type": "text", "text": "x"},
        {
            "type": "file",
            "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "document.pdf"},
        },
    ]
    with pytest.raises(UnsupportedParameter) as exc:
        messages_request_to_chat(
            anth(
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "document", "source": {"type": "url", "url": "https://x"}}],
                    }
                ]
            )
        )
    assert exc.value.param == "messages[0].content[0].source.type"


def test_tool_use_and_results_with_mixed_text():
    messages = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get", "input": {"city": "Paris", "n": [1, 2]}},
                {"type": "tool_use", "id": "toolu_2", "name": "get", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [{"type": "text", "text": "boom"}],
                    "is_error": True,
                },
                {"type": "text", "text": "thanks"},
            ],
        },
    ]
    out = messages_request_to_chat(anth(messages=messages))
    assert out["messages"] == [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get", "arguments": '{"city":"Paris","n":[1,2]}'},
                },
                {"id": "toolu_2", "type": "function", "function": {"name": "get", "arguments": "{}"}},
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "[tool_error] boom"},
        {"role": "user", "content": [{"type": "text", "text": "thanks"}]},
    ]
    # and back: tool results merged into one user turn, is_error restored
    back = chat_request_to_messages(out)
    assert back["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": "boom", "is_error": True},
            {"type": "text", "text": "thanks"},
        ],
    }


def test_tool_use_only_assistant_has_null_content():
    messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}}]},
    ]
    out = messages_request_to_chat(anth(messages=messages))
    assert out["messages"][1]["content"] is None


def test_tool_result_image_moves_to_user_message():
    messages = [
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "t1",
                    "content": [
                        {"type": "text", "text": "screenshot"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": "QQ"},
                        },
                    ],
                }
            ],
        }
    ]
    out = messages_request_to_chat(anth(messages=messages))
    assert out["messages"] == [
        {"role": "tool", "tool_call_id": "t1", "content": "screenshot"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "[image from tool result t1]"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,QQ"}},
            ],
        },
    ]


def test_tools_and_tool_choice_variants():
    tools = [{"name": "f", "description": "d", "input_schema": {"type": "object", "properties": {}}}]
    out = messages_request_to_chat(anth(tools=tools, tool_choice={"type": "auto"}))
    assert out["tools"] == [
        {
            "type": "function",
            "function": {"name": "f", "description": "d", "parameters": {"type": "object", "properties": {}}},
        }
    ]
    assert out["tool_choice"] == "auto"
    assert "parallel_tool_calls" not in out
    assert messages_request_to_chat(anth(tool_choice={"type": "any"}))["tool_choice"] == "required"
    assert messages_request_to_chat(anth(tool_choice={"type": "none"}))["tool_choice"] == "none"
    out = messages_request_to_chat(
        anth(tool_choice={"type": "tool", "name": "f", "disable_parallel_tool_use": True})
    )
    assert out["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert out["parallel_tool_calls"] is False
    with pytest.raises(UnsupportedParameter) as exc:
        messages_request_to_chat(anth(tools=[{"type": "web_search_20250305", "name": "web_search"}]))
    assert exc.value.param == "tools[0].type"


def test_output_config_format():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    out = messages_request_to_chat(anth(output_config={"format": {"type": "json_schema", "schema": schema}}))
    assert out["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema},
    }


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": "5"}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"messages": "hi"}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "bot", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": []}]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, "messages[0].content[0].type"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": 3}]}]},
            "messages[0].content[0].text",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "x", "name": "f", "input": "{}"}],
                    },
                ]
            },
            "messages[1].content[0].input",
        ),
        ({"tool_choice": {"type": "maybe"}}, "tool_choice.type"),
        ({"temperature": "hot"}, "temperature"),
        ({"stop_sequences": "END"}, "stop_sequences"),
        ({"system": [{"type": "image"}]}, "system[0].type"),
        ({"model": 3}, "model"),
    ],
)
def test_messages_validation(patch, param):
    body = anth()
    for key, value in patch.items():
        if value is None:
            body.pop(key)
        else:
            body[key] = value
    with pytest.raises(InvalidRequest) as exc:
        messages_request_to_chat(body)
    assert exc.value.param == param
    assert param in exc.value.message


# --- chat -> Anthropic ------------------------------------------------------------------------------


def test_chat_minimal_defaults():
    out = chat_request_to_messages(chat())
    assert out == {
        "model": "gpt-x",
        "max_tokens": DEFAULT_MAX_TOKENS,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    }


def test_chat_scalars_and_dropped():
    out = chat_request_to_messages(
        chat(
            max_tokens=50,
            max_completion_tokens=70,
            temperature=1.7,
            top_p=0.5,
            stop="X",
            stream=True,
            stream_options={"include_usage": True},
            user="u",
            seed=1,
            frequency_penalty=0.1,
            presence_penalty=0.2,
            logit_bias={"1": 2},
            n=1,
        )
    )
    assert out["max_tokens"] == 70
    assert out["temperature"] == 1.0
    assert out["top_p"] == 0.5
    assert out["stop_sequences"] == ["X"]
    assert out["stream"] is True
    assert out["metadata"] == {"user_id": "u"}
    for key in ("seed", "frequency_penalty", "presence_penalty", "logit_bias", "stream_options", "n"):
        assert key not in out
    assert chat_request_to_messages(chat(stop=["a", "b"]))["stop_sequences"] == ["a", "b"]


def test_chat_system_developer_and_merging():
    out = chat_request_to_messages(
        chat(
            messages=[
                {"role": "system", "content": "s1"},
                {"role": "developer", "content": [{"type": "text", "text": "s2"}]},
                {"role": "user", "content": "a"},
                {"role": "user", "content": [{"type": "text", "text": "b"}]},
                {"role": "assistant", "content": "c"},
                {"role": "assistant", "content": ""},
                {"role": "assistant", "content": [{"type": "text", "text": "d  "}]},
            ]
        )
    )
    assert out["system"] == [{"type": "text", "text": "s1"}, {"type": "text", "text": "s2"}]
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        # final assistant prefill: trailing whitespace trimmed (Anthropic rejects it)
        {"role": "assistant", "content": [{"type": "text", "text": "c"}, {"type": "text", "text": "d"}]},
    ]


def test_chat_images():
    content = [
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://x.test/i.png"}},
    ]
    out = chat_request_to_messages(chat(messages=[{"role": "user", "content": content}]))
    assert out["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/"}},
        {"type": "image", "source": {"type": "url", "url": "https://x.test/i.png"}},
    ]
    with pytest.raises(InvalidRequest) as exc:
        chat_request_to_messages(
            chat(
                messages=[
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}]}
                ]
            )
        )
    assert exc.value.param == "messages[0].content[0].image_url.url"
    with pytest.raises(InvalidRequest):
        chat_request_to_messages(
            chat(
                messages=[
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:image/png,raw"}}],
                    }
                ]
            )
        )


def test_chat_tool_calls_and_results():
    messages = [
        {"role": "user", "content": "q"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
                {"id": "c2", "type": "function", "function": {"name": "g", "arguments": ""}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "r1"},
        {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "r2"}]},
        {"role": "user", "content": "more"},
    ]
    out = chat_request_to_messages(chat(messages=messages))
    assert out["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "q"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "c1", "name": "f", "input": {"x": 1}},
                {"type": "tool_use", "id": "c2", "name": "g", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "c1", "content": "r1"},
                {"type": "tool_result", "tool_use_id": "c2", "content": [{"type": "text", "text": "r2"}]},
                {"type": "text", "text": "more"},
            ],
        },
    ]


def test_chat_invalid_arguments():
    messages = [
        {"role": "user", "content": "q"},
        {
            "role": "assistant",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{bad"}}],
        },
    ]
    with pytest.raises(InvalidRequest) as exc:
        chat_request_to_messages(chat(messages=messages))
    assert exc.value.param == "messages[1].tool_calls[0].function.arguments"
    messages[1]["tool_calls"][0]["function"]["arguments"] = "[1]"
    with pytest.raises(InvalidRequest):
        chat_request_to_messages(chat(messages=messages))


def test_chat_tools_and_choice():
    tools = [
        {"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}
    ]
    out = chat_request_to_messages(chat(tools=tools, tool_choice="required", parallel_tool_calls=False))
    assert out["tools"] == [{"name": "f", "description": "d", "input_schema": {"type": "object"}}]
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert chat_request_to_messages(chat(tools=tools, parallel_tool_calls=False))["tool_choice"] == {
        "type": "auto",
        "disable_parallel_tool_use": True,
    }
    assert chat_request_to_messages(chat(tool_choice="auto"))["tool_choice"] == {"type": "auto"}
    assert chat_request_to_messages(chat(tool_choice="none", parallel_tool_calls=False))["tool_choice"] == {
        "type": "none"
    }
    named = chat_request_to_messages(chat(tool_choice={"type": "function", "function": {"name": "f"}}))
    assert named["tool_choice"] == {"type": "tool", "name": "f"}
    no_params = chat_request_to_messages(chat(tools=[{"type": "function", "function": {"name": "g"}}]))
    assert no_params["tools"] == [{"name": "g", "input_schema": {"type": "object", "properties": {}}}]


def test_chat_response_format():
    out = chat_request_to_messages(chat(response_format={"type": "json_object"}))
    assert "only a single valid JSON object" in out["system"]
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    out = chat_request_to_messages(
        chat(
            messages=[{"role": "system", "content": "sys"}, {"role": "user", "content": "x"}],
            response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema}},
        )
    )
    assert out["system"][0] == {"type": "text", "text": "sys"}
    assert orjson.dumps(schema).decode() in out["system"][1]["text"]
    assert "system" not in chat_request_to_messages(chat(response_format={"type": "text"}))


def test_chat_pdf_file():
    content = [
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBE", "filename": "a.pdf"}}
    ]
    out = chat_request_to_messages(chat(messages=[{"role": "user", "content": content}]))
    assert out["messages"][0]["content"] == [
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
            "title": "a.pdf",
        }
    ]


@pytest.mark.parametrize(
    ("patch", "param", "cls"),
    [
        ({"n": 2}, "n", UnsupportedParameter),
        ({"logprobs": True}, "logprobs", UnsupportedParameter),
        ({"top_logprobs": 3}, "top_logprobs", UnsupportedParameter),
        ({"functions": []}, "functions", UnsupportedParameter),
        ({"max_tokens": -1}, "max_tokens", InvalidRequest),
        ({"messages": {}}, "messages", InvalidRequest),
        ({"messages": [{"role": "system", "content": "only system"}]}, "messages", InvalidRequest),
        (
            {"messages": [{"role": "function", "content": "x", "name": "f"}]},
            "messages[0].role",
            UnsupportedParameter,
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "messages[0].content[0].type",
            UnsupportedParameter,
        ),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id", InvalidRequest),
        ({"tool_choice": "sometimes"}, "tool_choice", InvalidRequest),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools[0].type", UnsupportedParameter),
        ({"response_format": {"type": "yaml"}}, "response_format.type", InvalidRequest),
        ({"stop": 5}, "stop", InvalidRequest),
        ({"modalities": True}, "modalities", InvalidRequest),  # was a TypeError ('in' on a bool): a 500
    ],
)
def test_chat_validation(patch, param, cls):
    with pytest.raises(cls) as exc:
        chat_request_to_messages(chat(**patch))
    assert exc.value.param == param


def test_logprobs_message():
    with pytest.raises(UnsupportedParameter, match="logprobs is not available from Anthropic models"):
        chat_request_to_messages(chat(logprobs=True))


def test_sdk_param_shapes():
    """Both outputs are accepted by the SDKs' own request validation (TypedDicts via pydantic)."""
    from anthropic.types import MessageParam
    from openai.types.chat import ChatCompletionMessageParam
    from pydantic import TypeAdapter

    messages = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "get", "input": {"c": 1}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {"type": "text", "text": "ok"},
            ],
        },
    ]
    out = messages_request_to_chat(anth(messages=messages))
    chat_adapter = TypeAdapter(list[ChatCompletionMessageParam])
    chat_adapter.validate_python(out["messages"])
    back = chat_request_to_messages(out)
    TypeAdapter(list[MessageParam]).validate_python(back["messages"])


def test_huge_integer_tool_input():
    messages = [
        {"role": "user", "content": "go"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"n": 2**70}}],
        },
    ]
    out = messages_request_to_chat(anth(messages=messages))
    assert out["messages"][1]["tool_calls"][0]["function"]["arguments"] == '{"n":1180591620717411303424}'
