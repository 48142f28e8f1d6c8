"""results.json, junit.xml and report.html from an in-process run."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from bastion.evals import evaluate, load_results, load_suite, render_summary, write_reports
from tests.test_evals_fakes import json_transport, write_suite


@pytest.fixture(scope="module")
def doc(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("reports")
    data = {
        "name": "fmt <&> suite", "samples": 4,
        "variants": [{"name": "baseline", "model": "model-a"}, {"name": "candidate", "model": "model-b"}],
        "defaults": {"assert": [{"type": "is-json"}, {"type": "not-refusal"}]},
        "cases": [{"id": f"c{i}", "input": "q", "reference": '{"answer": "ok", "confidence": 0.9}',
                   "context": "The answer is ok with confidence."} for i in range(12)],
        "gate": {"min_pass_rate": 0.9},
    }
    suite = load_suite(write_suite(d, data))
    return asyncio.run(evaluate(suite, transport=json_transport({"model-b": 0.5}, seed=3), use_embeddings=False))


def test_results_json_structure(doc: dict, tmp_path: Path) -> None:
    paths = write_reports(doc, tmp_path / "out")
    loaded = load_results(paths["json"])
    assert loaded == json.loads(json.dumps(doc))
    assert set(loaded) >= {"run_id", "suite", "samples", "baseline", "variants", "cases", "comparisons", "gate"}
    base, cand = loaded["variants"]
    assert base["name"] == "baseline" and base["pass_rate"] == 1.0 and base["total"] == 48
    assert set(base["pass_at_k"]) == {"1", "3", "4"} and base["pass_hat_k"]["4"] == 1.0
    assert 0 < cand["pass_rate"] < 1 and cand["flaky_cases"]
    assert cand["pass_at_k"]["1"] == pytest.approx(cand["pass_rate"])
    assert base["assertions"]["is-json"] == {"pass": 48, "fail": 0, "error": 0}
    q = base["quality"]
    assert q["format_compliance"]["value"] == 1.0 and q["refusal_rate"]["value"] == 0.0
    assert q["task_accuracy"]["value"] == 1.0  # the answer equals the reference
    assert q["latency_p50_ms"] == 12.0 and q["cost_per_case_usd"] == pytest.approx(0.0001)
    assert 0 <= q["hallucination_rate"]["value"] <= 1
    case = loaded["cases"][0]
    assert set(case["variants"]) == {"baseline", "candidate"}
    s = case["variants"]["baseline"]["samples"][0]
    assert set(s) >= {"index", "outcome", "output", "latency_ms", "request_id", "cost_usd", "checks"}
    (cmp,) = loaded["comparisons"]
    assert cmp["baseline"] == "baseline" and cmp["candidate"] == "candidate" and cmp["regression"]
    assert not loaded["gate"]["passed"]
    assert {(c["name"], c["variant"], c["passed"]) for c in loaded["gate"]["checks"]} == {
        ("min_pass_rate", "baseline", True), ("min_pass_rate", "candidate", False),
        ("max_regression", "candidate", False)}


def test_junit_xml(doc: dict, tmp_path: Path) -> None:
    paths = write_reports(doc, tmp_path)
    root = ET.parse(paths["junit"]).getroot()
    suites = {s.get("name"): s for s in root.iter("testsuite")}
    assert set(suites) == {"fmt <&> suite.baseline", "fmt <&> suite.candidate", "fmt <&> suite.gate"}
    base = suites["fmt <&> suite.baseline"]
    assert base.get("tests") == "12" and base.get("failures") == "0"
    cand = suites["fmt <&> suite.candidate"]
    assert int(cand.get("failures")) > 0
    failed = [tc for tc in cand.iter("testcase") if tc.find("failure") is not None]
    assert failed and "samples passed" in failed[0].find("failure").get("message")
    gate = suites["fmt <&> suite.gate"]
    assert gate.get("failures") == "2"


def test_html_is_self_contained(doc: dict, tmp_path: Path) -> None:
    html = write_reports(doc, tmp_path)["html"].read_text()
    assert html.startswith("<!doctype html>") and "<svg" in html and "<style>" in html
    assert "<script" not in html and "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html and "<link" not in html
    assert "fmt &lt;&amp;&gt; suite" in html  # escaped
    assert "gate FAILED" in html and "regression" in html and "⚑ flaky" in html
    assert "effective n" in html and all(f">{v['ci_effective_n']}<" in html for v in doc["variants"])
    assert "is-json" in html  # the assertion breakdown


def test_summary_table(doc: dict) -> None:
    text = render_summary(doc)
    assert "baseline (baseline)" in text and "100.0%" in text and "gate: FAILED" in text
    assert "FAIL  max_regression" in text


def test_load_results_rejects_other_files(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="not a bastion eval results.json"):
        load_results(tmp_path / "x.json")
    with pytest.raises(ValueError, match="cannot read"):
        load_results(tmp_path / "missing.json")
