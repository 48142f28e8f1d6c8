"""The output guards on a whole (non-streamed) answer, in the client's dialect: system-prompt leaks,
secrets / PII / exfiltration links / HTML, refusals, JSON validity and the tool-call policy.

``check_answer`` returns the answer to send (rewritten only when a guard redacted or held something), the
verdicts for the log, and what the gateway may still act on: a JSON error worth one repair retry, a
refusal worth a fallback. A block raises :class:`OutputBlocked`.
"""

from __future__ import annotations

import copy
import secrets
from dataclasses import dataclass, field
from typing import Any

import orjson

from bastion.config.guards import GuardsConfig

from .canary import check_leak
from .output import redact, scan_output
from .protect import Protection
from .refusal import detect_refusal
from .structured import JsonVerdict, expected_json, validate_json
from .tools import calls_in_response, check_calls, conversation_risk, declared_tools, should_hold
from .verdicts import OutputBlocked, blocked_message, enabled_kinds, output_verdict, redactable

LEAK_NOTICE = "[withheld by Bastion: the answer repeated confidential instructions]"


@dataclass(slots=True)
class Hold:
    """A tool call withheld until a person approves it."""

    approval_id: str
    tool: str
    call_id: str | None
    arguments: Any
    choice: int
    reason: str

    def notice(self) -> str:
        return (f"[Bastion held the call to the tool `{self.tool}` for human approval (approval id "
                f"{self.approval_id}): {self.reason}. It is returned by GET /v1/approvals/{self.approval_id} "
                "once approved.]")


@dataclass(slots=True)
class AnswerCheck:
    response: dict[str, Any]
    changed: bool = False
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    json_error: JsonVerdict | None = None
    refusal: bool = False
    holds: list[Hold] = field(default_factory=list)


def _slots(resp: dict[str, Any], dialect: str) -> list[tuple[str, dict[str, Any], str]]:
    """(where, container, key) of every text in the answer: ``container[key]`` is the text."""
    out: list[tuple[str, dict[str, Any], str]] = []
    if dialect == "openai":
        choices = resp.get("choices")
        for i, ch in enumerate(choices if isinstance(choices, list) else []):
            msg = ch.get("message") if isinstance(ch, dict) else None
            if isinstance(msg, dict) and isinstance(msg.get("content"), str):
                out.append((f"choices.{i}", msg, "content"))
    else:
        blocks = resp.get("content")
        for j, block in enumerate(blocks if isinstance(blocks, list) else []):
            if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
                out.append((f"content.{j}", block, "text"))
    return out


def leak_verdict(text: str, prot: Protection, policy: GuardsConfig, where: str) -> dict[str, Any] | None:
    lp = policy.leak
    if (lp.action == "off" and lp.fuzzy == "off") or not prot.system_prompt.strip():
        return None
    canary = prot.canary if lp.action != "off" else None
    v = check_leak(text, prot.system_prompt, canary, threshold=lp.threshold if lp.fuzzy != "off" else 2.0)
    if not v.leaked:
        return None
    action = lp.action if v.score == 1.0 and canary and "canary" in v.reason else lp.fuzzy
    return {"guard": "leak", "action": action, "where": where, "score": v.score, "reason": v.reason}


def leak_error(verdict: dict[str, Any]) -> OutputBlocked:
    return OutputBlocked(
        f"the answer was withheld: it leaks the system prompt ({verdict['reason']}). Change guards.leak for "
        "this model or tenant if the system prompt is not confidential", code="system_prompt_leak")


def check_answer(resp: dict[str, Any], dialect: str, body: dict[str, Any], prot: Protection,
                 policy: GuardsConfig, *, input_flagged: bool = False) -> AnswerCheck:
    """Run every output guard on ``resp`` (an answer in ``dialect`` to ``body``)."""
    out = AnswerCheck(resp)
    work = resp
    kinds = enabled_kinds(policy.output)
    for where, box, key in _slots(resp, dialect):
        text = box[key]
        leak = leak_verdict(text, prot, policy, where)
        new = text
        if leak is not None:
            out.verdicts.append(leak)
            if leak["action"] == "block":
                raise leak_error(leak)
            if leak["action"] == "redact":
                new = LEAK_NOTICE
        if kinds and new is text:
            findings = scan_output(text, allowed_hosts=policy.output.allowed_hosts, kinds=kinds,
                                   min_score=policy.output.threshold)
            v = output_verdict(policy.output, findings, where)
            if v is not None:
                out.verdicts.append(v)
                if v["action"] == "block":
                    raise OutputBlocked(blocked_message(v))
                fix = redactable(policy.output, findings)
                if fix:
                    new = redact(text, fix)  # html.* findings included: tags and scripts are removed too
        if policy.refusal.action != "off" and detect_refusal(new).score >= policy.refusal.threshold:
            out.refusal = True
        if new is not text:
            if work is resp:
                work = copy.deepcopy(resp)
                out.response = work
                out.changed = True
            _set(work, dialect, where, new)
    if out.refusal:
        out.verdicts.append({"guard": "refusal", "action": policy.refusal.action})
    if dialect == "openai" and policy.json_output.action != "off":
        want = expected_json(body)
        if want is not None:
            _, schema = want
            for where, box, key in _slots(out.response, dialect):
                jv = validate_json(box[key], schema)
                if not jv.ok:
                    out.json_error = jv
                    out.verdicts.append({"guard": "json", "action": policy.json_output.action, "where": where,
                                         "error": jv.error})
                    break
    _check_tools(out, dialect, body, prot, policy, input_flagged)
    return out


def _set(resp: dict[str, Any], dialect: str, where: str, text: str) -> None:
    part, idx = where.split(".")
    if dialect == "openai":
        resp["choices"][int(idx)]["message"]["content"] = text
    else:
        resp["content"][int(idx)]["text"] = text


def _check_tools(out: AnswerCheck, dialect: str, body: dict[str, Any], prot: Protection, policy: GuardsConfig,
                 input_flagged: bool) -> None:
    tp = policy.tools
    if tp.action == "off" and not tp.irreversible:
        return
    calls = calls_in_response(out.response, dialect)
    if not calls:
        return
    findings = check_calls(tp, declared_tools(body, dialect), calls)
    bad = [f for f in findings if f.kind != "irreversible"]
    if bad and tp.action != "off":
        v = {"guard": "tools", "action": tp.action,
             "findings": [{"kind": f.kind, "tool": f.tool, "message": f.message} for f in bad[:20]]}
        out.verdicts.append(v)
        if tp.action == "block":
            raise OutputBlocked(
                "the answer was withheld by the tool-call policy: " + "; ".join(f.message for f in bad[:3])
                + ". Change guards.tools for this model (allowed, schemas, action) if these calls are expected",
                code="tool_call_blocked")
    irreversible = [f for f in findings if f.kind == "irreversible"]
    if not irreversible:
        return
    has_untrusted, flagged = conversation_risk(body, dialect, input_flagged)
    has_untrusted = has_untrusted or prot.has_untrusted
    if not should_hold(tp, has_untrusted, flagged):
        return
    reason = ("the conversation contains untrusted content" if has_untrusted else
              "the input guard flagged the conversation") if tp.hold_when != "always" else \
        "calls to this tool always need approval"
    by_id = {(c.choice, c.id, c.name): c for c in calls}
    held: list[Hold] = []
    for f in irreversible:
        call = by_id.get((f.choice, f.call_id, f.tool))
        args = call.arguments if call is not None else None
        if isinstance(args, str):
            try:
                args = orjson.loads(args)
            except orjson.JSONDecodeError:
                pass  # kept as the model wrote it
        held.append(Hold("apr_" + secrets.token_hex(10), f.tool, f.call_id, args, f.choice, reason))
    if not out.changed:
        out.response = copy.deepcopy(out.response)
        out.changed = True
    _withhold(out.response, dialect, held)
    out.holds = held
    out.verdicts.append({"guard": "tools", "action": "hold",
                         "held": [{"tool": h.tool, "approval_id": h.approval_id, "reason": h.reason} for h in held]})


def _withhold(resp: dict[str, Any], dialect: str, held: list[Hold]) -> None:
    ids = {(h.choice, h.call_id, h.tool) for h in held}
    if dialect == "openai":
        for i, ch in enumerate(resp.get("choices") or []):
            msg = ch.get("message") or {}
            calls = msg.get("tool_calls") or []
            keep = [c for c in calls if (i, c.get("id"), (c.get("function") or {}).get("name")) not in ids]
            mine = [h for h in held if h.choice == i]
            if not mine:
                continue
            if keep:
                msg["tool_calls"] = keep
            else:
                msg.pop("tool_calls", None)
                ch["finish_reason"] = "stop"
            notice = "\n".join(h.notice() for h in mine)
            msg["content"] = ((msg.get("content") or "") + ("\n\n" if msg.get("content") else "") + notice)
    else:
        blocks = resp.get("content") or []
        keep = [b for b in blocks if not (isinstance(b, dict) and b.get("type") == "tool_use"
                                          and (0, b.get("id"), b.get("name")) in ids)]
        keep.append({"type": "text", "text": "\n".join(h.notice() for h in held)})
        resp["content"] = keep
        if not any(isinstance(b, dict) and b.get("type") == "tool_use" for b in keep):
            resp["stop_reason"] = "end_turn"
    resp["bastion"] = {**(resp.get("bastion") or {}), "held_tool_calls": [
        {"approval_id": h.approval_id, "tool": h.tool, "call_id": h.call_id, "reason": h.reason} for h in held]}
