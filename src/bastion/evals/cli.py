"""`bastion eval run|promote-log`. Exit codes: 0 gate passed, 1 gate failed, 2 usage or suite error."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from typing import Any

from bastion.terminal import visible, visible_text

EXIT_OK, EXIT_GATE_FAILED, EXIT_USAGE = 0, 1, 2


def add_parser(sub: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    """Register `eval` and its subcommands on the top-level subparsers."""
    p = sub.add_parser("eval", help="run eval suites against the gateway; promote logged requests to cases "
                                    "(docs/evals.md)")
    esub = p.add_subparsers(dest="eval_cmd", required=True)

    r = esub.add_parser("run", help="run a suite, write results.json, junit.xml and report.html; exit 1 if the gate fails")
    r.add_argument("suite", help="the suite YAML file")
    r.add_argument("--variants", help="comma-separated variant names (the baseline is always run)")
    r.add_argument("--samples", type=int, help="samples per case (default: the suite's samples, else 5)")
    r.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    r.add_argument("--out", default="eval-results", help="output directory (default ./eval-results)")
    r.add_argument("--baseline", help="a previous results.json to compare each variant against")
    r.add_argument("--gateway", help="gateway URL (default $BASTION_URL or http://127.0.0.1:8000)")
    r.add_argument("--key", help="Bastion key (default $BASTION_KEY)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    r.set_defaults(fn=run)

    pl = with_config(esub.add_parser("promote-log", help="turn a logged request into a case of a suite"))
    pl.add_argument("request_id")
    pl.add_argument("suite")
    pl.add_argument("--as-reference", action="store_true", help="keep the logged answer as the case's reference")
    pl.set_defaults(fn=run)


def _fail(msg: str) -> int:
    print(f"error: {visible_text(msg)}", file=sys.stderr)
    return EXIT_USAGE


def run(args: argparse.Namespace) -> int:
    from .model import SuiteError

    try:
        if args.eval_cmd == "run":
            return _run(args)
        return _promote(args)
    except SuiteError as e:
        print("suite errors:\n  " + "\n  ".join(visible(p) for p in e.problems), file=sys.stderr)
        return EXIT_USAGE


def _run(args: argparse.Namespace) -> int:
    from .api import evaluate
    from .progress import ProgressBar
    from .report import render_summary, write_reports
    from .results import load_results
    from .runner import select_variants
    from .suite import load_suite

    if args.samples is not None and args.samples < 1:
        return _fail("--samples must be at least 1")
    if args.concurrency < 1:
        return _fail("--concurrency must be at least 1")
    suite = load_suite(args.suite)
    names = [n.strip() for n in args.variants.split(",") if n.strip()] if args.variants else None
    try:
        select_variants(suite, names)
    except ValueError as e:
        return _fail(f"--variants: {e}")
    baseline_doc = None
    if args.baseline:
        try:
            baseline_doc = load_results(args.baseline)
        except ValueError as e:
            return _fail(f"--baseline: {e}")
    progress = None if args.no_progress else ProgressBar(f"eval {suite.name}")
    doc = asyncio.run(evaluate(
        suite, gateway=args.gateway or os.environ.get("BASTION_URL"), key=args.key, variants=names,
        samples=args.samples, concurrency=args.concurrency, baseline_doc=baseline_doc, progress=progress))
    paths = write_reports(doc, args.out)
    print(render_summary(doc))
    print(f"\nreports: {paths['json']}  {paths['junit']}  {paths['html']}")
    return EXIT_OK if doc["gate"]["passed"] else EXIT_GATE_FAILED


def _promote(args: argparse.Namespace) -> int:
    from bastion.config import load_config
    from bastion.store import open_store

    from .promote import append_case, case_from_log
    from .suite import load_suite

    load_suite(args.suite)  # refuse to append to a broken suite
    config, _ = load_config(args.config)
    row = open_store(config.store.url).get_request(args.request_id)
    if row is None:
        return _fail(f"no logged request with id {args.request_id!r} in {config.store.url} (see `bastion logs`)")
    try:
        case = case_from_log(row, as_reference=args.as_reference)
        path = append_case(args.suite, case)
    except ValueError as e:
        return _fail(str(e))
    load_suite(args.suite)  # the suite still loads with the new case
    print(case["id"])
    print(f"appended to {path}", file=sys.stderr)
    return EXIT_OK
