from __future__ import annotations

from pathlib import Path

import pytest

from bastion.config import load_config, parse_config
from bastion.config.defaults import default_config_dict
from bastion.config.model import BastionConfig
from bastion.errors import ConfigError


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(text, "b.yaml")
    return e.value.problems


def test_errors_name_key_path_and_line() -> None:
    problems = _problems("server:\n  port: 99999\nmodels: {}\n")
    assert problems == ["b.yaml:2: server.port: Input should be less than or equal to 65535"]


def test_unknown_keys_are_errors_with_their_line() -> None:
    problems = _problems("server:\n  host: x\n  prot: 80\n")
    assert len(problems) == 1
    assert problems[0].startswith("b.yaml:3: server.prot: unknown key")


def test_nested_list_errors_point_at_the_item() -> None:
    text = """providers:
  p: {type: openai}
models:
  a:
    deployments:
      - provider: p
        model: m
        weight: -1
"""
    problems = _problems(text)
    assert problems == ["b.yaml:8: models.a.deployments.0.weight: Input should be greater than 0"]


def test_unknown_provider_reference() -> None:
    problems = _problems("models:\n  a:\n    deployments: [{provider: nope, model: m}]\n")
    assert "unknown provider 'nope'" in problems[0]


def test_invalid_yaml_reports_line() -> None:
    problems = _problems("server:\n  port: [1, 2\nmodels: {}\n")
    assert problems[0].startswith("b.yaml:")
    assert "not valid YAML" in problems[0]


def test_top_level_must_be_mapping() -> None:
    assert "top level must be a mapping" in _problems("- a\n- b\n")[0]


def test_azure_needs_base_url() -> None:
    problems = _problems("providers:\n  az: {type: azure}\n")
    assert "needs base_url" in problems[0]


def test_default_config_serves_sim_and_adds_real_providers_with_keys() -> None:
    plain = BastionConfig.model_validate(default_config_dict({}))
    assert {"sim-small", "sim-large", "sim-claude", "sim-embed"} <= set(plain.models)
    assert "gpt-4o" not in plain.models
    both = BastionConfig.model_validate(default_config_dict({"OPENAI_API_KEY": "x", "ANTHROPIC_API_KEY": "y"}))
    assert both.models["gpt-4o"].deployments[0].provider == "openai"
    assert both.providers["anthropic"].api_key_env == "ANTHROPIC_API_KEY"
    assert both.models["claude-sonnet-4-5"].deployments[0].model.startswith("claude-sonnet-4-5-2")


def test_load_config_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path / "missing.yaml")
    assert "not found" in e.value.problems[0]


def test_example_config_in_docs_is_valid() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "configuration.md").read_text()
    block = doc.split("## A full file", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    config = parse_config(block, "docs/configuration.md")
    assert config.models["chat-default"].deployments[1].id == "azure-gpt4o"
