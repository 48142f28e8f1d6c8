"""bench/overhead.py keeps working: a --quick run finishes with the expected JSON and no errors.

No timing assertions: speed is for the benchmark's report, not for tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent


def test_overhead_quick_run(tmp_path: Path) -> None:
    out = tmp_path / "overhead.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "overhead.py"), "--quick", "--json", str(out)],
        capture_output=True, text=True, timeout=240, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OPEN LOOP" in proc.stdout and "SATURATION" in proc.stdout
    result = orjson.loads(out.read_bytes())

    assert result["schema"] == "bastion-bench-overhead/1"
    for key in ("started_at", "machine", "settings", "scenarios", "saturation", "targets", "notes", "errors_total"):
        assert key in result, key
    assert result["errors_total"] == 0, proc.stdout

    assert {(s["stream"], s["kind"]) for s in result["scenarios"]} == {(False, "open_loop"), (True, "open_loop")}
    for s in result["scenarios"]:
        for target in ("direct", "gateway"):
            r = s[target]
            assert r["errors"] == 0 and r["ok"] == r["scheduled"] > 0
            for p in ("p50", "p99", "p99.9"):
                assert r["latency_ms"][p] is not None
            assert "achieved_rps" in r and "schedule_lag_ms" in r
            if s["stream"]:
                assert r["ttft_ms"]["p50"] is not None
        for key in ("added_p50_ms", "added_p99_ms", "added_p99.9_ms"):
            assert s["overhead"][key] is not None
        if s["stream"]:
            assert s["overhead"]["added_ttft_p50_ms"] is not None

    assert {s["stream"] for s in result["saturation"]} == {False, True}
    for s in result["saturation"]:
        assert s["direct"]["ok"] > 0 and s["gateway"]["ok"] > 0
        assert s["direct"]["errors"] == 0 and s["gateway"]["errors"] == 0
        assert s["throughput_ratio"] is not None
    assert result["exit_codes"] == {"gateway": 0, "sim": 0}
