"""Fixtures for the simulator's own tests: one simulator per test module, configured by its ``SIM_YAML``."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai
import pytest

from tests.procs import start_sim


@pytest.fixture(scope="module")
def sim(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    cfg = tmp_path_factory.mktemp("sim") / "sim.yaml"
    cfg.write_text(request.module.SIM_YAML)
    proc = start_sim(cfg)
    yield proc.url
    proc.stop()


@pytest.fixture(scope="module")
def oai(sim: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=sim + "/v1", api_key="sk-test", max_retries=0)


@pytest.fixture(scope="module")
def claude(sim: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=sim, api_key="sk-ant-test", max_retries=0)
