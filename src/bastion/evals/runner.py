"""Run a suite: every (variant x case x sample) through a transport, with bounded concurrency, graded."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .assertions import CheckContext
from .model import Answer, Case, Check, Outcome, Suite, Variant
from .transport import RequestError, Transport, build_request

Progress = Callable[[int, int], None]


@dataclass
class Sample:
    index: int
    answer: Answer
    checks: list[Check]
    outcome: Outcome

    @property
    def message(self) -> str:
        if self.answer.error:
            return self.answer.error
        bad = [c for c in self.checks if c.outcome is not Outcome.PASS]
        return "; ".join(f"{c.type}: {c.message}" for c in bad)


@dataclass
class Run:
    """Everything a run produced; ``results.summarize`` turns it into the report document."""

    id: str
    suite: Suite
    variants: list[Variant]
    samples: int
    started_at: float
    finished_at: float = 0.0
    gateway: str | None = None
    concurrency: int = 1
    records: dict[tuple[str, str], list[Sample]] = field(default_factory=dict)

    def samples_of(self, variant: str, case_id: str) -> list[Sample]:
        return self.records.get((variant, case_id), [])


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def select_variants(suite: Suite, names: list[str] | None) -> list[Variant]:
    """The suite's variants, or the named ones (in the given order); the baseline is always included."""
    if not names:
        return list(suite.variants)
    known = {v.name: v for v in suite.variants}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown variant(s) {', '.join(unknown)} (the suite has: {', '.join(known)})")
    chosen = list(dict.fromkeys(names))
    if suite.baseline not in chosen:
        chosen.insert(0, suite.baseline)
    return [known[n] for n in chosen]


async def grade(answer: Answer, case: Case, ctx: CheckContext) -> tuple[list[Check], Outcome]:
    """Run the case's assertions on one answer. A sample that errored is an error, without assertions."""
    if answer.error:
        return [], Outcome.ERROR
    checks = []
    for a in case.assertions:
        try:
            checks.append(await a.acheck(answer, case, ctx))
        except Exception as e:  # noqa: BLE001 - a broken assertion is an error result, never a crash
            checks.append(Check(a.type, Outcome.ERROR, f"assertion crashed: {type(e).__name__}: {e}"))
    outcomes = {c.outcome for c in checks}
    if Outcome.ERROR in outcomes:
        return checks, Outcome.ERROR
    return checks, Outcome.FAIL if Outcome.FAIL in outcomes else Outcome.PASS


async def run_suite(
    suite: Suite,
    transport: Transport,
    *,
    variants: list[str] | None = None,
    samples: int | None = None,
    concurrency: int = 8,
    progress: Progress | None = None,
    run_id: str | None = None,
    gateway: str | None = None,
) -> Run:
    chosen = select_variants(suite, variants)
    n = samples or suite.samples
    run = Run(id=run_id or new_run_id(), suite=suite, variants=chosen, samples=n, started_at=time.time(),
              gateway=gateway, concurrency=concurrency)
    session = f"eval-{run.id}"

    async def ask(body: dict[str, Any]) -> Answer:
        return await transport(body, {"x-bastion-session": session + "-judge", "x-bastion-cache": "no-cache",
                                      "cache-control": "no-store"})

    ctx = CheckContext(ask=ask, judge_model=suite.judge_model)
    sem = asyncio.Semaphore(max(1, concurrency))
    total = n * len(suite.cases) * len(chosen)
    done = 0

    async def one(variant: Variant, case: Case, index: int) -> None:
        nonlocal done
        async with sem:
            try:
                body, headers = build_request(variant, case, session)
                answer = await transport(body, headers)
            except RequestError as e:
                answer = Answer(error=str(e))
            except Exception as e:  # noqa: BLE001 - a transport bug is a sample error, not a crash
                answer = Answer(error=f"transport failed: {type(e).__name__}: {e}")
            checks, outcome = await grade(answer, case, ctx)
        run.records.setdefault((variant.name, case.id), []).append(Sample(index, answer, checks, outcome))
        done += 1
        if progress is not None:
            progress(done, total)

    jobs = [one(v, c, i) for i in range(n) for c in suite.cases for v in chosen]
    await asyncio.gather(*jobs)
    for recs in run.records.values():
        recs.sort(key=lambda s: s.index)
    run.finished_at = time.time()
    return run
