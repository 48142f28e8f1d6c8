"""Shared fakes for the eval tests (no tests here): in-process transports and suite files."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from bastion.evals.model import Answer

VALID = '{"answer": "ok", "confidence": 0.9}'


def reply(text: str, *, status: int = 200, cost: float | None = 0.0001, latency: float = 12.0) -> Answer:
    return Answer(text=text, status=status, latency_ms=latency, request_id=f"req_{random.getrandbits(32):08x}",
                  cost_usd=cost)


def json_transport(break_rate: dict[str, float], seed: int, noise: float = 0.0) -> Callable[..., Any]:
    """Valid JSON, except: any model answers invalid JSON with probability ``noise``, and a model listed in
    ``break_rate`` with that probability instead. One seeded RNG per transport (per rerun)."""
    rng = random.Random(seed)

    async def send(body: dict[str, Any], headers: dict[str, str]) -> Answer:
        p = break_rate.get(body.get("model", ""), noise)
        return reply("Sure! here is the answer: ok" if rng.random() < p else VALID)

    return send


def recording_transport(answer: Callable[[dict[str, Any]], str] | str = VALID) -> tuple[Callable[..., Any], list]:
    seen: list[tuple[dict[str, Any], dict[str, str]]] = []

    async def send(body: dict[str, Any], headers: dict[str, str]) -> Answer:
        seen.append((body, headers))
        return reply(answer(body) if callable(answer) else answer)

    return send, seen


def write_suite(dir_: Path, data: dict[str, Any], name: str = "suite.yaml") -> Path:
    p = dir_ / name
    p.write_text(yaml.safe_dump(data, sort_keys=False))
    return p


def json_suite(n_cases: int = 50, **extra: Any) -> dict[str, Any]:
    return {
        "name": "json-format",
        "variants": [{"name": "baseline", "model": "model-a"}, {"name": "candidate", "model": "model-b"}],
        "defaults": {"assert": [{"type": "is-json", "object": True}]},
        "cases": [{"id": f"c{i:02d}", "input": f"question {i}"} for i in range(n_cases)],
        **extra,
    }


def dump(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=1)
