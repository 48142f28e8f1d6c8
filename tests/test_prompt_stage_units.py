"""The gateway's prompt stage in-process: a version locked after the stage loaded its registry is served to
every request that names it, including many concurrent first requests (an eval run starts that way)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bastion.config.model import PromptsConfig
from bastion.pipeline.prompting import PromptStage
from bastion.prompts import PromptRegistry

PROMPT = """\
model: sim-small
variables:
  question: {type: string}
messages:
  - role: user
    content: "{{ question }}"
"""


def test_concurrent_first_requests_for_a_just_locked_version_all_get_it(tmp_path: Path) -> None:
    d = tmp_path / "prompts"
    d.mkdir()
    (d / "triage.yaml").write_text(PROMPT)
    PromptRegistry(d).lock()
    stage = PromptStage(PromptsConfig(dir=str(d), reload_interval_s=3600))  # no periodic re-read

    async def run() -> list:
        body = {"model": "", "messages": [], "prompt": "triage@1", "prompt_variables": {"question": "hi"}}
        await stage.apply(body, {}, "openai")  # the registry is loaded, version 1 known
        (d / "triage.yaml").write_text(PROMPT.replace("{{ question }}", "Q: {{ question }}"))
        PromptRegistry(d).lock()  # version 2, written by `bastion prompts lock` in another process
        new = {**body, "prompt": "triage@2"}
        return await asyncio.gather(*(stage.apply(new, {}, "openai") for _ in range(20)), return_exceptions=True)

    results = asyncio.run(run())
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors[:2]
    assert all(version.startswith("triage@2#") and out["messages"][0]["content"] == "Q: hi"
               for out, version in results)


def test_an_unknown_version_is_still_a_404_after_the_re_read(tmp_path: Path) -> None:
    d = tmp_path / "prompts"
    d.mkdir()
    (d / "triage.yaml").write_text(PROMPT)
    PromptRegistry(d).lock()
    stage = PromptStage(PromptsConfig(dir=str(d), reload_interval_s=3600))
    body = {"model": "", "messages": [], "prompt": "triage@7", "prompt_variables": {"question": "hi"}}
    with pytest.raises(Exception) as ei:
        asyncio.run(stage.apply(body, {}, "openai"))
    assert type(ei.value).__name__ == "PromptNotFound" and "versions: 1" in str(ei.value)
