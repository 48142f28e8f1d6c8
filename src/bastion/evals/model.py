"""The eval data model: suites, variants, cases, gates, answers and assertion results. Names used everywhere."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.errors import ConfigError

if TYPE_CHECKING:
    from .assertions import Assertion

DEFAULT_SAMPLES = 5
DEFAULT_ALPHA = 0.01
DEFAULT_MAX_REGRESSION = 0.05


class SuiteError(ConfigError):
    """A suite file (or its cases file) is invalid; each problem names the file, key path and line."""


class Outcome(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"


@dataclass(frozen=True)
class Check:
    """The result of one assertion on one answer."""

    type: str
    outcome: Outcome
    message: str = ""
    score: float | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type, "outcome": self.outcome.value}
        if self.message:
            out["message"] = self.message
        if self.score is not None:
            out["score"] = self.score
        return out


@dataclass
class Answer:
    """One sample: what the gateway answered (or why it did not)."""

    text: str = ""
    status: int | None = None
    latency_ms: float | None = None
    request_id: str | None = None
    cost_usd: float | None = None
    error: str | None = None  # a transport error or a non-2xx: the sample is an error
    body: dict[str, Any] | None = None


@dataclass
class Case:
    id: str
    vars: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    reference: str | None = None
    context: str | None = None
    assertions: list[Assertion] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    where: str = ""  # "file:line", for messages

    def as_dict(self) -> dict[str, Any]:
        """The case as user code sees it (``python`` assertions get this)."""
        return {"id": self.id, "vars": self.vars, "messages": self.messages, "reference": self.reference,
                "context": self.context, "metadata": self.metadata}


@dataclass
class Variant:
    """What is compared: a prompt ref, a model, parameters and/or leading messages (templated with vars)."""

    name: str
    prompt: str | None = None
    model: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in {"name": self.name, "prompt": self.prompt, "model": self.model,
                                  "params": self.params or None, "messages": self.messages or None}.items()
                if v is not None}


@dataclass
class Gate:
    min_pass_rate: float | None = None
    min_lower_bound: float | None = None
    max_regression: float = DEFAULT_MAX_REGRESSION
    baseline: str | None = None  # None: the first variant
    alpha: float = DEFAULT_ALPHA
    confidence: float = 0.95  # of the Wilson interval and the bootstrap CI


@dataclass
class Suite:
    name: str
    path: Path
    variants: list[Variant]
    cases: list[Case]
    description: str = ""
    samples: int = DEFAULT_SAMPLES
    gate: Gate = field(default_factory=Gate)
    judge_model: str | None = None
    cases_file: Path | None = None

    @property
    def baseline(self) -> str:
        return self.gate.baseline or self.variants[0].name

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)
