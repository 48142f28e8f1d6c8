"""`bastion eval run` exit codes and --baseline, in-process with a fake transport; `bastion eval promote-log`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from bastion.cli import main
from bastion.evals import load_suite
from bastion.evals.model import Answer
from bastion.store import open_store
from tests.procs import write_config
from tests.test_evals_fakes import VALID, json_suite, reply, write_suite


class FakeHttp:
    """Stands in for HttpTransport: model-b answers invalid JSON when BROKEN is set."""

    broken = False
    seen: list[dict[str, Any]] = []

    def __init__(self, gateway: str | None, key: str | None, **kw: Any) -> None:
        self.url = (gateway or "http://fake") + "/v1/chat/completions"
        FakeHttp.seen.append({"gateway": gateway, "key": key})

    async def __aenter__(self) -> FakeHttp:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def __call__(self, body: dict[str, Any], headers: dict[str, str]) -> Answer:
        return reply("nope" if self.broken and body["model"] == "model-b" else VALID)


@pytest.fixture
def fake_http(monkeypatch: pytest.MonkeyPatch) -> type[FakeHttp]:
    monkeypatch.setattr("bastion.evals.api.HttpTransport", FakeHttp)
    FakeHttp.broken = False
    FakeHttp.seen = []
    return FakeHttp


def test_exit_0_when_the_gate_passes(tmp_path: Path, fake_http: type[FakeHttp], capsys: pytest.CaptureFixture) -> None:
    suite = write_suite(tmp_path, json_suite(10))
    code = main(["eval", "run", str(suite), "--out", str(tmp_path / "o"), "--samples", "2", "--gateway", "http://gw",
                 "--key", "k", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "gate: PASSED" in out
    assert fake_http.seen == [{"gateway": "http://gw", "key": "k"}]
    assert all((tmp_path / "o" / f).exists() for f in ("results.json", "junit.xml", "report.html"))


def test_exit_1_when_the_gate_fails(tmp_path: Path, fake_http: type[FakeHttp], capsys: pytest.CaptureFixture) -> None:
    fake_http.broken = True
    suite = write_suite(tmp_path, json_suite(10))
    code = main(["eval", "run", str(suite), "--out", str(tmp_path / "o"), "--no-progress"])
    assert code == 1 and "gate: FAILED" in capsys.readouterr().out


def test_baseline_run_comparison(tmp_path: Path, fake_http: type[FakeHttp]) -> None:
    data = json_suite(12)
    data["variants"] = [data["variants"][1]]  # only model-b: no variant-vs-variant comparison
    suite = write_suite(tmp_path, data)
    assert main(["eval", "run", str(suite), "--out", str(tmp_path / "good"), "--no-progress"]) == 0
    fake_http.broken = True
    code = main(["eval", "run", str(suite), "--out", str(tmp_path / "bad"), "--no-progress",
                 "--baseline", str(tmp_path / "good" / "results.json")])
    assert code == 1
    doc = json.loads((tmp_path / "bad" / "results.json").read_text())
    (cmp,) = doc["comparisons"]
    assert cmp["against"] == "baseline-run" and cmp["regression"] and cmp["mean_diff"] == -1.0


def test_exit_2_on_usage_and_suite_errors(tmp_path: Path, fake_http: type[FakeHttp],
                                          capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("variants: [{name: a}]\ncases: [{input: x}]\n")
    assert main(["eval", "run", str(bad), "--no-progress"]) == 2
    assert "bad.yaml:1: variants.0: a variant needs a model or a prompt" in capsys.readouterr().err
    suite = write_suite(tmp_path, json_suite(2))
    assert main(["eval", "run", str(suite), "--variants", "nope", "--no-progress"]) == 2
    assert "unknown variant" in capsys.readouterr().err
    assert main(["eval", "run", str(suite), "--samples", "0"]) == 2
    assert main(["eval", "run", str(suite), "--baseline", str(tmp_path / "missing.json")]) == 2
    assert main(["eval", "run", str(tmp_path / "missing.yaml")]) == 2
    with pytest.raises(SystemExit) as e:
        main(["eval", "run"])
    assert e.value.code == 2


# ---- promote-log ---------------------------------------------------------------------------------------

def _log(tmp_path: Path, rows: list[dict[str, Any]]) -> Path:
    store = tmp_path / "b.db"
    config = write_config(tmp_path / "bastion.yaml", "http://127.0.0.1:9", store=store)
    base = {"received_at": time.time(), "endpoint": "chat", "dialect": "openai", "status": 200, "stream": 0}
    open_store(f"sqlite:///{store}").write_requests([{**base, **r} for r in rows])
    return config


def test_promote_log_appends_a_case(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = _log(tmp_path, [
        {"id": "req_abc", "alias": "sim-small", "prompt_version": "support@3",
         "request": {"model": "sim-small", "messages": [{"role": "user", "content": "Where is my refund?"}],
                     "prompt": {"name": "support@production", "variables": {"customer": "Ann"}}},
         "response": {"choices": [{"message": {"role": "assistant", "content": "On its way."}}]}},
        {"id": "req_anth", "dialect": "anthropic", "endpoint": "messages",
         "request": {"model": "m", "system": "Be brief.", "messages": [
             {"role": "user", "content": [{"type": "text", "text": "Hi"}]}]},
         "response": {"content": [{"type": "text", "text": "Hello!"}]}},
        {"id": "req_nobody", "request": None},
    ])
    suite = tmp_path / "suite.yaml"
    suite.write_text("# my suite\nvariants: [{name: a, model: sim-small}]\ncases: [{id: first, input: hi}]\n")
    assert main(["eval", "promote-log", "req_abc", str(suite), "--config", str(config)]) == 0
    assert capsys.readouterr().out.strip() == "log-abc"
    assert suite.read_text().startswith("# my suite\n") and "cases_file: suite.cases.jsonl" in suite.read_text()
    case = json.loads((tmp_path / "suite.cases.jsonl").read_text())
    assert case == {"id": "log-abc", "vars": {"customer": "Ann"},
                    "messages": [{"role": "user", "content": "Where is my refund?"}],
                    "metadata": {"source_request_id": "req_abc", "alias": "sim-small", "prompt_version": "support@3",
                                 "received_at": case["metadata"]["received_at"]}}

    assert main(["eval", "promote-log", "req_anth", str(suite), "--config", str(config), "--as-reference"]) == 0
    assert capsys.readouterr().out.strip() == "log-anth"
    s = load_suite(suite)
    assert [c.id for c in s.cases] == ["first", "log-abc", "log-anth"]
    anth = s.cases[2]
    assert anth.messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert anth.reference == "Hello!"

    assert main(["eval", "promote-log", "req_abc", str(suite), "--config", str(config)]) == 2
    assert "already in the suite" in capsys.readouterr().err
    assert main(["eval", "promote-log", "req_nobody", str(suite), "--config", str(config)]) == 2
    assert "without its body" in capsys.readouterr().err
    assert main(["eval", "promote-log", "req_missing", str(suite), "--config", str(config)]) == 2
    assert "no logged request" in capsys.readouterr().err
