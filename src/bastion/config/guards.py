"""Guard policies: what each scanner does when it fires. Globally under ``guards:``, per alias under
``models.<alias>.guards`` (fields laid over the global ones)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Action = Literal["block", "redact", "flag", "log", "off"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InputGuardConfig(_Strict):
    action: Action = Field("flag", description="block: reject with 400 prompt_injection; flag: serve and mark")
    threshold: float = Field(0.8, gt=0, le=1, description="score at which the action applies")
    classifier: bool = Field(True, description="also run the trained injection classifier (when shipped)")
    scan: Literal["user", "all"] = Field("user", description="user turns and tool results, or every message")


class GuardsConfig(_Strict):
    input: InputGuardConfig = InputGuardConfig()
