"""Evaluation framework: suites of cases with assertions, sampled repeatedly, compared with statistics,
gated in CI, reported as JSON, JUnit and HTML (docs/evals.md)."""

from __future__ import annotations

from .api import evaluate, gate_prompt
from .model import Answer, Case, Check, Gate, Outcome, Suite, SuiteError, Variant
from .report import render_summary, write_reports
from .results import load_results, summarize
from .runner import run_suite
from .suite import load_suite

__all__ = [
    "Answer", "Case", "Check", "Gate", "Outcome", "Suite", "SuiteError", "Variant", "evaluate", "gate_prompt",
    "load_results", "load_suite", "render_summary", "run_suite", "summarize", "write_reports",
]
