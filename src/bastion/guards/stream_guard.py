"""The output guards on a streamed answer, as it flows, in the client's dialect.

Text deltas go through a :class:`StreamScanner` per choice (OpenAI) or content block (Anthropic): secrets,
PII and exfiltration links are redacted with a small hold-back, so a secret split across chunks is still
caught; plain prose flows a word at a time. The canary is looked for in what arrives, before the scanner
releases it, and the share of the system prompt's content-word pairs seen so far is tracked, so a leak is
stopped when it is recognised (a paraphrase may have partly reached the client by then: the stream is cut
with an error event). Tool calls are checked when their name arrives (allowed, declared) and when they
end (arguments against the schema). Refusal and JSON validity are judged at the end of each choice.

A block raises :class:`OutputBlocked`; the relay turns it into an error event in the client's dialect.
In a stream, ``redact`` of a leak withholds everything after the point of the leak and ends with a notice.
"""

from __future__ import annotations

from typing import Any

from bastion.config.guards import GuardsConfig

from .answer import LEAK_NOTICE, leak_error
from .canary import CANARY_PREFIX, LeakTracker
from .output import StreamScanner
from .protect import Protection
from .refusal import detect_refusal
from .structured import expected_json, validate_json
from .tools import ToolCall, check_calls, declared_tools
from .verdicts import OutputBlocked, action_of, blocked_message, enabled_kinds, output_verdict


def _index(v: Any) -> int:
    """A choice / block / tool-call index as sent, or 0 when it is not an integer (a malformed upstream)."""
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


class _Text:
    """One streamed text (an OpenAI choice's content, an Anthropic text block)."""

    def __init__(self, g: StreamGuard, where: str) -> None:
        self.g, self.where = g, where
        self.scanner = StreamScanner(g.policy.output.hold_back, allowed_hosts=g.policy.output.allowed_hosts,
                                     kinds=g.kinds, redact_kinds=g.redact_kinds,
                                     min_score=g.policy.output.threshold) if g.scan_text else None
        self.checked = 0  # scanner findings already checked for a block
        self.leak = LeakTracker(g.prot.system_prompt, g.prot.canary) if g.watch_leak else None
        self.squashed = ""  # whitespace-free lowercase tail, for the canary
        canary = g.prot.canary
        self.canary_hex = canary.lower().removeprefix(CANARY_PREFIX) if canary else ""
        self.keep = 2 * len(self.canary_hex) + 8
        self.pending = ""  # text not yet counted by the leak tracker
        self.parts: list[str] = []  # what the client got
        self.withheld = False
        self.leaked = False  # the fuzzy check fired (it stops looking then)
        self.canary_seen = False

    def _leak_found(self, reason: str, score: float, *, canary: bool) -> None:
        if canary:
            if self.canary_seen:
                return
            self.canary_seen = True
            action = self.g.policy.leak.action
        else:
            if self.leaked:
                return
            self.leaked = True
            action = self.g.policy.leak.fuzzy
        v = {"guard": "leak", "action": action, "where": self.where, "score": round(score, 3), "reason": reason}
        self.g.verdicts.append(v)
        if action == "block":
            raise leak_error(v)
        if action == "redact":
            self.withheld = True

    def feed(self, text: str) -> str:
        if self.withheld:
            return ""
        if self.canary_hex and not self.canary_seen:
            # the canary's random part is inside the whole token: looking for it alone is enough
            self.squashed = (self.squashed + "".join(text.lower().split()))[-self.keep:]
            if self.canary_hex in self.squashed:
                self._leak_found("the canary token appeared in the output", 1.0, canary=True)
        if self.leak is not None and not self.leaked:
            self.pending += text
            if len(self.pending) >= 64:  # word pairs are counted in batches, not per token
                share = self.leak.feed(self.pending)
                self.pending = ""
                if share >= self.g.policy.leak.threshold:
                    self._leak_found(f"{share:.0%} of the system prompt's content-word pairs appear", share,
                                     canary=False)
        if self.withheld:
            return LEAK_NOTICE
        scanner = self.scanner
        if scanner is None:
            out = text
        else:
            out = scanner.feed(text)
            if len(scanner.findings) != self.checked:
                self._check_block()
        if out:
            self.parts.append(out)
        return out

    def _check_block(self) -> None:
        """Raise before the text holding a finding whose action is block is released."""
        if self.scanner is None or len(self.scanner.findings) == self.checked or not self.g.block_kinds:
            return
        new = self.scanner.findings[self.checked:]
        self.checked = len(self.scanner.findings)
        if any(f.kind in self.g.block_kinds for f in new):
            v = output_verdict(self.g.policy.output, self.scanner.findings, self.where)
            assert v is not None
            self.g.verdicts.append(v)
            self.withheld = True
            raise OutputBlocked(blocked_message(v))

    def finish(self) -> str:
        out = ""
        if self.leak is not None and not self.leaked and not self.withheld:
            self.leak.feed(self.pending)
            self.pending = ""
            share = self.leak.finish()
            if share >= self.g.policy.leak.threshold:
                self._leak_found(f"{share:.0%} of the system prompt's content-word pairs appear", share,
                                 canary=False)
        if not self.withheld and self.scanner is not None:
            out = self.scanner.finish()
            self._check_block()
            if out:
                self.parts.append(out)
            v = output_verdict(self.g.policy.output, self.scanner.findings, self.where)
            if v is not None:
                self.g.verdicts.append(v)
        full = "".join(self.parts)
        p = self.g.policy
        if p.refusal.action != "off" and detect_refusal(full).score >= p.refusal.threshold:
            self.g.verdicts.append({"guard": "refusal", "action": "log" if p.refusal.action == "fallback"
                                    else p.refusal.action, "where": self.where})
        if self.g.json_schema is not None and not self.withheld:
            _, schema = self.g.json_schema
            jv = validate_json(full, schema)
            if not jv.ok:
                v = {"guard": "json", "action": p.json_output.action, "where": self.where, "error": jv.error}
                self.g.verdicts.append(v)
                if p.json_output.action == "block":
                    raise OutputBlocked(f"the streamed answer is not valid JSON for the requested format: "
                                        f"{jv.error}", code="output_invalid_json")
        return out


class StreamGuard:
    """Per-stream state of the output guards. ``active`` is False when nothing needs to look at the
    stream (the relay then passes the upstream's bytes through untouched)."""

    def __init__(self, policy: GuardsConfig, prot: Protection, body: dict[str, Any], dialect: str) -> None:
        self.policy, self.prot, self.dialect = policy, prot, dialect
        self.kinds = enabled_kinds(policy.output)
        self.redact_kinds = frozenset(k for k in self.kinds if action_of(policy.output, k) == "redact")
        self.block_kinds = frozenset(k for k in self.kinds if action_of(policy.output, k) == "block")
        self.watch_leak = policy.leak.fuzzy != "off" and bool(prot.system_prompt.strip())
        self.scan_text = bool(self.kinds) or self.watch_leak or bool(prot.canary)
        self.json_schema = expected_json(body) if dialect == "openai" and policy.json_output.action != "off" \
            else None
        tp = policy.tools
        self.tools_on = tp.action != "off"
        self.declared = declared_tools(body, dialect) if self.tools_on else {}
        self.active = self.scan_text or self.json_schema is not None or self.tools_on \
            or policy.refusal.action != "off"
        self.texts: dict[Any, _Text] = {}
        self.calls: dict[Any, dict[str, Any]] = {}
        self.verdicts: list[dict[str, Any]] = []

    def _text(self, key: Any, where: str) -> _Text:
        t = self.texts.get(key)
        if t is None:
            t = self.texts[key] = _Text(self, where)
        return t

    def _check_name(self, name: str | None) -> None:
        if not self.tools_on or not name:
            return
        self._tool_findings([ToolCall(None, name, "{}")], names_only=True)

    def _tool_findings(self, calls: list[ToolCall], *, names_only: bool = False) -> None:
        findings = [f for f in check_calls(self.policy.tools, self.declared, calls) if f.kind != "irreversible"
                    and (not names_only or f.kind != "invalid_arguments")]
        if not findings:
            return
        action = self.policy.tools.action
        self.verdicts.append({"guard": "tools", "action": action, "findings": [
            {"kind": f.kind, "tool": f.tool, "message": f.message} for f in findings[:20]]})
        if action == "block":
            raise OutputBlocked("the answer was stopped by the tool-call policy: "
                                + "; ".join(f.message for f in findings[:3]), code="tool_call_blocked")

    # ---- OpenAI chunks ----------------------------------------------------------------------------
    def openai_chunk(self, chunk: dict[str, Any]) -> dict[str, Any]:
        """The chunk to send (changed in place when text was held back or redacted)."""
        choices = chunk.get("choices")
        for ch in choices if type(choices) is list else ():
            if type(ch) is not dict:
                continue
            i = ch.get("index", 0)
            if type(i) is not int:
                i = _index(i)
            delta = ch.get("delta")
            if type(delta) is not dict:
                delta = ch["delta"] = {}
            content = delta.get("content")
            if content and type(content) is str:
                t = self.texts.get(i)
                delta["content"] = (t if t is not None else self._text(i, f"choices.{i}")).feed(content)
            calls = delta.get("tool_calls")
            for tc in calls if type(calls) is list else ():
                if not isinstance(tc, dict):
                    continue
                st = self.calls.setdefault((i, _index(tc.get("index", 0))), {"id": None, "name": None, "args": []})
                fn = f if isinstance(f := tc.get("function"), dict) else {}
                if isinstance(tc.get("id"), str):
                    st["id"] = tc["id"]
                if isinstance(fn.get("name"), str) and fn["name"]:
                    st["name"] = fn["name"]
                    self._check_name(st["name"])
                if isinstance(fn.get("arguments"), str):
                    st["args"].append(fn["arguments"])
            if ch.get("finish_reason") is not None:
                t = self.texts.get(i)
                if t is not None or self.json_schema is not None or self.policy.refusal.action != "off":
                    rest = self._text(i, f"choices.{i}").finish()
                    if rest:
                        delta["content"] = (delta.get("content") or "") + rest
                self._finish_calls(i)
        return chunk

    def _finish_calls(self, choice: int) -> None:
        if not self.tools_on:
            return
        mine = [(k, v) for k, v in self.calls.items() if k[0] == choice]
        calls = [ToolCall(v["id"], v["name"] or "", "".join(v["args"]) or "{}", choice) for _, v in mine if v["name"]]
        for k, _ in mine:
            del self.calls[k]
        if calls:
            self._tool_findings(calls)

    # ---- Anthropic events -------------------------------------------------------------------------
    def anthropic_event(self, event_type: str, data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """The events to send in place of this one."""
        idx = _index(data.get("index"))
        if event_type == "content_block_start":
            block = data.get("content_block")
            if isinstance(block, dict) and block.get("type") == "tool_use" and isinstance(block.get("name"), str):
                self.calls[idx] = {"id": block.get("id"), "name": block["name"], "args": []}
                self._check_name(block["name"])
            return [(event_type, data)]
        if event_type == "content_block_delta":
            delta = d if isinstance(d := data.get("delta"), dict) else {}
            if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str):
                passed = self._text(idx, f"content.{idx}").feed(delta["text"])
                if not passed:
                    return []
                return [(event_type, {**data, "delta": {**delta, "text": passed}})]
            if delta.get("type") == "input_json_delta" and idx in self.calls:
                part = delta.get("partial_json")
                self.calls[idx]["args"].append(part if isinstance(part, str) else "")
            return [(event_type, data)]
        if event_type == "content_block_stop":
            out: list[tuple[str, dict[str, Any]]] = []
            t = self.texts.get(idx)
            if t is not None:
                rest = t.finish()
                if rest:
                    out.append(("content_block_delta",
                                {"type": "content_block_delta", "index": idx,
                                 "delta": {"type": "text_delta", "text": rest}}))
            call = self.calls.pop(idx, None)
            if call is not None and self.tools_on and call["name"]:
                self._tool_findings([ToolCall(call["id"], call["name"], "".join(call["args"]) or "{}")])
            out.append((event_type, data))
            return out
        return [(event_type, data)]
