"""`bastion prompts ...` as a user runs it, through bastion.cli.main in a temporary repository."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import yaml

from bastion.cli import main
from tests.test_prompts import SUPPORT, edit, write

GATED = SUPPORT + "eval: {suite: evals/support.yaml, labels: [production]}\n"


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repository with prompts/ (no bastion.yaml: the embedded config's prompts.dir is `prompts`)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BASTION_CONFIG", raising=False)
    write(tmp_path / "prompts", "support-reply", GATED)
    write(tmp_path / "prompts", "summarize", "variables: {text: {type: string}}\n"
                                             "messages: [{role: user, content: 'Summarize: {{ text }}'}]\n")
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["prompts", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_lock_list_and_show(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["name", "versions", "labels", "file_hash", "file"]
    assert "summarize" in lines[2] and "unlocked changes" in lines[2]

    code, out, _ = run(capsys, "lock")
    assert code == 0
    assert "summarize: recorded version 1" in out and "support-reply: recorded version 1" in out
    assert (repo / "prompts" / "prompts.lock.yaml").exists()
    code, out, _ = run(capsys, "lock")
    assert code == 0 and "nothing new" in out

    code, out, _ = run(capsys, "list")
    row = next(line for line in out.splitlines() if line.startswith("support-reply"))
    assert row.split()[1] == "1" and "= version 1" in row

    code, out, _ = run(capsys, "show", "support-reply@1")
    assert code == 0
    assert "version:         1" in out and "model:           sim-small" in out
    assert "tone: string (default 'friendly'; one of friendly, formal)" in out
    assert "--- system ---\nYou are a support agent. Be {{ tone }}." in out

    code, out, _ = run(capsys, "show", "support-reply", "--json")
    assert json.loads(out)["spec"]["response_format"] == {"type": "json_object"}


def test_render_with_typed_vars(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "render", "support-reply", "--var", "customer=Ann", "--var", "question=Where?",
                       "--var", "order_id=42")
    assert code == 0
    assert "Customer Ann (order 42) asks: Where?" in out
    assert out.startswith("# support-reply@") and "response_format=" in out

    (repo / "vars.json").write_text(json.dumps({"customer": "Bob", "question": "Why?", "tone": "formal"}))
    code, out, _ = run(capsys, "render", "support-reply@current", "--vars-json", "vars.json", "--var", "customer=42",
                       "--json")
    body = json.loads(out)
    assert code == 0 and body["messages"][1]["content"] == "Customer 42 asks: Why?"  # a string stays a string
    assert body["temperature"] == 0.2 and body["response_format"] == {"type": "json_object"}

    code, _, err = run(capsys, "render", "support-reply", "--var", "customer=Ann", "--var", "order_id=x")
    assert code == 1
    assert "variable 'order_id' must be an integer, got a string ('x')" in err
    assert "missing variable 'question'" in err


def test_promote_rollback_and_diff(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "lock")[0] == 0
    f = repo / "prompts" / "summarize.yaml"
    edit(f, "Summarize:", "Summarize briefly:")

    code, out, _ = run(capsys, "diff", "summarize")  # recorded (latest) against the file
    assert code == 0
    assert "-  content: 'Summarize: {{ text }}'" in out and "+  content: 'Summarize briefly: {{ text }}'" in out

    code, out, _ = run(capsys, "promote", "summarize@1", "production")
    assert code == 0 and "summarize: production -> version 1" in out
    code, out, _ = run(capsys, "promote", "summarize@current", "production")
    assert code == 0
    assert "summarize: recorded version 2" in out and "production -> version 2 (was 1)" in out
    code, out, _ = run(capsys, "diff", "summarize@1", "@production")
    assert "+  content: 'Summarize briefly: {{ text }}'" in out

    code, out, _ = run(capsys, "rollback", "summarize", "production")
    assert code == 0 and "production -> version 1 (was 2)" in out
    lock = yaml.safe_load((repo / "prompts" / "prompts.lock.yaml").read_text())
    assert lock["prompts"]["summarize"]["labels"] == {"production": 1}
    code, _, err = run(capsys, "rollback", "summarize", "production")
    assert code == 1 and "no earlier version to roll back to" in err

    code, out, _ = run(capsys, "diff", "summarize@1", "summarize@1")
    assert "no differences" in out

    with pytest.raises(SystemExit, match="say which version"):
        main(["prompts", "promote", "summarize", "production"])


def test_promotion_to_a_gated_label_needs_the_eval_runner(repo: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    run(capsys, "lock")
    # staging is not gated
    assert run(capsys, "promote", "support-reply@1", "staging")[0] == 0

    monkeypatch.setattr("bastion.prompts.gate.EVALS_MODULE", "bastion_evals_not_installed")
    code, out, err = run(capsys, "promote", "support-reply@1", "production")
    assert code == 1
    assert "must pass the eval suite evals/support.yaml" in out and "--skip-eval" in out
    assert "not promoted" in err
    lock = yaml.safe_load((repo / "prompts" / "prompts.lock.yaml").read_text())
    assert "production" not in lock["prompts"]["support-reply"]["labels"]

    code, out, err = run(capsys, "promote", "support-reply@1", "production", "--skip-eval")
    assert code == 0 and "production -> version 1" in out and "without its eval suite" in err


def test_promotion_calls_the_eval_gate(repo: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    (repo / "evals").mkdir()
    (repo / "evals" / "support.yaml").write_text("cases: []\n")
    calls: list[tuple[str, str]] = []
    verdict = {"passed": False}

    def gate_prompt(suite_path: str, prompt_ref: str) -> tuple[bool, str]:
        calls.append((suite_path, prompt_ref))
        return verdict["passed"], f"suite ran: {'pass' if verdict['passed'] else 'fail'}"

    # stands in for bastion.evals (written separately); the gate calls exactly gate_prompt(suite_path, prompt_ref)
    fake: Any = types.ModuleType("fake_bastion_evals")
    fake.gate_prompt = gate_prompt
    monkeypatch.setitem(sys.modules, "fake_bastion_evals", fake)
    monkeypatch.setattr("bastion.prompts.gate.EVALS_MODULE", "fake_bastion_evals")

    code, out, err = run(capsys, "promote", "support-reply@current", "production")
    assert code == 1 and "suite ran: fail" in out and "did not pass the eval gate" in err
    assert calls == [("evals/support.yaml", "support-reply@1")]  # the version is recorded before the gate runs
    verdict["passed"] = True
    code, out, _ = run(capsys, "promote", "support-reply@1", "production")
    assert code == 0 and "suite ran: pass" in out and "production -> version 1" in out


def test_errors_exit_codes(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "show", "suport-reply")
    assert code == 1 and "no prompt named 'suport-reply'" in err and "summarize, support-reply" in err
    code, _, err = run(capsys, "show", "summarize@7")
    assert code == 1 and "no version or label '7'" in err

    write(repo / "prompts", "broken", "messages: [{role: user, content: '{{ nope }}'}]\nextra: 1\n")
    code, out, err = run(capsys, "list")
    assert code == 1 and "summarize" in out and "undeclared variable 'nope'" in err
    code, _, err = run(capsys, "lock")
    assert code == 2 and "configuration errors" in err
    assert "prompts/broken.yaml:2: extra: unknown key" in err
    assert not (repo / "prompts" / "prompts.lock.yaml").exists()  # nothing recorded while a file is broken


def test_dir_lock_and_config_options(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = repo / "other"
    write(other, "hello", "messages: [{role: user, content: hi}]\n")
    code, out, _ = run(capsys, "lock", "--dir", "other")
    assert code == 0 and "hello: recorded version 1" in out and (other / "prompts.lock.yaml").exists()

    (repo / "bastion.yaml").write_text("prompts: {dir: other, lock: versions.lock.yaml}\n")
    write(other, "bye", "messages: [{role: user, content: bye}]\n")
    code, out, _ = run(capsys, "lock", "--config", "bastion.yaml")
    assert code == 0 and "bye: recorded version 1" in out and "hello: recorded version 1" in out
    assert (repo / "versions.lock.yaml").exists()
    code, out, _ = run(capsys, "list", "--dir", "other", "--lock", "versions.lock.yaml")
    assert code == 0 and "bye" in out and "hello" in out


def test_a_gate_that_cannot_run_fails_closed(repo: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    (repo / "evals").mkdir()
    (repo / "evals" / "support.yaml").write_text("cases: []\n")

    def gate_prompt(suite_path: str, prompt_ref: str) -> tuple[bool, str]:
        raise ConnectionError("gateway unreachable")

    fake: Any = types.ModuleType("fake_bastion_evals")
    fake.gate_prompt = gate_prompt
    monkeypatch.setitem(sys.modules, "fake_bastion_evals", fake)
    monkeypatch.setattr("bastion.prompts.gate.EVALS_MODULE", "fake_bastion_evals")
    code, out, _ = run(capsys, "promote", "support-reply@current", "production")
    assert code == 1 and "could not run (ConnectionError: gateway unreachable)" in out
    assert run(capsys, "show", "support-reply@production")[0] == 1  # the label was not set
