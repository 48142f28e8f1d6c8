"""Every assertion type: pass, fail and error paths."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bastion.evals import semantic
from bastion.evals.assertions import REGISTRY, CheckContext
from bastion.evals.assertions.judge import parse_verdict
from bastion.evals.model import Answer, Case, Outcome
from bastion.evals.suite import build_assertion

CASE = Case(id="c1", vars={"name": "Ann"}, reference="The refund was approved.", context="Refunds take 5 days.")


def run(spec: dict[str, Any], text: str = "", case: Case = CASE, base: Path = Path("."), **answer: Any) -> Any:
    a = build_assertion(spec, base)
    return a.check(Answer(text=text, **answer), case)


def outcome(spec: dict[str, Any], text: str = "", **kw: Any) -> Outcome:
    return run(spec, text, **kw).outcome


P, F, E = Outcome.PASS, Outcome.FAIL, Outcome.ERROR


def test_registry_has_every_documented_type() -> None:
    assert set(REGISTRY) == {"contains", "not-contains", "regex", "is-json", "json-schema", "equals", "similar",
                             "refusal", "not-refusal", "length", "latency", "cost", "python", "llm-judge"}


def test_contains_and_not_contains() -> None:
    assert outcome({"type": "contains", "value": "refund"}, "Your refund is on its way") is P
    assert outcome({"type": "contains", "value": "Refund"}, "your refund") is F
    assert outcome({"type": "contains", "value": "Refund", "case_insensitive": True}, "your REFUND") is P
    assert outcome({"type": "contains", "values": ["a", "zz"]}, "abc") is F
    assert "zz" in run({"type": "contains", "values": ["a", "zz"]}, "abc").message
    assert outcome({"type": "not-contains", "value": "sorry"}, "Here you go") is P
    assert outcome({"type": "not-contains", "values": ["SORRY"], "case_insensitive": True}, "sorry!") is F
    with pytest.raises(ValueError, match="exactly one of value"):
        build_assertion({"type": "contains"}, Path("."))


def test_regex() -> None:
    assert outcome({"type": "regex", "pattern": r"\d{4}"}, "order 1182") is P
    assert outcome({"type": "regex", "pattern": r"\d{4}", "full": True}, "order 1182") is F
    assert outcome({"type": "regex", "pattern": "^HELLO", "flags": "i"}, "hello") is P
    with pytest.raises(ValueError, match="invalid regular expression"):
        build_assertion({"type": "regex", "pattern": "("}, Path("."))


def test_is_json() -> None:
    assert outcome({"type": "is-json"}, '{"a": 1}') is P
    assert outcome({"type": "is-json"}, "[1, 2]") is P
    assert outcome({"type": "is-json", "object": True}, "[1, 2]") is F
    r = run({"type": "is-json"}, "Sure! {\"a\": 1}")
    assert r.outcome is F and "not JSON" in r.message
    fenced = '```json\n{"a": 1}\n```'
    assert outcome({"type": "is-json"}, fenced) is F
    assert outcome({"type": "is-json", "allow_fence": True}, fenced) is P


def test_json_schema() -> None:
    spec = {"type": "json-schema", "schema": {"type": "object", "required": ["answer"],
                                              "properties": {"answer": {"type": "string"},
                                                             "score": {"type": "number", "maximum": 1}}}}
    assert outcome(spec, '{"answer": "x", "score": 0.5}') is P
    r = run(spec, '{"answer": "x", "score": 3}')
    assert r.outcome is F and r.message.startswith("score:")
    assert outcome(spec, '{"score": 0.5}') is F
    assert outcome(spec, "not json") is F
    with pytest.raises(ValueError, match="invalid JSON schema"):
        build_assertion({"type": "json-schema", "schema": {"type": "nope"}}, Path("."))


def test_equals_normalises() -> None:
    assert outcome({"type": "equals"}, "the refund  WAS approved") is P  # vs the reference
    assert outcome({"type": "equals", "value": "Ｃａｆé, s'il vous plaît!"}, "café sil vous plaît") is P  # NFKC
    assert outcome({"type": "equals", "value": "yes"}, "no") is F
    assert outcome({"type": "equals"}, "x", case=Case(id="c")) is E


def test_length_units() -> None:
    assert outcome({"type": "length", "max": 5}, "hello") is P
    assert outcome({"type": "length", "max": 4}, "hello") is F
    assert outcome({"type": "length", "min": 3, "unit": "words"}, "one two") is F
    assert outcome({"type": "length", "min": 2, "max": 2, "unit": "words"}, "one two") is P
    assert outcome({"type": "length", "max": 3, "unit": "tokens"}, "Hello world") is P  # 2 o200k tokens
    assert outcome({"type": "length", "max": 1, "unit": "tokens"}, "Hello world") is F
    with pytest.raises(ValueError, match="min and/or max"):
        build_assertion({"type": "length"}, Path("."))
    with pytest.raises(ValueError, match="min is greater"):
        build_assertion({"type": "length", "min": 5, "max": 1}, Path("."))
    with pytest.raises(ValueError, match="unit"):
        build_assertion({"type": "length", "max": 1, "unit": "pages"}, Path("."))


def test_latency_and_cost() -> None:
    assert outcome({"type": "latency", "max_ms": 100}, latency_ms=50.0) is P
    assert outcome({"type": "latency", "max_ms": 100}, latency_ms=150.0) is F
    assert outcome({"type": "latency", "max_ms": 100}) is E
    assert outcome({"type": "cost", "max_usd": 0.001}, cost_usd=0.0005) is P
    assert outcome({"type": "cost", "max_usd": 0.001}, cost_usd=0.002) is F
    r = run({"type": "cost", "max_usd": 0.001})
    assert r.outcome is E and "x-bastion-cost" in r.message


def test_python_file_and_module(tmp_path: Path) -> None:
    (tmp_path / "checks.py").write_text(
        "def has_name(output, case):\n    return case['vars']['name'] in output\n"
        "def score(output, case):\n    return len(output) / 10\n"
        "def tup(output, case):\n    return (output.startswith('Hi'), 'greeting check')\n"
        "def boom(output, case):\n    raise RuntimeError('nope')\n"
        "def weird(output, case):\n    return 'yes'\n")
    assert outcome({"type": "python", "function": "checks.py:has_name"}, "Hi Ann", base=tmp_path) is P
    assert outcome({"type": "python", "function": "checks.py:has_name"}, "Hi Bob", base=tmp_path) is F
    assert outcome({"type": "python", "function": "checks.py:score"}, "123456", base=tmp_path) is P  # 0.6
    assert outcome({"type": "python", "function": "checks.py:score", "threshold": 0.9}, "123456", base=tmp_path) is F
    r = run({"type": "python", "function": "checks.py:tup"}, "Hello", base=tmp_path)
    assert r.outcome is F and r.message == "greeting check"
    r = run({"type": "python", "function": "checks.py:boom"}, "x", base=tmp_path)
    assert r.outcome is E and "RuntimeError" in r.message
    assert outcome({"type": "python", "function": "checks.py:weird"}, "x", base=tmp_path) is E
    assert outcome({"type": "python", "function": "operator:is_not"}, "x") is P  # module:func
    with pytest.raises(ValueError, match="not found"):
        build_assertion({"type": "python", "function": "missing.py:f"}, tmp_path)
    with pytest.raises(ValueError, match="no function"):
        build_assertion({"type": "python", "function": "checks.py:nothing"}, tmp_path)
    with pytest.raises(ValueError, match="path/to/file.py:func"):
        build_assertion({"type": "python", "function": "checks.py"}, tmp_path)


def test_refusal_and_not_refusal() -> None:
    refusal = "I'm sorry, but I can't help with that request."
    answer = "Your refund was approved and will arrive in 5 days."
    assert outcome({"type": "refusal"}, refusal) is P
    assert outcome({"type": "refusal"}, answer) is F
    assert outcome({"type": "not-refusal"}, answer) is P
    assert outcome({"type": "not-refusal"}, refusal) is F


def test_refusal_unavailable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(text: str) -> Any:
        raise semantic.Unavailable("refusal detection needs bastion.guards.refusal")

    monkeypatch.setattr("bastion.evals.assertions.semantic.refusal", missing)
    r = run({"type": "not-refusal"}, "hello")
    assert r.outcome is E and "bastion.guards.refusal" in r.message


def test_similar_unavailable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(a: str, b: str) -> float:
        raise semantic.Unavailable("embeddings need the semantic extra")

    monkeypatch.setattr("bastion.evals.assertions.semantic.similarity", missing)
    r = run({"type": "similar"}, "The refund is approved.")
    assert r.outcome is E and "semantic extra" in r.message


def test_similar_with_a_stub_similarity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bastion.evals.assertions.semantic.similarity", lambda a, b: 0.9 if "refund" in a else 0.1)
    assert outcome({"type": "similar"}, "refund ok") is P
    assert outcome({"type": "similar", "threshold": 0.95}, "refund ok") is F
    assert outcome({"type": "similar"}, "weather") is F
    assert outcome({"type": "similar"}, "x", case=Case(id="c")) is E


@pytest.mark.skipif(not semantic.embeddings_available(), reason="the semantic extra is not installed")
def test_similar_with_the_real_embedder() -> None:
    assert outcome({"type": "similar", "threshold": 0.7}, "Your refund has been approved.") is P
    assert outcome({"type": "similar", "threshold": 0.7}, "The weather in Oslo is cold today.") is F


# ---- llm-judge ------------------------------------------------------------------------------------

def judge(reply: str | None, spec: dict[str, Any] | None = None, error: str | None = None) -> tuple[Any, list]:
    sent: list[dict[str, Any]] = []

    async def ask(body: dict[str, Any]) -> Answer:
        sent.append(body)
        return Answer(text=reply or "", error=error, status=200 if error is None else 500)

    a = build_assertion({"type": "llm-judge", "rubric": "Is it polite?", **(spec or {})}, Path("."))
    ctx = CheckContext(ask=ask, judge_model="judge-model")
    return asyncio.run(a.acheck(Answer(text="Thanks for waiting!"), CASE, ctx)), sent


def test_llm_judge_json_verdicts() -> None:
    r, sent = judge('{"pass": true, "score": 0.9, "reason": "polite"}')
    assert r.outcome is P and r.score == 0.9 and r.message == "polite"
    body = sent[0]
    assert body["model"] == "judge-model" and body["response_format"] == {"type": "json_object"}
    assert "Is it polite?" in body["messages"][1]["content"] and "Thanks for waiting!" in body["messages"][1]["content"]
    assert "REFERENCE ANSWER" in body["messages"][1]["content"]
    r, _ = judge('{"pass": false, "score": 0.2, "reason": "rude"}')
    assert r.outcome is F and r.message == "rude"
    r, _ = judge('```json\n{"pass": true, "score": 0.4}\n```', {"threshold": 0.5})
    assert r.outcome is F  # passes only with score >= threshold
    r, sent = judge('{"pass": true}', {"model": "other", "json_mode": False})
    assert sent[0]["model"] == "other" and "response_format" not in sent[0]


def test_llm_judge_simple_format() -> None:
    assert judge("PASS: it thanks the user")[0].outcome is P
    r, _ = judge("fail - no greeting\nmore")
    assert r.outcome is F and r.message == "no greeting"


@pytest.mark.parametrize("bad", ["", "Looks good to me", '{"pass": "yes"}', '{"score": 1}', "[true]",
                                 '{"pass": true, "score": 7}', '{"pass": true, "score": true}'])
def test_llm_judge_unparseable_is_an_error_never_a_pass(bad: str) -> None:
    assert judge(bad)[0].outcome is E


def test_llm_judge_errors() -> None:
    r, _ = judge(None, error="HTTP 500: boom")
    assert r.outcome is E and "judge request failed" in r.message
    r, _ = judge('{"pass": true}', {"threshold": 0.5})
    assert r.outcome is E and "no score" in r.message
    a = build_assertion({"type": "llm-judge", "rubric": "x"}, Path("."))
    r = asyncio.run(a.acheck(Answer(text="y"), CASE, CheckContext(ask=None, judge_model=None)))
    assert r.outcome is E and "judge_model" in r.message


def test_parse_verdict_directly() -> None:
    assert parse_verdict('{"pass": false, "score": 0, "reason": "r"}') == (False, 0.0, "r")
    assert parse_verdict("PASS") == (True, None, "")
    with pytest.raises(ValueError):
        parse_verdict("maybe")
