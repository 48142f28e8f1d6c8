"""Assertions on how the answer was served (latency, cost) and user-defined Python checks."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..model import Answer, Case, Check
from .base import Assertion, register


@register
class Latency(Assertion):
    """The request took at most ``max_ms`` milliseconds (measured by the eval client)."""

    type = "latency"
    options = {"max_ms": {"type": "number", "exclusiveMinimum": 0}}
    required = ("max_ms",)

    def check(self, answer: Answer, case: Case) -> Check:
        if answer.latency_ms is None:
            return self.error("no latency was measured")
        ms, limit = answer.latency_ms, float(self.spec["max_ms"])
        return self.ok(f"{ms:.0f} ms") if ms <= limit else self.fail(f"{ms:.0f} ms > {limit:g} ms")


@register
class Cost(Assertion):
    """The request cost at most ``max_usd`` (the gateway's ``x-bastion-cost`` header)."""

    type = "cost"
    options = {"max_usd": {"type": "number", "minimum": 0}}
    required = ("max_usd",)

    def check(self, answer: Answer, case: Case) -> Check:
        if answer.cost_usd is None:
            return self.error("the gateway sent no x-bastion-cost header (streamed answer, or no price for the model)")
        usd, limit = answer.cost_usd, float(self.spec["max_usd"])
        return self.ok(f"${usd:.6f}") if usd <= limit else self.fail(f"${usd:.6f} > ${limit:g}")


def load_function(ref: str, base_dir: Path) -> Callable[..., Any]:
    """``path/to/file.py:func`` (relative to the suite) or ``package.module:func``."""
    target, sep, name = ref.rpartition(":")
    if not sep or not target or not name:
        raise ValueError(f"function must be 'path/to/file.py:func' or 'module:func', not {ref!r}")
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = (base_dir / target).resolve()
        if not path.is_file():
            raise ValueError(f"python file {path} not found")
        mod_name = f"bastion_eval_user_{abs(hash(str(path)))}"
        module = sys.modules.get(mod_name)
        if module is None:
            spec = importlib.util.spec_from_file_location(mod_name, path)
            if spec is None or spec.loader is None:
                raise ValueError(f"cannot import {path}")
            module = importlib.util.module_from_spec(spec)
            try:
                spec.loader.exec_module(module)
            except Exception as e:  # noqa: BLE001 - user code: report, do not crash
                raise ValueError(f"importing {path} failed: {type(e).__name__}: {e}") from None
            sys.modules[mod_name] = module
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise ValueError(f"cannot import module {target!r}: {e}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"{ref}: no function {name!r}")
    return fn


@register
class Python(Assertion):
    """A function ``(output: str, case: dict)`` returning bool, a score (passes when >= threshold,
    default 0.5) or ``(bool, message)``. An exception or any other return value is an error."""

    type = "python"
    options = {"function": {"type": "string"}, "threshold": {"type": "number"}}
    required = ("function",)

    def setup(self) -> None:
        self.fn = load_function(self.spec["function"], self.base_dir)
        self.threshold = float(self.spec.get("threshold", 0.5))

    def check(self, answer: Answer, case: Case) -> Check:
        try:
            got = self.fn(answer.text, case.as_dict())
        except Exception as e:  # noqa: BLE001 - user code
            return self.error(f"{self.spec['function']} raised {type(e).__name__}: {e}")
        if isinstance(got, bool):
            return self.ok() if got else self.fail(f"{self.spec['function']} returned False")
        if isinstance(got, int | float):
            score = float(got)
            msg = f"score {score:g} (threshold {self.threshold:g})"
            return self.ok(msg, score) if score >= self.threshold else self.fail(msg, score)
        if isinstance(got, tuple) and len(got) == 2 and isinstance(got[0], bool):
            return self.ok(str(got[1])) if got[0] else self.fail(str(got[1]) or "returned False")
        return self.error(f"{self.spec['function']} returned {type(got).__name__}; expected bool, a number "
                          "or (bool, message)")
