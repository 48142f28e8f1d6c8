"""Prompts served by the gateway: a request names NAME@LABEL with variables (extension field or header),
the gateway renders it, the log carries the version, bad references and variables get a clear 4xx, and
edits, locks and promotions are picked up without a restart."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from bastion.cli import main as cli
from tests.procs import Proc, create_key, start_gateway, start_sim, wait_log_row

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "prompts"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, str, Path, Path]]:
    d = tmp_path_factory.mktemp("prompts")
    prompts = d / "prompts"
    shutil.copytree(EXAMPLES, prompts)
    sim = start_sim()
    store = d / "b.db"
    cfg = d / "bastion.yaml"
    cfg.write_text(f"""
server: {{port: 0}}
store: {{url: 'sqlite:///{store}', flush_interval_ms: 20}}
prompts: {{dir: '{prompts}', reload_interval_s: 0}}
providers:
  sim: {{type: sim, base_url: {sim.url}/v1}}
  sim-anthropic: {{type: anthropic, base_url: {sim.url}, api_key_env: SIM_ANTHROPIC_KEY}}
models:
  sim-small:
    deployments: [{{provider: sim, model: sim-small}}]
  claude:
    deployments: [{{provider: sim-anthropic, model: sim-claude}}]
""")
    key = create_key(cfg)
    proc = start_gateway(cfg)
    yield proc, key, store, prompts
    proc.stop()
    sim.stop()


def client(gw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw[0].url + "/v1", api_key=gw[1], max_retries=0)


def test_prompt_by_label_renders_and_logs_the_version(gw) -> None:
    raw = client(gw).chat.completions.with_raw_response.create(
        model="", messages=[], extra_body={"prompt": {"name": "support-reply@production",
                                                      "variables": {"customer": "Ann", "question": "Where is it?"}}})
    r = raw.parse()
    assert isinstance(json.loads(r.choices[0].message.content), dict)  # the prompt's response_format applied
    row = wait_log_row(gw[2], raw.headers["x-bastion-request-id"])
    assert row["prompt_version"].startswith("support-reply@1#")
    assert raw.headers["x-bastion-prompt-version"] == row["prompt_version"]
    sent = json.loads(row["request"])
    assert sent["model"] == "sim-small" and sent["temperature"] == 0.2 and "prompt" not in sent
    assert "Customer: Ann" in sent["messages"][1]["content"] and "friendly" in sent["messages"][0]["content"]


def test_prompt_by_header_with_request_messages_appended(gw) -> None:
    raw = client(gw).chat.completions.with_raw_response.create(
        model="sim-small", messages=[{"role": "user", "content": "and one more thing"}],
        extra_headers={"x-bastion-prompt": "summarize",
                       "x-bastion-prompt-variables": json.dumps({"text": "Long text here."})})
    row = wait_log_row(gw[2], raw.headers["x-bastion-request-id"])
    msgs = json.loads(row["request"])["messages"]
    assert [m["role"] for m in msgs] == ["system", "user", "user"] and msgs[-1]["content"] == "and one more thing"
    assert row["prompt_version"].startswith("summarize@1#")


def test_prompt_in_the_anthropic_dialect(gw) -> None:
    c = anthropic.Anthropic(base_url=gw[0].url, api_key=gw[1], max_retries=0)
    m = c.messages.create(model="claude", max_tokens=100, messages=[],
                          extra_body={"prompt": "summarize", "prompt_variables": {"text": "Some text."}})
    assert m.content[0].text


@pytest.mark.parametrize(("extra", "status", "code", "says"), [
    ({"prompt": "nope@production"}, 404, "prompt_not_found", "support-reply"),
    ({"prompt": {"name": "support-reply", "variables": {"customer": "Ann"}}}, 400, "prompt_variables_invalid",
     "question"),
    ({"prompt": {"name": "support-reply", "variables": {"customer": 5, "question": "q"}}}, 400,
     "prompt_variables_invalid", "customer"),
    ({"prompt": "support-reply@99"}, 404, "prompt_not_found", "99"),
    ({"prompt": 42}, 400, "invalid_request_error", "NAME@LABEL"),
])
def test_bad_prompt_references_get_clear_errors(gw, extra: dict, status: int, code: str, says: str) -> None:
    r = httpx.post(gw[0].url + "/v1/chat/completions", headers={"authorization": f"Bearer {gw[1]}"},
                   json={"model": "sim-small", "messages": [], **extra})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert code in (err.get("code"), err.get("type")) and says in err["message"]


def _served_version(gw: Any, want: str) -> str | None:
    deadline, version = time.time() + 10, None
    while time.time() < deadline:
        raw = client(gw).chat.completions.with_raw_response.create(
            model="sim-small", messages=[], extra_body={"prompt": "summarize@production",
                                                        "prompt_variables": {"text": "x"}})
        version = wait_log_row(gw[2], raw.headers["x-bastion-request-id"])["prompt_version"]
        if version.startswith(want):
            break
        time.sleep(0.2)
    return version


def test_edit_lock_promote_and_rollback_are_served_without_restart(gw) -> None:
    prompts = gw[3]
    d = ["--dir", str(prompts)]
    assert cli(["prompts", "promote", "summarize@1", "production", *d, "--skip-eval"]) == 0
    assert _served_version(gw, "summarize@1#").startswith("summarize@1#")
    f = prompts / "summarize.yaml"
    f.write_text(f.read_text().replace("Keep facts, drop opinions.", "Keep facts only."))
    assert cli(["prompts", "lock", *d]) == 0
    assert cli(["prompts", "promote", "summarize@2", "production", *d, "--skip-eval"]) == 0
    assert _served_version(gw, "summarize@2#").startswith("summarize@2#")
    assert cli(["prompts", "rollback", "summarize", "production", *d]) == 0
    assert _served_version(gw, "summarize@1#").startswith("summarize@1#")
