"""Tool-call policy: the calls a model makes are checked against the route's policy
(``bastion.config.guards.ToolGuardConfig``) and the tools the request declared, before the client (or an
agent loop behind it) executes them.

Decisions:

- Findings per call, in this order: ``not_allowed`` (``policy.allowed`` is set and lacks the tool),
  ``undeclared`` (the request did not declare it: the model invented a name, or an injected instruction
  named a tool from elsewhere), ``invalid_arguments``, ``irreversible``. A call can have several.
- Arguments must be a JSON object: OpenAI's string is parsed with orjson (an empty string is not JSON and
  is invalid), Anthropic's ``input`` dict is used as is. They are validated against ``policy.schemas[name]``
  when the policy has one, else against the schema the request declared, else only for being an object.
  Validators come from ``bastion.guards.structured``'s cache. A broken schema is reported as
  ``invalid_arguments`` (fail closed); check policy schemas at load time with ``schema_problem``.
- ``irreversible`` is only reported: whether the call is held for approval is the caller's decision, from
  ``conversation_risk`` and ``should_hold``.
- A call without a usable name gets the name ``""``: it is then never declared (and never allowed), so a
  malformed call is reported rather than skipped.
- Only function tools are read (OpenAI ``type: function`` and the legacy ``functions``; Anthropic client
  tools). Anthropic server tools (web search...) are declared without a schema; their ``server_tool_use``
  blocks are run by the provider and are not calls the client executes. OpenAI ``custom`` (free-text)
  tool calls are not read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from bastion.config.guards import ToolGuardConfig

from .protect import untrusted_label
from .structured import parse_json, validate_instance

__all__ = ["DIALECTS", "ToolCall", "ToolFinding", "calls_in_response", "check_calls", "conversation_risk",
           "declared_tools", "should_hold"]

DIALECTS = ("openai", "anthropic")

FindingKind = Literal["not_allowed", "undeclared", "invalid_arguments", "irreversible"]


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str | None
    name: str
    arguments: str | dict[str, Any]  # OpenAI: the JSON string; Anthropic: the ``input`` object
    choice: int = 0  # OpenAI choice index (Anthropic answers have one)


@dataclass(frozen=True, slots=True)
class ToolFinding:
    kind: FindingKind
    tool: str
    call_id: str | None
    message: str
    choice: int = 0
    path: str | None = None  # JSONPath in the arguments, for invalid_arguments that failed the schema

    def as_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "tool": self.tool, "call_id": self.call_id, "message": self.message,
                "choice": self.choice, "path": self.path}


def _check_dialect(dialect: str) -> None:
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r} (expected one of {', '.join(DIALECTS)})")


def _schema(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def declared_tools(body: dict[str, Any], dialect: str) -> dict[str, dict[str, Any] | None]:
    """Name -> argument schema (None when the tool declares none) of the tools a request declares.

    OpenAI: ``tools=[{"type": "function", "function": {"name", "parameters"}}]`` and the legacy
    ``functions=[{"name", "parameters"}]``. Anthropic: ``tools=[{"name", "input_schema"}]`` (server tools,
    which have a ``type`` and no ``input_schema``, map to None). Malformed entries are skipped; the first
    declaration of a name wins."""
    _check_dialect(dialect)
    out: dict[str, dict[str, Any] | None] = {}
    tools = body.get("tools") if isinstance(body, dict) else None
    if not isinstance(tools, list):
        tools = []
    if dialect == "openai":
        for t in tools:
            if not isinstance(t, dict) or t.get("type", "function") != "function":
                continue
            fn = t.get("function")
            if isinstance(fn, dict) and isinstance(fn.get("name"), str):
                out.setdefault(fn["name"], _schema(fn.get("parameters")))
        legacy = body.get("functions") if isinstance(body, dict) else None
        for fn in legacy if isinstance(legacy, list) else []:
            if isinstance(fn, dict) and isinstance(fn.get("name"), str):
                out.setdefault(fn["name"], _schema(fn.get("parameters")))
    else:
        for t in tools:
            if isinstance(t, dict) and isinstance(t.get("name"), str):
                out.setdefault(t["name"], _schema(t.get("input_schema")))
    return out


def _name(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _openai_args(value: Any) -> str | dict[str, Any]:
    if isinstance(value, str | dict):
        return value
    return ""  # missing or null: not JSON, reported as invalid_arguments


def calls_in_response(response: dict[str, Any], dialect: str) -> list[ToolCall]:
    """The tool calls in a non-streamed response: OpenAI ``choices[*].message.tool_calls`` (and the legacy
    ``function_call``) with their choice index; Anthropic ``content`` blocks of type ``tool_use``."""
    _check_dialect(dialect)
    out: list[ToolCall] = []
    if not isinstance(response, dict):
        return out
    if dialect == "openai":
        choices = response.get("choices")
        for pos, ch in enumerate(choices if isinstance(choices, list) else []):
            if not isinstance(ch, dict):
                continue
            idx = ch.get("index")
            idx = idx if isinstance(idx, int) and not isinstance(idx, bool) else pos
            msg = ch.get("message")
            if not isinstance(msg, dict):
                continue
            calls = msg.get("tool_calls")
            for tc in calls if isinstance(calls, list) else []:
                if not isinstance(tc, dict) or tc.get("type", "function") != "function":
                    continue
                fn = f if isinstance(f := tc.get("function"), dict) else {}
                cid = tc.get("id") if isinstance(tc.get("id"), str) else None
                out.append(ToolCall(cid, _name(fn.get("name")), _openai_args(fn.get("arguments")), idx))
            fc = msg.get("function_call")
            if isinstance(fc, dict):
                out.append(ToolCall(None, _name(fc.get("name")), _openai_args(fc.get("arguments")), idx))
    else:
        blocks = response.get("content")
        for b in blocks if isinstance(blocks, list) else []:
            if isinstance(b, dict) and b.get("type") == "tool_use":
                cid = b.get("id") if isinstance(b.get("id"), str) else None
                args = b.get("input")
                out.append(ToolCall(cid, _name(b.get("name")), args if isinstance(args, dict | str) else "", 0))
    return out


def _label(name: str) -> str:
    return repr(name) if name else "a tool call without a name"


def _argument_findings(call: ToolCall, schema: dict[str, Any] | None) -> list[ToolFinding]:
    def finding(message: str, path: str | None = None) -> ToolFinding:
        return ToolFinding("invalid_arguments", call.name, call.id, message,
                           call.choice, path)

    if isinstance(call.arguments, dict):
        args: Any = call.arguments
    else:
        args, err = parse_json(call.arguments)
        if err is not None:
            return [finding(f"arguments of {_label(call.name)} are {err}")]
    if not isinstance(args, dict):
        return [finding(f"arguments of {_label(call.name)} must be a JSON object", "$")]
    if schema is None:
        return []
    v = validate_instance(args, schema)
    if v.ok:
        return []
    return [finding(f"arguments of {_label(call.name)}: {v.error}", v.path)]


def check_calls(policy: ToolGuardConfig, declared: dict[str, dict[str, Any] | None],
                calls: list[ToolCall]) -> list[ToolFinding]:
    """Every finding for ``calls``, call by call (see the module docstring for the rules and order)."""
    out: list[ToolFinding] = []
    for c in calls:
        if policy.allowed is not None and c.name not in policy.allowed:
            out.append(ToolFinding("not_allowed", c.name, c.id,
                                   f"{_label(c.name)} is not an allowed tool on this route", c.choice))
        if c.name not in declared:
            out.append(ToolFinding("undeclared", c.name, c.id,
                                   f"{_label(c.name)} is not a tool the request declared", c.choice))
        schema = policy.schemas.get(c.name) if c.name in policy.schemas else declared.get(c.name)
        out.extend(_argument_findings(c, schema))
        if c.name in policy.irreversible:
            out.append(ToolFinding("irreversible", c.name, c.id,
                                   f"{_label(c.name)} is irreversible: it may need approval", c.choice))
    return out


def _marked(item: Any) -> bool:
    return isinstance(item, dict) and untrusted_label(item.get("untrusted")) is not None


def _content_risky(content: Any) -> bool:
    if not isinstance(content, list):
        return False
    for part in content:
        if not isinstance(part, dict):
            continue
        if _marked(part) or part.get("type") == "tool_result":
            return True
    return False


def conversation_risk(body: dict[str, Any], dialect: str, input_flagged: bool) -> tuple[bool, bool]:
    """(has_untrusted, flagged). has_untrusted: a message or content part carries an ``untrusted`` marker
    (``true`` or a source label: ``protect.untrusted_label``), or the conversation holds a tool result (OpenAI ``role: tool``
    or legacy ``role: function``; Anthropic ``tool_result`` blocks), or (Anthropic) a ``system`` block is
    marked. flagged: ``input_flagged``, the input guard's verdict, passed through."""
    _check_dialect(dialect)
    has_untrusted = False
    msgs = body.get("messages") if isinstance(body, dict) else None
    for m in msgs if isinstance(msgs, list) else []:
        if not isinstance(m, dict):
            continue
        if _marked(m) or _content_risky(m.get("content")):
            has_untrusted = True
            break
        if dialect == "openai" and m.get("role") in ("tool", "function"):
            has_untrusted = True
            break
    if not has_untrusted and dialect == "anthropic" and isinstance(body, dict):
        has_untrusted = _content_risky(body.get("system"))
    return has_untrusted, bool(input_flagged)


def should_hold(policy: ToolGuardConfig, has_untrusted: bool, flagged: bool) -> bool:
    """Whether a call to an irreversible tool is held for approval, per ``policy.hold_when``:
    ``untrusted`` holds on untrusted content or a flagged input, ``flagged`` on a flagged input only,
    ``always`` always. (Calls to other tools are never held: this answers for irreversible ones.)"""
    if policy.hold_when == "always":
        return True
    if policy.hold_when == "flagged":
        return flagged
    return has_untrusted or flagged
