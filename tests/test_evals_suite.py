"""Suite loading: the format, cases files, and errors with file, key path and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.evals import SuiteError, load_suite

GOOD = """\
name: support
samples: 3
judge_model: sim-small
variants:
  - {name: base, model: sim-small, params: {temperature: 0.7}}
  - name: cand
    prompt: support-reply@staging
defaults:
  assert: [{type: is-json}]
cases:
  - id: refund-1
    vars: {customer: Ann}
    messages: [{role: user, content: "Where is my refund?"}]
    reference: "It is on its way."
    assert: [{type: contains, value: refund}]
  - input: "Hello"
cases_file: more.jsonl
gate: {min_pass_rate: 0.9, baseline: base, alpha: 0.05}
"""


def errors(tmp_path: Path, text: str, files: dict[str, str] | None = None) -> list[str]:
    for name, body in (files or {}).items():
        (tmp_path / name).write_text(body)
    p = tmp_path / "suite.yaml"
    p.write_text(text)
    with pytest.raises(SuiteError) as e:
        load_suite(p)
    return e.value.problems


def test_loads_a_full_suite(tmp_path: Path) -> None:
    (tmp_path / "more.jsonl").write_text('{"id": "j1", "input": "hi", "context": "ctx"}\n\n# comment\n{"input": "x"}\n')
    (tmp_path / "suite.yaml").write_text(GOOD)
    s = load_suite(tmp_path / "suite.yaml")
    assert s.name == "support" and s.samples == 3 and s.judge_model == "sim-small"
    assert [v.name for v in s.variants] == ["base", "cand"]
    assert s.variants[1].prompt == "support-reply@staging" and s.variants[0].params == {"temperature": 0.7}
    assert [c.id for c in s.cases] == ["refund-1", "case-2", "j1", "case-4"]
    refund = s.cases[0]
    assert [a.type for a in refund.assertions] == ["is-json", "contains"]  # defaults first
    assert refund.reference == "It is on its way." and refund.vars == {"customer": "Ann"}
    assert refund.where.endswith("suite.yaml:11")
    assert s.cases[1].messages == [{"role": "user", "content": "Hello"}]
    assert s.cases[2].context == "ctx" and s.cases[2].where.endswith("more.jsonl:1")
    assert s.cases[3].where.endswith("more.jsonl:4")
    assert s.gate.min_pass_rate == 0.9 and s.gate.alpha == 0.05 and s.baseline == "base"
    assert s.gate.max_regression == 0.05  # default


def test_defaults_when_absent(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text("variants: [{name: a, model: m}]\ncases: [{input: hi}]\n")
    s = load_suite(p)
    assert s.name == "s" and s.samples == 5 and s.baseline == "a"
    assert s.gate.alpha == 0.01 and s.gate.max_regression == 0.05 and s.gate.min_pass_rate is None


def test_csv_cases(tmp_path: Path) -> None:
    (tmp_path / "cases.csv").write_text('id,input,reference,customer,assert\n'
                                        'c1,Hello,Hi,Ann,"[{""type"": ""contains"", ""value"": ""Hi""}]"\n'
                                        'c2,Bye,,Bob,\n')
    p = tmp_path / "s.yaml"
    p.write_text("variants: [{name: a, model: m}]\ncases_file: cases.csv\n")
    s = load_suite(p)
    assert [c.id for c in s.cases] == ["c1", "c2"]
    assert s.cases[0].vars == {"customer": "Ann"} and s.cases[0].reference == "Hi"
    assert [a.type for a in s.cases[0].assertions] == ["contains"]
    assert s.cases[1].reference is None and s.cases[1].where.endswith("cases.csv:3")


def test_unknown_key_with_line(tmp_path: Path) -> None:
    problems = errors(tmp_path, "variants: [{name: a, model: m}]\ncases: [{input: hi}]\ngates: {}\n")
    assert len(problems) == 1
    assert problems[0].endswith("suite.yaml:3: gates: unknown key (known: name, description, samples, judge_model, "
                                "variants, defaults, cases, cases_file, gate; see docs/evals.md)")


def test_bad_values_report_key_path_and_line(tmp_path: Path) -> None:
    text = ("variants:\n  - name: a\n    model: m\nsamples: 0\ncases:\n  - input: hi\n"
            "gate:\n  min_pass_rate: 2\n")
    problems = errors(tmp_path, text)
    assert any(p.endswith("suite.yaml:4: samples: 0 is less than the minimum of 1") for p in problems), problems
    assert any("suite.yaml:8: gate.min_pass_rate: 2 is greater than the maximum of 1" in p for p in problems), problems


def test_assertion_errors(tmp_path: Path) -> None:
    text = ("variants: [{name: a, model: m}]\ncases:\n  - id: x\n    input: hi\n    assert:\n"
            "      - {type: contain, value: a}\n      - {type: regex}\n      - {type: length, max: -1}\n")
    problems = errors(tmp_path, text)
    assert problems[0].endswith("suite.yaml:6: cases.0.assert.0: unknown assertion type 'contain' (known: "
                                "contains, cost, equals, is-json, json-schema, latency, length, llm-judge, "
                                "not-contains, not-refusal, python, refusal, regex, similar)")
    assert problems[1].endswith("suite.yaml:7: cases.0.assert.1: regex: 'pattern' is a required property")
    assert "suite.yaml:8: cases.0.assert.2: length: max: -1 is less than the minimum of 0" in problems[2]


def test_assertion_type_of_the_wrong_kind_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    # a list (unhashable) as the type used to raise TypeError out of load_suite
    text = ("variants: [{name: a, model: m}]\ncases:\n  - id: x\n    input: hi\n    assert:\n"
            "      - {type: [contains], value: a}\n      - {type: {regex: x}}\n")
    problems = errors(tmp_path, text)
    assert "suite.yaml:6: cases.0.assert.0: unknown assertion type ['contains'] (known: contains," \
        in problems[0]
    assert "suite.yaml:7: cases.0.assert.1: unknown assertion type {'regex': 'x'} (known: contains," \
        in problems[1]


def test_case_and_variant_consistency(tmp_path: Path) -> None:
    text = ("variants:\n  - {name: a, model: m}\n  - {name: a, prompt: p@1}\n  - {name: b}\n"
            "  - {name: c, model: m, params: {stream: true}}\n"
            "cases:\n  - {id: x, input: hi}\n  - {id: x, vars: {q: 1}}\ngate: {baseline: zz}\n")
    problems = "\n".join(errors(tmp_path, text))
    assert "suite.yaml:3: variants.1.name: duplicate variant name 'a'" in problems
    assert "suite.yaml:4: variants.2: a variant needs a model or a prompt" in problems
    assert "suite.yaml:5: variants.3.params: stream cannot be a param" in problems
    assert "variant 'a' has no prompt and no messages, so cases without messages/input cannot be sent: x" in problems
    assert "suite.yaml:9: gate.baseline: no variant named 'zz'" in problems
    assert "suite.yaml:8: duplicate case id 'x' (first at" in problems


def test_cases_file_errors(tmp_path: Path) -> None:
    text = "variants: [{name: a, model: m}]\ncases_file: c.jsonl\n"
    problems = errors(tmp_path, text, {"c.jsonl": '{"input": "ok"}\n{not json\n[1]\n{"input": "x", "bogus": 1}\n'})
    assert any(p.endswith("c.jsonl:2: (top level): not JSON (Expecting property name enclosed in double quotes at column 2)")
               for p in problems), problems
    assert any(p.endswith("c.jsonl:3: (top level): each line must be a JSON object (a case)") for p in problems)
    assert any("c.jsonl:4: bogus: unknown key (known: id, vars" in p for p in problems), problems
    missing = errors(tmp_path, "variants: [{name: a, model: m}]\ncases_file: nope.jsonl\n")
    assert "suite.yaml:2: cases_file:" in missing[0] and "not found" in missing[0]


def test_yaml_and_file_errors(tmp_path: Path) -> None:
    assert errors(tmp_path, "variants: [\n")[0].startswith(f"{tmp_path / 'suite.yaml'}:")
    assert "not valid YAML" in errors(tmp_path, "variants: [\n")[0]
    assert errors(tmp_path, "- 1\n")[0].endswith("a suite is a mapping with variants and cases (see docs/evals.md)")
    assert "no cases" in errors(tmp_path, "variants: [{name: a, model: m}]\n")[0]
    with pytest.raises(SuiteError, match="suite file not found"):
        load_suite(tmp_path / "missing.yaml")


def test_the_example_suite_loads() -> None:
    s = load_suite(Path(__file__).parent.parent / "examples" / "evals" / "sim-json.yaml")
    assert len(s.cases) >= 50
    assert {v.name for v in s.variants} == {"json", "json-large", "plain"}
    assert "response_format" in s.variant("json").params and "response_format" not in s.variant("plain").params
