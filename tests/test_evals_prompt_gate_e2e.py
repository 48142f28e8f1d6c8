"""An injected prompt regression is caught end to end: real simulator, real gateway serving versioned
prompts, `bastion eval run` and `bastion prompts promote` with an eval gate.

The candidate version of the prompt makes the simulator echo prose instead of JSON for 20% of the cases
(those with ``broken: true``); the gateway's JSON repair is off for this alias so the eval sees the model's
own answers. At the default sample count the gate fails on the candidate and passes on an unchanged one,
and the promotion that requires the suite is refused."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bastion.cli import main as cli
from tests.procs import Proc, create_key, start_gateway, start_sim

PROMPT = """\
description: Triage a support ticket as JSON
model: sim-small
params: {max_tokens: 80, temperature: 0.7}
response_format: {type: json_object}
variables:
  question: {type: string}
  broken: {type: boolean, default: false}
messages:
  - role: system
    content: "Triage the ticket. Answer with one JSON object."
  - role: user
    content: "{{ question }}"
eval: {suite: SUITE, labels: [production]}
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    d = tmp_path_factory.mktemp("evalgate")
    prompts = d / "prompts"
    prompts.mkdir()
    suite = d / "triage-suite.yaml"
    f = prompts / "triage.yaml"
    f.write_text(PROMPT.replace("SUITE", str(suite)))
    assert cli(["prompts", "lock", "--dir", str(prompts)]) == 0
    f.write_text(PROMPT.replace("SUITE", str(suite)).replace(
        '"{{ question }}"', '"{% if broken %}[[sim:echo]] {% endif %}{{ question }}"'))
    assert cli(["prompts", "lock", "--dir", str(prompts)]) == 0
    assert cli(["prompts", "promote", "triage@1", "production", "--dir", str(prompts), "--skip-eval"]) == 0
    cases = [{"id": f"t{i}", "vars": {"question": f"My order {i} has not arrived", "broken": i % 5 == 0}}
             for i in range(50)]
    suite.write_text(yaml.safe_dump({
        "name": "triage", "variants": [{"name": "baseline", "prompt": "triage@production"}],
        "defaults": {"assert": [{"type": "is-json", "object": True}]}, "cases": cases}))
    sim = start_sim()
    cfg = d / "bastion.yaml"
    cfg.write_text(f"""
server: {{port: 0}}
store: {{url: 'sqlite:///{d / "b.db"}', flush_interval_ms: 20}}
prompts: {{dir: '{prompts}', reload_interval_s: 3600}}
providers:
  sim: {{type: sim, base_url: {sim.url}/v1}}
models:
  sim-small:
    deployments: [{{provider: sim, model: sim-small}}]
    guards: {{json: {{action: log, repair: false}}}}
""")
    key = create_key(cfg)
    gw: Proc = start_gateway(cfg)
    yield {"dir": d, "prompts": prompts, "suite": suite, "url": gw.url, "key": key}
    gw.stop()
    sim.stop()


def _run(env: dict, candidate: str, out: Path) -> tuple[int, dict]:
    s = yaml.safe_load(env["suite"].read_text())
    s["variants"] = [s["variants"][0], {"name": "candidate", "prompt": candidate}]
    path = env["dir"] / f"suite-{out.name}.yaml"
    path.write_text(yaml.safe_dump(s))
    code = cli(["eval", "run", str(path), "--gateway", env["url"], "--key", env["key"], "--out", str(out),
                "--no-progress"])
    return code, json.loads((out / "results.json").read_text())


def test_candidate_breaking_20_percent_fails_the_gate(env: dict) -> None:
    code, doc = _run(env, "triage@2", env["dir"] / "broken")
    assert code == 1 and not doc["gate"]["passed"]
    (cmp,) = doc["comparisons"]
    assert cmp["regression"] and cmp["p_value"] < 0.01
    rates = {v["name"]: v["pass_rate"] for v in doc["variants"]} if isinstance(doc["variants"], list) else {
        k: v["pass_rate"] for k, v in doc["variants"].items()}
    assert rates["baseline"] == 1.0 and 0.75 <= rates["candidate"] <= 0.85
    assert (env["dir"] / "broken" / "report.html").stat().st_size > 2000


def test_unchanged_candidate_passes(env: dict) -> None:
    code, doc = _run(env, "triage@1", env["dir"] / "same")
    assert code == 0 and doc["gate"]["passed"]


def test_promotion_requiring_the_suite_is_refused_for_the_broken_version(env: dict, capsys) -> None:
    os.environ["BASTION_URL"], os.environ["BASTION_KEY"] = env["url"], env["key"]
    try:
        code = cli(["prompts", "promote", "triage@2", "production", "--dir", str(env["prompts"])])
        out = capsys.readouterr()
        assert code == 1 and "regression" in (out.out + out.err)
        assert cli(["prompts", "show", "triage@production", "--dir", str(env["prompts"]), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["version"] == 1  # the label did not move
    finally:
        del os.environ["BASTION_URL"], os.environ["BASTION_KEY"]


def test_a_version_locked_after_start_is_served_at_once(env: dict) -> None:
    """No periodic reload here (interval 1 h): an unknown version re-reads the files once, so a version
    locked a moment ago by `bastion prompts lock` (as `promote` does before its gate) is found."""
    f = env["prompts"] / "triage.yaml"
    f.write_text(f.read_text().replace("Triage the ticket.", "Triage the support ticket.").replace(
        '"{% if broken %}[[sim:echo]] {% endif %}{{ question }}"', '"{{ question }}"'))  # fixed, reworded
    assert cli(["prompts", "lock", "--dir", str(env["prompts"])]) == 0
    code, doc = _run(env, "triage@3", env["dir"] / "fresh")
    assert code == 0 and doc["gate"]["passed"]
