"""The evals as a library: run a suite end to end, and gate a prompt version (used by prompt promotion)."""

from __future__ import annotations

import asyncio
import concurrent.futures
from dataclasses import replace
from pathlib import Path
from typing import Any

from .model import Suite, SuiteError, Variant
from .report import render_summary, write_reports
from .results import summarize
from .runner import Progress, run_suite
from .suite import load_suite
from .transport import HttpTransport, Transport


async def evaluate(
    suite: Suite,
    *,
    transport: Transport | None = None,
    gateway: str | None = None,
    key: str | None = None,
    variants: list[str] | None = None,
    samples: int | None = None,
    concurrency: int = 8,
    baseline_doc: dict[str, Any] | None = None,
    progress: Progress | None = None,
    use_embeddings: bool | None = None,
) -> dict[str, Any]:
    """Run ``suite`` and return the results document (gate included). Without ``transport``, over HTTP."""
    if transport is not None:
        run = await run_suite(suite, transport, variants=variants, samples=samples, concurrency=concurrency,
                              progress=progress, gateway=gateway)
    else:
        async with HttpTransport(gateway, key, concurrency=concurrency) as http:
            run = await run_suite(suite, http, variants=variants, samples=samples, concurrency=concurrency,
                                  progress=progress, gateway=http.url.removesuffix("/v1/chat/completions"))
    return summarize(run, baseline_doc=baseline_doc, use_embeddings=use_embeddings)


def with_candidate(suite: Suite, prompt_ref: str) -> tuple[Suite, str]:
    """The suite reduced to its baseline variant plus a candidate that is the baseline with ``prompt_ref``."""
    base = suite.variant(suite.baseline)
    name = f"candidate:{prompt_ref}"
    candidate = Variant(name=name, prompt=prompt_ref, model=base.model, params=dict(base.params),
                        messages=[] if not base.prompt else list(base.messages))
    return replace(suite, variants=[base, candidate]), name


def _run_sync(coro: Any) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # called from async code: run on a fresh loop
        return pool.submit(asyncio.run, coro).result()


def gate_prompt(suite_path: str, prompt_ref: str, *, gateway: str | None = None, key: str | None = None,
                samples: int | None = None, concurrency: int = 8, out_dir: str | Path | None = None,
                transport: Transport | None = None) -> tuple[bool, str]:
    """Run the suite with ``prompt_ref`` (``name@version`` or ``name@label``) as the candidate against the
    suite's baseline variant; returns (gate passed, summary text). An invalid suite fails the gate.

    The candidate is the baseline variant with its prompt replaced (model and params kept). The gateway
    and key default to $BASTION_URL / $BASTION_KEY. With ``out_dir`` the reports are written there too.
    """
    try:
        suite, _ = with_candidate(load_suite(suite_path), prompt_ref)
    except SuiteError as e:  # fail closed: an invalid suite never lets a prompt through
        return False, "the eval suite is invalid:\n  " + "\n  ".join(e.problems)
    doc = _run_sync(evaluate(suite, transport=transport, gateway=gateway, key=key, samples=samples,
                             concurrency=concurrency))
    if out_dir is not None:
        write_reports(doc, out_dir)
    return bool(doc["gate"]["passed"]), render_summary(doc)
