"""`bastion eval run` end to end: a real simulator and gateway (tests/procs.py), the CLI as a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import Stack

SUITE = {
    "name": "e2e-json",
    "samples": 2,
    "variants": [
        {"name": "json", "model": "sim-small", "params": {"response_format": {"type": "json_object"}}},
        {"name": "plain", "model": "sim-small"},
    ],
    "defaults": {"assert": [{"type": "is-json", "object": True}, {"type": "not-refusal"},
                            {"type": "length", "max": 2000}]},
    "cases": [{"id": f"q{i}", "input": f"Question number {i}?"} for i in range(4)]
    + [{"id": "keys", "input": "Answer in JSON", "assert": [{"type": "contains", "value": '"answer"'}]}],
    "gate": {"min_pass_rate": 0.5},
}


def eval_run(stack: Stack, suite: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bastion.cli", "eval", "run", str(suite), "--out", str(out), "--gateway", stack.base,
         "--key", stack.key, "--concurrency", "4", *extra],
        capture_output=True, text=True, timeout=120)


def test_eval_run_against_the_gateway(stack: Stack, tmp_path: Path, wait_row) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump(SUITE, sort_keys=False))
    proc = eval_run(stack, suite, tmp_path / "out")
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the plain variant answers prose
    assert "gate: FAILED" in proc.stdout and "eval e2e-json" in proc.stderr  # summary; progress on stderr
    for name in ("results.json", "junit.xml", "report.html"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert doc["samples"] == 2 and doc["baseline"] == "json" and doc["gateway"] == stack.base
    assert [v["name"] for v in doc["variants"]] == ["json", "plain"]
    json_v, plain = doc["variants"]
    assert json_v["total"] == 10 and plain["total"] == 10
    # the simulator answers JSON only when response_format asks for it
    assert json_v["passes"] == 10 and json_v["errors"] == 0
    assert plain["passes"] == 0 and plain["errors"] == 0
    assert json_v["quality"]["format_compliance"]["value"] == 1.0
    assert plain["quality"]["format_compliance"]["value"] == 0.0
    assert json_v["quality"]["latency_p50_ms"] > 0
    (cmp,) = doc["comparisons"]
    # 5 cases cannot make a drop significant at alpha 0.01 (p = 2/2^5): min_pass_rate is what fails plain
    assert cmp["candidate"] == "plain" and cmp["mean_diff"] == -1.0 and cmp["p_value"] == 2 / 2**5
    assert not cmp["regression"]
    failed = {(c["name"], c["variant"]) for c in doc["gate"]["checks"] if not c["passed"]}
    assert failed == {("min_pass_rate", "plain")}
    sample = doc["cases"][0]["variants"]["json"]["samples"][0]
    assert sample["status"] == 200 and sample["request_id"].startswith("req_")
    assert json.loads(sample["output"])  # a JSON answer
    row = wait_row(sample["request_id"])
    assert row["session"] == f"eval-{doc['run_id']}"
    assert json.loads(row["request"])["response_format"] == {"type": "json_object"}

    proc = eval_run(stack, suite, tmp_path / "json-only", "--variants", "json", "--no-progress")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((tmp_path / "json-only" / "results.json").read_text())
    assert [v["name"] for v in doc["variants"]] == ["json"] and doc["gate"]["passed"]


def test_unreachable_gateway_is_a_failed_gate_not_a_crash(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(yaml.safe_dump({**SUITE, "variants": SUITE["variants"][:1], "gate": {}}, sort_keys=False))
    proc = subprocess.run(
        [sys.executable, "-m", "bastion.cli", "eval", "run", str(suite), "--out", str(tmp_path / "o"), "--gateway",
         "http://127.0.0.1:9", "--key", "k", "--no-progress", "--samples", "1"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "all 5 samples errored" in proc.stdout and "cannot reach the gateway" in proc.stdout
