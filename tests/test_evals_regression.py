"""The gate at its defaults (5 samples, alpha 0.01, max_regression 0.05) on a 50-case JSON suite:

- a candidate that breaks the format of 20% of its answers fails the gate, in every one of 20 reruns;
- an unchanged candidate passes it in at least 19 of 20 reruns — here all variants are also made flaky
  (3% of every model's answers are invalid), so the reruns really differ and false alarms could happen.

In-process with a deterministic fake transport: one seeded RNG per rerun. The statistics are under test,
not the gateway. The gate has no min_pass_rate here: the paired regression check alone must decide.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from bastion.evals import evaluate, load_suite
from bastion.evals.model import DEFAULT_ALPHA, DEFAULT_MAX_REGRESSION, DEFAULT_SAMPLES
from tests.test_evals_fakes import json_suite, json_transport, write_suite

RERUNS = 20


def gate_passes(suite_path: Path, break_rate: dict[str, float], seed: int, noise: float) -> tuple[bool, dict]:
    suite = load_suite(suite_path)
    doc = asyncio.run(evaluate(suite, transport=json_transport(break_rate, seed, noise), concurrency=16,
                               use_embeddings=False))
    return doc["gate"]["passed"], doc


def test_the_defaults_are_the_documented_ones(tmp_path: Path) -> None:
    s = load_suite(write_suite(tmp_path, json_suite()))
    assert (s.samples, s.gate.alpha, s.gate.max_regression) == (DEFAULT_SAMPLES, DEFAULT_ALPHA, DEFAULT_MAX_REGRESSION)
    assert (DEFAULT_SAMPLES, DEFAULT_ALPHA, DEFAULT_MAX_REGRESSION) == (5, 0.01, 0.05)


def test_a_candidate_that_breaks_20_percent_of_answers_fails_the_gate(tmp_path: Path) -> None:
    path = write_suite(tmp_path, json_suite())
    for noise in (0.0, 0.03):
        for seed in range(RERUNS):
            passed, doc = gate_passes(path, {"model-b": 0.2 + noise}, seed, noise)
            assert not passed, f"noise {noise}, seed {seed}: the broken candidate passed"
            cmp = doc["comparisons"][0]
            assert cmp["candidate"] == "candidate" and cmp["regression"] and cmp["p_value"] < DEFAULT_ALPHA
            failed = [c for c in doc["gate"]["checks"] if not c["passed"]]
            assert [c["name"] for c in failed] == ["max_regression"]


def test_an_unchanged_candidate_passes_in_at_least_19_of_20_reruns(tmp_path: Path) -> None:
    path = write_suite(tmp_path, json_suite())
    for noise in (0.0, 0.03):
        passes = sum(gate_passes(path, {}, seed, noise)[0] for seed in range(RERUNS))
        assert passes >= 19, f"noise {noise}: only {passes}/{RERUNS} reruns passed"
