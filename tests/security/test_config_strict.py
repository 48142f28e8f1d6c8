"""bastion.yaml is loaded strictly: repeated keys are errors naming both lines, every validation error
(those of the model validators included) carries its line, and unknown keys suggest the close match.

Red-team finding: a second ``server:`` block silently replaced the first, and an unknown provider came
back as one joined message with no line. Eval suites and prompt files go through the same loader.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.config import parse_config
from bastion.errors import ConfigError
from bastion.evals import SuiteError, load_suite
from bastion.prompts.registry import PromptRegistry


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(text, "bastion.yaml")
    return e.value.problems


def test_a_second_server_block_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    cfg = tmp_path / "bastion.yaml"
    cfg.write_text("server:\n  port: 8000\n  require_key: true\nmodels: {}\n"
                   "tenants:\n  default: {}\n"
                   "server:\n  port: 9000\n  require_key: false\n")
    p = subprocess.run([sys.executable, "-m", "bastion.cli", "config", "check", str(cfg)], capture_output=True,
                       text=True, env={**os.environ, "BASTION_CONFIG": ""})
    assert p.returncode == 2, p.stdout
    assert f"{cfg}:7: duplicate key 'server' (first on line 1)" in p.stderr
    assert "OK" not in p.stdout


def test_every_repeated_key_is_reported_at_once_even_nested() -> None:
    problems = _problems("providers:\n  p: {type: openai}\n  p: {type: anthropic}\n"
                         "models:\n  a:\n    deployments: [{provider: p, model: m, model: n}]\n")
    assert problems == ["bastion.yaml:3: duplicate key 'p' (first on line 2)",
                        "bastion.yaml:6: duplicate key 'model' (first on line 6)"]


def test_a_key_beside_a_merge_is_an_override_not_a_duplicate() -> None:
    config = parse_config("providers:\n  base: &b {type: openai, max_connections: 5}\n"
                          "  other:\n    <<: *b\n    max_connections: 7\n", "bastion.yaml")
    assert config.providers["other"].max_connections == 7


def test_unknown_provider_error_has_the_line_of_its_key() -> None:
    text = ("providers:\n  sim: {type: sim, base_url: 'http://127.0.0.1:1/v1'}\n"
            "models:\n  a:\n    deployments:\n      - model: m\n        provider: nope\n")
    assert _problems(text) == ["bastion.yaml:7: models.a.deployments.0.provider: unknown provider 'nope' (known: sim)"]


@pytest.mark.parametrize(("text", "expected"), [
    ("server:\n  host: x\n  prot: 80\n", "bastion.yaml:3: server.prot: unknown key; did you mean 'port'?"),
    ("providers:\n  p: {type: openai}\nmodels:\n  a:\n    deployments:\n      - provider: p\n        model: m\n"
     "        wieght: 2\n", "bastion.yaml:8: models.a.deployments.0.wieght: unknown key; did you mean 'weight'?"),
    ("guards:\n  jsn: {action: block}\n", "bastion.yaml:2: guards.jsn: unknown key; did you mean 'json'?"),
    ("routing:\n  retry:\n    max_atempts: 2\n",
     "bastion.yaml:3: routing.retry.max_atempts: unknown key; did you mean 'max_attempts'?"),
    ("store:\n  zzzz: 1\n", "bastion.yaml:2: store.zzzz: unknown key; known keys: batch_size, commit_before_answer, flush_interval_ms, "),
])
def test_unknown_keys_suggest_the_close_match(text: str, expected: str) -> None:
    problems = _problems(text)
    assert len(problems) == 1 and problems[0].startswith(expected), problems


PROVIDER = "providers:\n  p: {type: openai}\n"


@pytest.mark.parametrize(("text", "expected"), [
    # BastionConfig._references: each reference problem at its own key
    (PROVIDER + "models:\n  a:\n    deployments: [{provider: p, model: m}]\n    fallback:\n"
     "      models: [a]\n", ["bastion.yaml:7: models.a.fallback.models.0: an alias cannot fall back to itself"]),
    (PROVIDER + "models:\n  a:\n    deployments: [{provider: p, model: m}]\n    fallback:\n"
     "      on_context_overflow:\n        - zzz\n",
     ["bastion.yaml:8: models.a.fallback.on_context_overflow.0: unknown model alias 'zzz' (known: a)"]),
    (PROVIDER + "models:\n  a:\n    deployments:\n      - {provider: p, model: m}\n      - {provider: p, model: m}\n",
     ["bastion.yaml:7: models.a.deployments.1: duplicate deployment 'p/m'; give it a name"]),
    ("guards:\n  refusal:\n    fallback: [nope]\n",
     ["bastion.yaml:3: guards.refusal.fallback.0: unknown model alias 'nope' (known: none defined)"]),
    ("tenants:\n  acme: {}\nkeys:\n  - name: k\n    key_env: K\n    tenant: initech\n",
     ["bastion.yaml:6: keys.0.tenant: unknown tenant 'initech' (known: acme)"]),
    ("limits:\n  - scope: tenant\n    rpm: 1\n    match: initech\n",
     ["bastion.yaml:4: limits.0.match: unknown tenant 'initech' (known: default)"]),
    ("budgets:\n  - {name: team, scope: tenant, limit_usd: 1}\n  - scope: user\n    limit_usd: 2\n    name: team\n",
     ["bastion.yaml:5: budgets.1.name: the name 'team' is used twice (first: budgets.0)"]),
    # several reference problems at once, each on its own line, in file order
    (PROVIDER + "models:\n  a:\n    deployments: [{provider: q, model: m}]\ntenants: {t: {}}\n"
     "keys: [{name: k, key_env: K, tenant: u}]\n",
     ["bastion.yaml:5: models.a.deployments.0.provider: unknown provider 'q' (known: p)",
      "bastion.yaml:7: keys.0.tenant: unknown tenant 'u' (known: t)"]),
    # the other model validators under bastion/config/
    ("providers:\n  az:\n    type: azure\n", ["bastion.yaml:2: providers.az.base_url: a provider of type 'azure' "
                                            "needs base_url"]),
    ("providers:\n  o:\n    type: openai\n    base_url: ftp://x\n",
     ["bastion.yaml:4: providers.o.base_url: base_url must start with http:// or https://"]),
    (PROVIDER + "models:\n  a:\n    deployments: [{provider: p, model: m}]\n  b:\n    deployments: [{provider: p, model: m}]\n"
     "    fallback:\n      models:\n        - a\n        - a\n",
     ["bastion.yaml:11: models.b.fallback.models.1: models lists the alias 'a' twice"]),
    ("budgets:\n  - name: b\n    scope: tenant\n    limit_usd: 1\n    period: rolling\n    alert_at: [0.5, 20]\n",
     ["bastion.yaml:5: budgets.0.period: window_s is required with period: rolling, and only then",
      "bastion.yaml:6: budgets.0.alert_at.1: alert_at values are fractions of the limit, in (0, 10]"]),
    ("limits:\n  - scope: user\n    window_s: 60\n", ["bastion.yaml:2: limits.0: a limit needs at least one of rpm, "
                                                     "tpm, concurrent"]),
    ("keys:\n  - name: k\n    tenant: default\n", ["bastion.yaml:2: keys.0: give exactly one of key_env or key_sha256"]),
    ("guards:\n  tools:\n    schemas:\n      ok: {type: object}\n      bad: {type: nope}\n",
     ["bastion.yaml:5: guards.tools.schemas.bad: schema is invalid: "]),
])
def test_model_validator_errors_carry_their_line(text: str, expected: list[str]) -> None:
    problems = _problems(text)
    assert len(problems) == len(expected), problems
    for got, want in zip(problems, expected, strict=True):
        assert got.startswith(want), problems


def test_eval_suites_use_the_strict_loader(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text("variants: [{name: a, model: sim-small}]\ncases: [{input: hi}]\n"
                     "variants: [{name: b, model: sim-large}]\n")
    with pytest.raises(SuiteError) as e:
        load_suite(suite)
    assert e.value.problems == [f"{suite}:3: duplicate key 'variants' (first on line 1)"]


def test_prompt_files_use_the_strict_loader(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("messages: [{role: user, content: hi}]\nmodel: a\nmodel: b\n")
    problems = PromptRegistry(tmp_path).errors[str(tmp_path / "p.yaml")]
    assert f"{tmp_path / 'p.yaml'}:3: duplicate key 'model' (first on line 2)" in problems
