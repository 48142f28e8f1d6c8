"""llm-judge: a rubric graded by a judge model through the gateway. A judge answer that cannot be parsed
is an ERROR, never a pass."""

from __future__ import annotations

import json
import re
from typing import Any

from ..model import Answer, Case, Check
from .base import Assertion, CheckContext, register
from .structured import parse_json

JUDGE_SYSTEM = """You are a strict evaluator. Grade the OUTPUT against the RUBRIC.
Answer with one JSON object and nothing else: {"pass": true or false, "score": a number from 0 to 1, "reason": "one sentence"}."""

_SIMPLE = re.compile(r"^\s*(PASS|FAIL)\b\s*[:\-–—]?\s*(.*)$", re.I | re.S)


def parse_verdict(text: str) -> tuple[bool, float | None, str]:
    """Parse a judge's answer. Accepted: the JSON object ``{"pass": bool, "score": 0..1, "reason": str}``
    (optionally in a ```json fence), or the simple format ``PASS: reason`` / ``FAIL: reason`` on the first
    line. Raises ValueError for anything else."""
    value, why = parse_json(text.strip(), allow_fence=True)
    if why is None:
        if not isinstance(value, dict):
            raise ValueError(f"judge answered JSON {type(value).__name__}, not an object")
        verdict = value.get("pass")
        if not isinstance(verdict, bool):
            raise ValueError(f"judge JSON has no boolean 'pass' (got {verdict!r})")
        score = value.get("score")
        if score is not None and (isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1):
            raise ValueError(f"judge 'score' must be a number from 0 to 1, not {score!r}")
        reason = value.get("reason", "")
        return verdict, (float(score) if score is not None else None), str(reason)
    m = _SIMPLE.match(text)
    if m:
        return m.group(1).upper() == "PASS", None, m.group(2).strip().splitlines()[0] if m.group(2).strip() else ""
    raise ValueError(f"judge answer is neither the JSON verdict nor 'PASS: …'/'FAIL: …': {text[:120]!r}")


def judge_prompt(rubric: str, answer: Answer, case: Case) -> str:
    parts = [f"RUBRIC:\n{rubric}"]
    if case.messages:
        convo = "\n".join(f"{m.get('role')}: {m.get('content') if isinstance(m.get('content'), str) else json.dumps(m.get('content'))}"
                          for m in case.messages)
        parts.append(f"CONVERSATION:\n{convo}")
    if case.vars:
        parts.append(f"INPUT VARIABLES:\n{json.dumps(case.vars, ensure_ascii=False, indent=2)}")
    if case.context:
        parts.append(f"CONTEXT:\n{case.context}")
    if case.reference:
        parts.append(f"REFERENCE ANSWER:\n{case.reference}")
    parts.append(f"OUTPUT:\n{answer.text}")
    return "\n\n".join(parts)


@register
class LlmJudge(Assertion):
    """``rubric`` graded by ``model`` (default: the suite's ``judge_model``). Passes when the judge says
    pass and, with ``threshold``, its score is at least that."""

    type = "llm-judge"
    options = {"rubric": {"type": "string", "minLength": 1}, "model": {"type": "string"},
               "threshold": {"type": "number", "minimum": 0, "maximum": 1}, "json_mode": {"type": "boolean"},
               "params": {"type": "object"}}
    required = ("rubric",)

    def check(self, answer: Answer, case: Case) -> Check:
        return self.error("llm-judge needs a gateway to ask the judge")

    def request(self, answer: Answer, case: Case, model: str) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "temperature": 0, "messages": [
            {"role": "system", "content": JUDGE_SYSTEM},
            {"role": "user", "content": judge_prompt(self.spec["rubric"], answer, case)}]}
        if self.spec.get("json_mode", True):
            body["response_format"] = {"type": "json_object"}
        body.update(self.spec.get("params", {}))
        return body

    async def acheck(self, answer: Answer, case: Case, ctx: CheckContext) -> Check:
        model = self.spec.get("model") or ctx.judge_model
        if not model:
            return self.error("llm-judge needs a model: set `model` on the assertion or `judge_model` in the suite")
        if ctx.ask is None:
            return self.check(answer, case)
        reply = await ctx.ask(self.request(answer, case, model))
        if reply.error:
            return self.error(f"judge request failed: {reply.error}")
        try:
            verdict, score, reason = parse_verdict(reply.text)
        except ValueError as e:
            return self.error(str(e))
        threshold = self.spec.get("threshold")
        if threshold is not None:
            if score is None:
                return self.error(f"a threshold ({threshold}) is set but the judge gave no score")
            verdict = verdict and score >= threshold
        return self.ok(reason, score) if verdict else self.fail(reason or "the judge said fail", score)
