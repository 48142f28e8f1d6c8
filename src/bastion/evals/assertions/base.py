"""The assertion protocol and its registry: each assertion type is a small class with an options schema."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from ..model import Answer, Case, Check, Outcome

#: an async function that sends one chat-completions body through the gateway and returns the answer
Ask = Callable[[dict[str, Any]], Awaitable[Answer]]


@dataclass
class CheckContext:
    """What an assertion may need beyond the answer: a way to ask a judge model."""

    ask: Ask | None = None
    judge_model: str | None = None


class Assertion:
    """One check on one answer. Subclasses set ``type``, ``options`` (JSON-schema properties) and ``check``."""

    type: ClassVar[str]
    options: ClassVar[dict[str, Any]] = {}
    required: ClassVar[tuple[str, ...]] = ()
    #: which quality figure it feeds: "format", "accuracy", "refusal" or "" (none)
    category: ClassVar[str] = ""

    def __init__(self, spec: dict[str, Any], base_dir: Path) -> None:
        self.spec = spec
        self.base_dir = base_dir
        self.setup()

    def setup(self) -> None:
        """Validate and prepare options beyond the schema; raise ValueError with a clear message."""

    def check(self, answer: Answer, case: Case) -> Check:
        raise NotImplementedError

    async def acheck(self, answer: Answer, case: Case, ctx: CheckContext) -> Check:
        return self.check(answer, case)

    # helpers
    def ok(self, message: str = "", score: float | None = None) -> Check:
        return Check(self.type, Outcome.PASS, message, score)

    def fail(self, message: str, score: float | None = None) -> Check:
        return Check(self.type, Outcome.FAIL, message, score)

    def error(self, message: str) -> Check:
        return Check(self.type, Outcome.ERROR, message)

    @classmethod
    def schema(cls) -> dict[str, Any]:
        return {"type": "object", "properties": {"type": {"const": cls.type}, **cls.options},
                "required": ["type", *cls.required], "additionalProperties": False}


REGISTRY: dict[str, type[Assertion]] = {}


def register(cls: type[Assertion]) -> type[Assertion]:
    if cls.type in REGISTRY:
        raise ValueError(f"assertion type {cls.type!r} registered twice")
    REGISTRY[cls.type] = cls
    return cls


def clip(text: str, n: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"
