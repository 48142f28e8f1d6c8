"""Tool-call guard: declared tools and calls in both dialects, the policy checks, conversation risk and the
hold rules."""

from __future__ import annotations

import pytest

from bastion.config.guards import ToolGuardConfig
from bastion.guards import structured
from bastion.guards.tools import (
    ToolCall,
    ToolFinding,
    calls_in_response,
    check_calls,
    conversation_risk,
    declared_tools,
    should_hold,
)

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
           "required": ["city"], "additionalProperties": False}
TRANSFER = {"type": "object", "properties": {"amount": {"type": "number", "maximum": 100}, "to": {"type": "string"}},
            "required": ["amount", "to"]}

OPENAI_BODY = {
    "model": "m",
    "messages": [{"role": "user", "content": "hi"}],
    "tools": [
        {"type": "function", "function": {"name": "get_weather", "description": "w", "parameters": WEATHER}},
        {"type": "function", "function": {"name": "send_money", "parameters": TRANSFER}},
        {"type": "function", "function": {"name": "ping"}},
    ],
}
ANTHROPIC_BODY = {
    "model": "m",
    "max_tokens": 10,
    "messages": [{"role": "user", "content": "hi"}],
    "tools": [
        {"name": "get_weather", "description": "w", "input_schema": WEATHER},
        {"name": "send_money", "input_schema": TRANSFER},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
    ],
}


def kinds(findings: list[ToolFinding]) -> list[str]:
    return [f.kind for f in findings]


# --- declared_tools ----------------------------------------------------------------------------------------

def test_declared_tools_openai() -> None:
    assert declared_tools(OPENAI_BODY, "openai") == {"get_weather": WEATHER, "send_money": TRANSFER, "ping": None}


def test_declared_tools_anthropic() -> None:
    assert declared_tools(ANTHROPIC_BODY, "anthropic") == {"get_weather": WEATHER, "send_money": TRANSFER,
                                                            "web_search": None}


def test_declared_tools_openai_legacy_functions() -> None:
    body = {"functions": [{"name": "old", "parameters": WEATHER}, {"parameters": {}}]}
    assert declared_tools(body, "openai") == {"old": WEATHER}


def test_declared_tools_none() -> None:
    assert declared_tools({"messages": []}, "openai") == {}
    assert declared_tools({"tools": None}, "anthropic") == {}
    assert declared_tools({"tools": "nope"}, "openai") == {}


def test_declared_tools_skips_malformed_entries() -> None:
    body = {"tools": [
        "nope", None, {"type": "function"}, {"type": "function", "function": {"name": 3}},
        {"type": "function", "function": "x"}, {"type": "custom", "custom": {"name": "free"}},
        {"type": "function", "function": {"name": "ok", "parameters": "not a schema"}},
    ]}
    assert declared_tools(body, "openai") == {"ok": None}
    assert declared_tools({"tools": [{"input_schema": WEATHER}, {"name": "x", "input_schema": []}, 7]},
                          "anthropic") == {"x": None}


def test_declared_tools_first_declaration_wins() -> None:
    body = {"tools": [{"name": "t", "input_schema": WEATHER}, {"name": "t", "input_schema": TRANSFER}]}
    assert declared_tools(body, "anthropic") == {"t": WEATHER}


def test_declared_tools_dialects_do_not_mix() -> None:
    assert declared_tools(ANTHROPIC_BODY, "openai") == {}
    assert declared_tools(OPENAI_BODY, "anthropic") == {}


def test_unknown_dialect() -> None:
    with pytest.raises(ValueError):
        declared_tools(OPENAI_BODY, "gemini")
    with pytest.raises(ValueError):
        calls_in_response({}, "gemini")
    with pytest.raises(ValueError):
        conversation_risk({}, "gemini", False)


# --- calls_in_response -------------------------------------------------------------------------------------

def _oa_call(cid: str, name: str, args: object) -> dict:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}


def test_calls_in_openai_response() -> None:
    resp = {"choices": [
        {"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [
            _oa_call("call_1", "get_weather", '{"city": "Paris"}'),
            _oa_call("call_2", "send_money", '{"amount": 5, "to": "bob"}'),
        ]}, "finish_reason": "tool_calls"},
        {"index": 1, "message": {"role": "assistant", "content": "no tools here"}},
        {"index": 2, "message": {"role": "assistant", "tool_calls": [_oa_call("call_3", "ping", "{}")]}},
    ]}
    assert calls_in_response(resp, "openai") == [
        ToolCall("call_1", "get_weather", '{"city": "Paris"}', 0),
        ToolCall("call_2", "send_money", '{"amount": 5, "to": "bob"}', 0),
        ToolCall("call_3", "ping", "{}", 2),
    ]


def test_calls_in_openai_response_without_index_use_position() -> None:
    resp = {"choices": [{"message": {}}, {"message": {"tool_calls": [_oa_call("c", "ping", "{}")]}}]}
    assert calls_in_response(resp, "openai")[0].choice == 1


def test_calls_in_openai_legacy_function_call() -> None:
    resp = {"choices": [{"index": 0, "message": {"function_call": {"name": "old", "arguments": "{}"}}}]}
    assert calls_in_response(resp, "openai") == [ToolCall(None, "old", "{}", 0)]


def test_calls_in_openai_response_malformed() -> None:
    resp = {"choices": [
        "nope", {"index": 0, "message": "x"},
        {"index": 1, "message": {"tool_calls": [None, {"type": "custom", "custom": {"name": "free"}},
                                                {"id": 5, "type": "function", "function": {"arguments": None}}]}},
    ]}
    assert calls_in_response(resp, "openai") == [ToolCall(None, "", "", 1)]
    assert calls_in_response({}, "openai") == []
    assert calls_in_response({"choices": None}, "openai") == []
    assert calls_in_response("x", "openai") == []  # type: ignore[arg-type]


def test_calls_in_anthropic_response() -> None:
    resp = {"content": [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "x"}},
        {"type": "tool_use", "id": "toolu_2", "name": "send_money", "input": {"amount": 5, "to": "bob"}},
    ], "stop_reason": "tool_use"}
    assert calls_in_response(resp, "anthropic") == [
        ToolCall("toolu_1", "get_weather", {"city": "Paris"}, 0),
        ToolCall("toolu_2", "send_money", {"amount": 5, "to": "bob"}, 0),
    ]


def test_calls_in_anthropic_response_malformed() -> None:
    resp = {"content": [{"type": "tool_use"}, "x", {"type": "tool_use", "name": "t", "input": [1]}]}
    assert calls_in_response(resp, "anthropic") == [ToolCall(None, "", "", 0), ToolCall(None, "t", "", 0)]
    assert calls_in_response({"content": "text"}, "anthropic") == []


# --- check_calls -------------------------------------------------------------------------------------------

POLICY = ToolGuardConfig()
OA = declared_tools(OPENAI_BODY, "openai")
AN = declared_tools(ANTHROPIC_BODY, "anthropic")


def test_clean_calls_have_no_findings() -> None:
    calls = [ToolCall("c1", "get_weather", '{"city": "Paris", "days": 3}'), ToolCall("c2", "ping", "{}")]
    assert check_calls(POLICY, OA, calls) == []


def test_no_calls() -> None:
    assert check_calls(POLICY, OA, []) == []


def test_undeclared_tool() -> None:
    f = check_calls(POLICY, OA, [ToolCall("c1", "delete_repo", '{"name": "x"}', 2)])
    assert f == [ToolFinding("undeclared", "delete_repo", "c1", "'delete_repo' is not a tool the request declared",
                             2)]


def test_allowed_list() -> None:
    policy = ToolGuardConfig(allowed=("get_weather",))
    f = check_calls(policy, OA, [ToolCall("c1", "get_weather", '{"city": "x"}'),
                                 ToolCall("c2", "send_money", '{"amount": 1, "to": "x"}')])
    assert kinds(f) == ["not_allowed"]
    assert f[0].tool == "send_money" and f[0].call_id == "c2"
    assert "not an allowed tool" in f[0].message


def test_allowed_none_means_any_declared_tool() -> None:
    assert check_calls(ToolGuardConfig(allowed=None), OA, [ToolCall("c", "send_money", '{"amount": 1, "to": "x"}')]) \
        == []


def test_empty_allowed_list_allows_nothing() -> None:
    f = check_calls(ToolGuardConfig(allowed=()), OA, [ToolCall("c", "ping", "{}")])
    assert kinds(f) == ["not_allowed"]


def test_not_allowed_and_undeclared_together() -> None:
    f = check_calls(ToolGuardConfig(allowed=("ping",)), OA, [ToolCall("c", "rm_rf", "{}")])
    assert kinds(f) == ["not_allowed", "undeclared"]


def test_arguments_not_json() -> None:
    f = check_calls(POLICY, OA, [ToolCall("c", "get_weather", '{"city": "Paris"')])
    assert kinds(f) == ["invalid_arguments"]
    assert "not valid JSON" in f[0].message and "get_weather" in f[0].message
    assert f[0].path is None


@pytest.mark.parametrize("args", ["", "   ", "null", "[1]", '"Paris"', "3"])
def test_arguments_must_be_a_json_object(args: str) -> None:
    f = check_calls(POLICY, OA, [ToolCall("c", "ping", args)])
    assert kinds(f) == ["invalid_arguments"]


def test_fenced_arguments_are_tolerated_like_answers() -> None:
    assert check_calls(POLICY, OA, [ToolCall("c", "get_weather", '```json\n{"city": "x"}\n```')]) == []


def test_arguments_against_the_declared_schema() -> None:
    f = check_calls(POLICY, OA, [ToolCall("c", "get_weather", '{"city": "Paris", "days": "three"}', 1)])
    assert kinds(f) == ["invalid_arguments"]
    assert f[0].path == "$.days"
    assert f[0].choice == 1
    assert "$.days: 'three' is not of type 'integer'" in f[0].message


def test_additional_properties_violation() -> None:
    f = check_calls(POLICY, OA, [ToolCall("c", "get_weather", '{"city": "x", "exfil": "secret"}')])
    assert kinds(f) == ["invalid_arguments"] and f[0].path == "$"


def test_tool_without_schema_needs_only_an_object() -> None:
    assert check_calls(POLICY, OA, [ToolCall("c", "ping", '{"anything": [1, 2]}')]) == []


def test_policy_schema_overrides_the_declared_one() -> None:
    strict = {"type": "object", "properties": {"city": {"enum": ["Paris", "Oslo"]}}, "required": ["city"]}
    policy = ToolGuardConfig(schemas={"get_weather": strict})
    assert check_calls(POLICY, OA, [ToolCall("c", "get_weather", '{"city": "Rome"}')]) == []
    f = check_calls(policy, OA, [ToolCall("c", "get_weather", '{"city": "Rome"}')])
    assert kinds(f) == ["invalid_arguments"] and f[0].path == "$.city"
    # the override is also looser when it says so: the declared schema is not consulted
    loose = ToolGuardConfig(schemas={"get_weather": {"type": "object"}})
    assert check_calls(loose, OA, [ToolCall("c", "get_weather", '{"days": "x"}')]) == []


def test_policy_schema_applies_to_undeclared_tools_too() -> None:
    policy = ToolGuardConfig(schemas={"rm": {"type": "object", "required": ["path"]}})
    f = check_calls(policy, {}, [ToolCall("c", "rm", "{}")])
    assert kinds(f) == ["undeclared", "invalid_arguments"]


def test_anthropic_dict_arguments() -> None:
    assert check_calls(POLICY, AN, [ToolCall("toolu_1", "get_weather", {"city": "Paris"})]) == []
    f = check_calls(POLICY, AN, [ToolCall("toolu_2", "send_money", {"amount": 1000, "to": "eve"})])
    assert kinds(f) == ["invalid_arguments"]
    assert f[0].path == "$.amount" and f[0].call_id == "toolu_2"
    assert "maximum" in f[0].message


def test_anthropic_end_to_end() -> None:
    resp = {"content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}]}
    f = check_calls(POLICY, AN, calls_in_response(resp, "anthropic"))
    assert kinds(f) == ["invalid_arguments"]
    assert "'city' is a required property" in f[0].message


def test_openai_end_to_end() -> None:
    resp = {"choices": [{"index": 0, "message": {"tool_calls": [
        _oa_call("a", "get_weather", '{"city": "x"}'), _oa_call("b", "shell", '{"cmd": "rm -rf /"}')]}}]}
    policy = ToolGuardConfig(allowed=("get_weather", "ping"))
    f = check_calls(policy, OA, calls_in_response(resp, "openai"))
    assert [(x.kind, x.call_id) for x in f] == [("not_allowed", "b"), ("undeclared", "b")]


def test_broken_schema_fails_closed() -> None:
    declared = {"t": {"type": "nope"}}
    f = check_calls(POLICY, declared, [ToolCall("c", "t", "{}")])
    assert kinds(f) == ["invalid_arguments"]
    assert "schema is invalid" in f[0].message


def test_irreversible_is_reported() -> None:
    policy = ToolGuardConfig(irreversible=("send_money",))
    f = check_calls(policy, OA, [ToolCall("c", "send_money", '{"amount": 5, "to": "bob"}'),
                                 ToolCall("d", "get_weather", '{"city": "x"}')])
    assert f == [ToolFinding("irreversible", "send_money", "c", "'send_money' is irreversible: it may need approval",
                             0)]


def test_irreversible_comes_after_other_findings() -> None:
    policy = ToolGuardConfig(allowed=("get_weather",), irreversible=("send_money",))
    f = check_calls(policy, OA, [ToolCall("c", "send_money", '{"amount": "lots"}')])
    assert kinds(f) == ["not_allowed", "invalid_arguments", "irreversible"]


def test_call_without_a_name_is_reported() -> None:
    f = check_calls(POLICY, OA, [ToolCall(None, "", "{}")])
    assert kinds(f) == ["undeclared"]
    assert "without a name" in f[0].message


def test_finding_as_dict() -> None:
    f = check_calls(POLICY, OA, [ToolCall("c", "get_weather", '{"days": 1}')])[0]
    assert f.as_dict() == {"kind": "invalid_arguments", "tool": "get_weather", "call_id": "c",
                           "message": f.message, "choice": 0, "path": "$"}


def test_tools_share_the_structured_validator_cache() -> None:
    structured._compiled.cache_clear()
    for _ in range(3):
        check_calls(POLICY, OA, [ToolCall("c", "get_weather", '{"city": "x"}')])
    structured.validate_json('{"city": "x"}', WEATHER)
    info = structured._compiled.cache_info()
    assert info.misses == 1 and info.hits == 3


# --- conversation risk and holds ---------------------------------------------------------------------------

def test_plain_conversation_is_not_risky() -> None:
    body = {"messages": [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"},
                         {"role": "assistant", "content": "hello"}]}
    assert conversation_risk(body, "openai", False) == (False, False)
    assert conversation_risk(body, "openai", True) == (False, True)


def test_untrusted_message() -> None:
    body = {"messages": [{"role": "user", "content": "doc", "untrusted": True}]}
    assert conversation_risk(body, "openai", False) == (True, False)
    assert conversation_risk(body, "anthropic", False) == (True, False)


def test_untrusted_content_part() -> None:
    body = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "summarise"}, {"type": "text", "text": "<web page>", "untrusted": True}]}]}
    assert conversation_risk(body, "openai", False) == (True, False)
    assert conversation_risk(body, "anthropic", False) == (True, False)


@pytest.mark.parametrize("mark", [False, None, "", "  ", 1])
def test_only_true_or_a_label_marks_untrusted(mark: object) -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "x", "untrusted": mark}],
                          "untrusted": mark}]}
    assert conversation_risk(body, "openai", False) == (False, False)


@pytest.mark.parametrize("where", ["message", "part"])
def test_a_source_label_marks_untrusted_as_true_does(where: str) -> None:
    """The same rule as untrusted marking (protect.untrusted_label): a label such as "email" is a mark."""
    part = {"type": "text", "text": "x", **({"untrusted": "email"} if where == "part" else {})}
    body = {"messages": [{"role": "user", "content": [part], **({"untrusted": "email"} if where == "message" else {})}]}
    assert conversation_risk(body, "openai", False) == (True, False)


def test_openai_tool_results_are_untrusted() -> None:
    body = {"messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "tool_calls": [_oa_call("c", "get_weather", '{"city": "x"}')]},
        {"role": "tool", "tool_call_id": "c", "content": "sunny"},
    ]}
    assert conversation_risk(body, "openai", False) == (True, False)
    legacy = {"messages": [{"role": "function", "name": "f", "content": "x"}]}
    assert conversation_risk(legacy, "openai", False) == (True, False)


def test_anthropic_tool_results_are_untrusted() -> None:
    body = {"messages": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "w", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "sunny"}]},
    ]}
    assert conversation_risk(body, "anthropic", False) == (True, False)


def test_anthropic_marked_system_block() -> None:
    body = {"system": [{"type": "text", "text": "retrieved", "untrusted": True}],
            "messages": [{"role": "user", "content": "hi"}]}
    assert conversation_risk(body, "anthropic", False) == (True, False)


def test_conversation_risk_tolerates_malformed_bodies() -> None:
    assert conversation_risk({"messages": "x"}, "openai", False) == (False, False)
    assert conversation_risk({"messages": [None, 3, {"content": 5}]}, "anthropic", True) == (False, True)
    assert conversation_risk({}, "anthropic", False) == (False, False)


@pytest.mark.parametrize(("hold_when", "untrusted", "flagged", "held"), [
    ("untrusted", False, False, False),
    ("untrusted", True, False, True),
    ("untrusted", False, True, True),
    ("untrusted", True, True, True),
    ("flagged", False, False, False),
    ("flagged", True, False, False),
    ("flagged", False, True, True),
    ("flagged", True, True, True),
    ("always", False, False, True),
    ("always", True, False, True),
    ("always", False, True, True),
    ("always", True, True, True),
])
def test_should_hold(hold_when: str, untrusted: bool, flagged: bool, held: bool) -> None:
    policy = ToolGuardConfig(irreversible=("send_money",), hold_when=hold_when)  # type: ignore[arg-type]
    assert should_hold(policy, untrusted, flagged) is held


def test_default_policy_holds_on_untrusted() -> None:
    assert ToolGuardConfig().hold_when == "untrusted"
    assert should_hold(ToolGuardConfig(), True, False)
    assert not should_hold(ToolGuardConfig(), False, False)
