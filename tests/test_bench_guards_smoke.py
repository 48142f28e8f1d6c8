"""bench/guards.py keeps working: a --quick run finishes with the expected JSON and no errors.

No timing assertions: speed is for the benchmark's report, not for tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent

MICRO_ROWS = {"input_rules", "input_rules_classifier", "protect", "answer_leak", "answer_scan", "answer_refusal",
              "check_answer", "stream_guard", "all_nonstream", "all_stream", "stream_open", "stream_close"}
TARGETS = ("direct", "guards_off", "guards_default")


def test_guards_bench_quick_run(tmp_path: Path) -> None:
    out = tmp_path / "guards.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "guards.py"), "--quick", "--json", str(out)],
        capture_output=True, text=True, timeout=240, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "IN-PROCESS" in proc.stdout and "END TO END" in proc.stdout and "REQUIREMENT" in proc.stdout
    result = orjson.loads(out.read_bytes())

    assert result["schema"] == "bastion-bench-guards/1"
    for key in ("started_at", "finished_at", "machine", "settings", "workload", "micro", "e2e", "requirement",
                "notes", "errors_total", "exit_codes"):
        assert key in result, key
    assert result["errors_total"] == 0, proc.stdout

    wl = result["workload"]
    assert wl["request"]["user_tokens"] <= 1000 and wl["request"]["user_tokens"] > 900
    assert wl["answer"]["urls"] >= 1 and wl["answer"]["emails"] >= 1 and wl["answer"]["digits"] > 0

    m = result["micro"]
    assert m["errors"] == []
    assert set(m["rows"]) == MICRO_ROWS
    for row in m["rows"].values():
        assert row["n"] == m["iterations"]
        for p in ("p50", "p90", "p99", "mean"):
            assert row[p] is not None and row[p] >= 0
    assert m["stream_chunks"] > 500 and m["per_chunk_us"]["measured"]["p50"] is not None
    assert m["hold_back"]["first_content_chunk"] is not None and m["hold_back"]["delay_chunks"]["p50"] is not None
    v = m["verdicts"]
    assert v["input"]["action"] == "pass"  # the benign workload is not flagged
    assert v["stream_output_matches_answer"] and not v["answer_changed"]
    assert {f["kind"] for f in v["answer_findings"]} >= {"pii.email"}
    assert v["untrusted_parts"] == 1 and v["canary"]

    e = result["e2e"]
    assert [md["stream"] for md in e["modes"]] == [False, True]
    for md in e["modes"]:
        for name in TARGETS:
            r = md[name]
            assert r["errors"] == 0 and r["ok"] == r["requests"] == e["requests_per_target"] > 0
            assert r["latency_ms"]["p50"] is not None and r["latency_ms"]["p99"] is not None
            if md["stream"]:
                assert r["ttft_ms"]["p50"] is not None
        assert md["default_minus_off"]["p50_ms"] is not None
        assert md["ratio_to_direct"]["guards_default"]["p50"] is not None

    req = result["requirement"]
    assert req["limit_ms"] == 5.0
    assert isinstance(req["met"], bool) and req["verdict"]
    assert req["micro_nonstream_p50_ms"] is not None and req["micro_stream_p50_ms"] is not None
    assert req["micro_stream_added_p50_ms"] == req["micro_stream_open_p50_ms"] + req["micro_stream_close_p50_ms"]
    assert result["exit_codes"] == {"guards_default": 0, "guards_off": 0, "sim": 0}
