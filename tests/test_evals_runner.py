"""The runner with fake transports: request building (prompt variants included), headers, sample errors,
bounded concurrency, gate_prompt."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bastion.evals import evaluate, gate_prompt, load_suite, run_suite
from bastion.evals.model import Answer, Outcome
from bastion.evals.transport import answer_text
from tests.test_evals_fakes import VALID, json_suite, recording_transport, reply, write_suite

PROMPT_SUITE = {
    "name": "prompts",
    "samples": 2,
    "variants": [
        {"name": "inline", "model": "sim-small", "params": {"temperature": 0.2},
         "messages": [{"role": "system", "content": "You help {{ customer }}."}]},
        {"name": "registry", "prompt": "support-reply@staging", "params": {"max_tokens": 50}},
    ],
    "defaults": {"assert": [{"type": "is-json"}]},
    "cases": [{"id": "a", "vars": {"customer": "Ann"}, "input": "Where is my refund?"},
              {"id": "b", "vars": {"customer": "Bob"}}],
}


def test_requests_for_inline_and_prompt_variants(tmp_path: Path) -> None:
    data = {**PROMPT_SUITE, "variants": PROMPT_SUITE["variants"][1:]}
    suite = load_suite(write_suite(tmp_path, data))
    send, seen = recording_transport()
    run = asyncio.run(run_suite(suite, send, run_id="r1"))
    assert len(seen) == 4  # 1 variant x 2 cases x 2 samples
    bodies = {b["prompt"]["variables"]["customer"]: b for b, _ in seen}
    assert bodies["Ann"] == {"max_tokens": 50, "prompt": {"name": "support-reply@staging",
                                                           "variables": {"customer": "Ann"}},
                             "messages": [{"role": "user", "content": "Where is my refund?"}]}
    assert bodies["Bob"]["messages"] == [] and "model" not in bodies["Bob"]  # the prompt's model is used
    for _, headers in seen:
        assert headers == {"x-bastion-session": "eval-r1", "x-bastion-cache": "no-cache", "cache-control": "no-store"}
    assert all(s.outcome is Outcome.PASS for ss in run.records.values() for s in ss)


def test_variant_messages_are_templated_with_case_vars(tmp_path: Path) -> None:
    suite = load_suite(write_suite(tmp_path, {**PROMPT_SUITE, "cases": PROMPT_SUITE["cases"][:1]}))
    send, seen = recording_transport()
    asyncio.run(run_suite(suite, send, variants=["inline"], samples=1))
    inline = [b for b, _ in seen if b.get("model") == "sim-small"]
    assert inline == [{"temperature": 0.2, "model": "sim-small", "messages": [
        {"role": "system", "content": "You help Ann."}, {"role": "user", "content": "Where is my refund?"}]}]
    # --variants inline still runs the baseline (the first variant is the baseline here: inline itself)
    assert {b.get("model") for b, _ in seen} == {"sim-small"}


def test_a_missing_template_variable_is_a_sample_error(tmp_path: Path) -> None:
    data = {**PROMPT_SUITE, "cases": [{"id": "x", "input": "hi"}]}
    suite = load_suite(write_suite(tmp_path, data))
    send, seen = recording_transport()
    run = asyncio.run(run_suite(suite, send, variants=["inline"], samples=1))
    (sample,) = run.samples_of("inline", "x")
    assert sample.outcome is Outcome.ERROR and "'customer' is undefined" in sample.answer.error


def test_transport_failures_and_http_errors_are_sample_errors(tmp_path: Path) -> None:
    suite = load_suite(write_suite(tmp_path, json_suite(3)))
    calls = 0

    async def flaky(body: dict[str, Any], headers: dict[str, str]) -> Answer:
        nonlocal calls
        calls += 1
        if calls % 3 == 0:
            raise ConnectionError("reset by peer")
        if calls % 3 == 1:
            return Answer(status=429, error="HTTP 429 rate_limited: slow down", latency_ms=1)
        return reply(VALID)

    doc = asyncio.run(evaluate(suite, transport=flaky, samples=2, concurrency=1, use_embeddings=False))
    v = doc["variants"][0]
    assert v["total"] == 6 and v["errors"] == 4 and v["passes"] == 2 and v["sample_errors"] == 4
    errs = [s["error"] for c in doc["cases"] for s in c["variants"]["baseline"]["samples"] if "error" in s]
    assert any("reset by peer" in e for e in errs) and any("HTTP 429" in e for e in errs)


def test_concurrency_is_bounded(tmp_path: Path) -> None:
    suite = load_suite(write_suite(tmp_path, json_suite(10)))
    in_flight = peak = 0

    async def slow(body: dict[str, Any], headers: dict[str, str]) -> Answer:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        in_flight -= 1
        return reply(VALID)

    seen = []
    run = asyncio.run(run_suite(suite, slow, samples=3, concurrency=4, progress=lambda d, t: seen.append((d, t))))
    assert peak == 4
    assert seen[-1] == (60, 60) and len(seen) == 60
    assert all(len(v) == 3 and [s.index for s in v] == [0, 1, 2] for v in run.records.values())


def test_unknown_variant_is_refused(tmp_path: Path) -> None:
    suite = load_suite(write_suite(tmp_path, json_suite(2)))
    send, _ = recording_transport()
    with pytest.raises(ValueError, match="unknown variant"):
        asyncio.run(run_suite(suite, send, variants=["nope"]))


def test_answer_text_shapes() -> None:
    assert answer_text({"choices": [{"message": {"content": "hi"}}]}) == "hi"
    assert answer_text({"choices": [{"message": {"content": None, "tool_calls": [
        {"function": {"name": "f", "arguments": '{"a": 1}'}}]}}]}) == '{"a": 1}'
    assert answer_text({"choices": []}) == ""


def test_gate_prompt_runs_the_ref_against_the_baseline(tmp_path: Path) -> None:
    data = {**PROMPT_SUITE, "variants": [
        {"name": "prod", "prompt": "support-reply@production", "model": "sim-small", "params": {"temperature": 0}}],
        "gate": {"min_pass_rate": 0.9}}
    path = write_suite(tmp_path, data)

    def answer(body: dict[str, Any]) -> str:
        return "not json" if body["prompt"]["name"] == "support-reply@7" else VALID

    send, seen = recording_transport(answer)
    passed, summary = gate_prompt(str(path), "support-reply@7", transport=send, out_dir=tmp_path / "out")
    assert not passed and "candidate:support-reply@7" in summary and "gate: FAILED" in summary
    cand = [b for b, _ in seen if b["prompt"]["name"] == "support-reply@7"]
    assert cand and all(b["model"] == "sim-small" and b["temperature"] == 0 for b in cand)
    assert (tmp_path / "out" / "results.json").exists()

    send, _ = recording_transport()
    passed, summary = gate_prompt(str(path), "support-reply@8", transport=send)
    assert passed and "gate: PASSED" in summary


def test_gate_prompt_fails_closed_on_an_invalid_suite(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("variants: []\n")
    passed, summary = gate_prompt(str(bad), "p@1")
    assert not passed and "the eval suite is invalid" in summary and "bad.yaml:1" in summary
