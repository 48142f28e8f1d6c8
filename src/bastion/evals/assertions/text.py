"""Assertions on the answer's text: contains, not-contains, regex, equals, length."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from ..model import Answer, Case, Check
from ..text import normalize, word_count
from .base import Assertion, clip, register

_VALUES = {"value": {"type": "string"}, "values": {"type": "array", "items": {"type": "string"}, "minItems": 1},
           "case_insensitive": {"type": "boolean"}}


def _values(spec: dict[str, Any]) -> list[str]:
    if ("value" in spec) == ("values" in spec):
        raise ValueError("give exactly one of value (a string) or values (a list of strings)")
    return [spec["value"]] if "value" in spec else list(spec["values"])


@register
class Contains(Assertion):
    """Every value occurs in the answer (``case_insensitive: true`` to ignore case)."""

    type = "contains"
    options = _VALUES

    def setup(self) -> None:
        self.values = _values(self.spec)
        self.fold = bool(self.spec.get("case_insensitive", False))

    def _present(self, text: str) -> list[bool]:
        hay = text.casefold() if self.fold else text
        return [(v.casefold() if self.fold else v) in hay for v in self.values]

    def check(self, answer: Answer, case: Case) -> Check:
        missing = [v for v, p in zip(self.values, self._present(answer.text), strict=True) if not p]
        return self.fail(f"missing {missing!r} in {clip(answer.text)!r}") if missing else self.ok()


@register
class NotContains(Contains):
    """None of the values occurs in the answer."""

    type = "not-contains"

    def check(self, answer: Answer, case: Case) -> Check:
        found = [v for v, p in zip(self.values, self._present(answer.text), strict=True) if p]
        return self.fail(f"found {found!r}") if found else self.ok()


@register
class Regex(Assertion):
    """The answer matches a regular expression (``search``; ``full: true`` for the whole answer)."""

    type = "regex"
    options = {"pattern": {"type": "string"}, "flags": {"type": "string", "pattern": "^[imsx]*$"},
               "full": {"type": "boolean"}}
    required = ("pattern",)
    category = "format"

    def setup(self) -> None:
        flags = 0
        for f in self.spec.get("flags", ""):
            flags |= {"i": re.I, "m": re.M, "s": re.S, "x": re.X}[f]
        try:
            self.rx = re.compile(self.spec["pattern"], flags)
        except re.error as e:
            raise ValueError(f"invalid regular expression: {e}") from None
        self.full = bool(self.spec.get("full", False))

    def check(self, answer: Answer, case: Case) -> Check:
        m = self.rx.fullmatch(answer.text) if self.full else self.rx.search(answer.text)
        return self.ok() if m else self.fail(f"/{self.rx.pattern}/ does not match {clip(answer.text)!r}")


@register
class Equals(Assertion):
    """The answer equals ``value`` (default: the case's reference) after normalisation.

    Normalisation: Unicode NFKC, case folding, punctuation removed, whitespace collapsed.
    """

    type = "equals"
    options = {"value": {"type": "string"}}
    category = "accuracy"

    def check(self, answer: Answer, case: Case) -> Check:
        expected = self.spec.get("value", case.reference)
        if expected is None:
            return self.error("equals needs a value or a case reference")
        if normalize(answer.text) == normalize(expected):
            return self.ok()
        return self.fail(f"{clip(answer.text)!r} != {clip(expected)!r} (normalised)")


@register
class Length(Assertion):
    """Answer length within [min, max] in ``unit``: chars (default), words or tokens (o200k)."""

    type = "length"
    options = {"min": {"type": "integer", "minimum": 0}, "max": {"type": "integer", "minimum": 0},
               "unit": {"enum": ["chars", "words", "tokens"]}}
    _COUNT: ClassVar[dict[str, Any]] = {"chars": len, "words": word_count}

    def setup(self) -> None:
        if "min" not in self.spec and "max" not in self.spec:
            raise ValueError("length needs min and/or max")
        if "min" in self.spec and "max" in self.spec and self.spec["min"] > self.spec["max"]:
            raise ValueError("length: min is greater than max")
        self.unit = self.spec.get("unit", "chars")

    def _count(self, text: str) -> int:
        if self.unit == "tokens":
            from bastion.metering.tokens import count_text

            return count_text(text, "gpt-4o")
        return int(self._COUNT[self.unit](text))

    def check(self, answer: Answer, case: Case) -> Check:
        n = self._count(answer.text)
        lo, hi = self.spec.get("min"), self.spec.get("max")
        if lo is not None and n < lo:
            return self.fail(f"{n} {self.unit} < min {lo}")
        if hi is not None and n > hi:
            return self.fail(f"{n} {self.unit} > max {hi}")
        return self.ok(f"{n} {self.unit}")
