"""The `bastion` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from bastion.config import load_config
from bastion.errors import BastionError, ConfigError
from bastion.terminal import SafeStdout, json_text, table, visible, visible_text
from bastion.timeparse import parse_since


def _since(value: str, flag: str = "--since") -> float:
    try:
        return parse_since(value)
    except ValueError as e:
        raise SystemExit(f"{flag}: {e}") from None


def _config(args: argparse.Namespace) -> Any:
    config, _ = load_config(getattr(args, "config", None))
    return config


def cmd_serve(args: argparse.Namespace) -> int:
    from bastion.server import serve
    from bastion.state import check_state

    config = _config(args)
    check_state(config.state.url)  # an unreachable Redis is one clear line, not a startup traceback
    return serve(config, host=args.host, port=args.port)


def cmd_demo(args: argparse.Namespace) -> int:
    from bastion.demo import run_demo

    return run_demo(args.host, args.port, args.sim_port)


def cmd_config_check(args: argparse.Namespace) -> int:
    config, source = load_config(args.path)
    kinds: dict[str, int] = {}
    for m in config.models.values():
        kinds[m.kind] = kinds.get(m.kind, 0) + 1
    print(f"{source}: OK — {len(config.providers)} providers, {len(config.models)} models "
          f"({', '.join(f'{v} {k}' for k, v in kinds.items())}), {len(config.tenants)} tenants, store {config.store.url}")
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from bastion.keys import create_key
    from bastion.store import open_store

    config = _config(args)
    store = open_store(config.store.url)
    if args.keys_cmd == "create":
        if args.tenant not in config.tenants:
            raise SystemExit(f"unknown tenant {args.tenant!r}; add it under `tenants:` (known: {', '.join(config.tenants)})")
        key, rec = create_key(store, name=args.name or args.tenant, tenant=args.tenant, user=args.user)
        if args.json:
            print(json_text(orjson.dumps({**{k: v for k, v in rec.items() if k != "key_sha256"}, "key": key}).decode()))
        else:
            print(f"created key {rec['id']} (name {visible(rec['name'])}, tenant {visible(rec['tenant'])}"
                  f"{', user ' + visible(rec['user']) if rec['user'] else ''})\n{key}\nStore it now: it is not shown again.")
    elif args.keys_cmd == "list":
        rows = store.list_keys(include_revoked=args.all)
        for r in rows:
            r["created"] = datetime.fromtimestamp(r["created_at"], UTC).strftime("%Y-%m-%d %H:%M")
            r["revoked"] = "yes" if r["revoked_at"] else ""
            r["prefix"] = r["prefix"] + "…"
        if args.json:
            for r in rows:
                print(json_text(orjson.dumps({k: v for k, v in r.items() if k != "key_sha256"}).decode()))
        else:
            print(table(rows, ["id", "name", "tenant", "user", "prefix", "created", "revoked"]))
    elif args.keys_cmd == "revoke":
        n = store.revoke_key(args.key)
        if not n:
            raise SystemExit(f"no active key with id or name {args.key!r} (see `bastion keys list`)")
        print(f"revoked {n} key(s); gateways stop accepting it within 5 seconds")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from bastion.store import open_store

    store = open_store(_config(args).store.url)
    if args.id:
        rec = store.get_request(args.id)
        if rec is None:
            raise SystemExit(f"no logged request with id {args.id!r}")
        print(json_text(orjson.dumps(rec, option=orjson.OPT_INDENT_2).decode()))
        return 0
    filters = {"tenant": args.tenant, "user": args.user, "session": args.session, "alias": args.model,
               "deployment": args.deployment, "status": args.status}
    rows = store.query_requests(filters=filters, since=_since(args.since) if args.since else None,
                                errors_only=args.errors, limit=args.limit, guard=args.guard, flag=args.flag)
    if args.json:
        for r in rows:
            if not args.bodies:
                r.pop("request", None)
                r.pop("response", None)
            sys.stdout.write(json_text(orjson.dumps(r).decode()) + "\n")
        return 0
    for r in rows:
        r["time"] = datetime.fromtimestamp(r["received_at"], UTC).strftime("%Y-%m-%d %H:%M:%S")
        r["tokens"] = f"{r['prompt_tokens'] or 0}/{r['completion_tokens'] or 0}"
        r["ms"] = f"{r['latency_ms']:.0f}" if r["latency_ms"] is not None else ""
        r["ttft"] = f"{r['ttft_ms']:.0f}" if r["ttft_ms"] is not None else ""
        r["kind"] = r["endpoint"] + ("/stream" if r["stream"] else "")
        r["error"] = (r["error_code"] or "")
        r["guards"] = ",".join(f"{g.get('guard')}={g.get('action')}" for g in r.get("guards") or ()
                               if g.get("action") not in (None, "pass"))
    print(table(rows, ["id", "time", "tenant", "user", "alias", "deployment", "kind", "status", "tokens",
                        "ttft", "ms", "error", "guards"]))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from bastion.replay import replay

    result = asyncio.run(replay(_config(args), args.id))
    if args.json:
        print(json_text(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2).decode()))
        return 0
    o = result.original
    print(f"replayed {o['id']} → {result.replay_id} on deployment {visible(o['deployment'])}")
    print(f"  model        {visible(o.get('served_model'))} → {visible(result.replay_model)}")
    print(f"  fingerprint  {visible(o.get('system_fingerprint'))} → {visible(result.replay_fingerprint)}")
    if result.identical:
        print("  output       identical")
    else:
        print("  output       differs:\n")
        print(result.diff())
    return 0


def cmd_costs(args: argparse.Namespace) -> int:
    from bastion.metering.reports import cost_report, parse_by, to_csv, total_usd
    from bastion.store import open_store

    config = _config(args)
    store = open_store(config.store.url)
    try:
        by = parse_by(args.by)
    except ValueError as e:
        raise SystemExit(f"--by: {e}") from None
    filters = {"tenant": args.tenant, "user": args.user, "alias": args.model, "deployment": args.deployment}
    rows = cost_report(store, by=by, filters=filters, since=_since(args.since) if args.since else None,
                       until=_since(args.until, "--until") if args.until else None)
    if args.format == "json":
        print(json.dumps({"by": by, "rows": rows, "total_usd": f"{total_usd(rows):f}"}, indent=2))
    elif args.format == "csv":  # cells escaped like the table's (--format json keeps exact values)
        sys.stdout.write(to_csv([{k: visible(v) if isinstance(v, str) else v for k, v in r.items()} for r in rows]))
    else:
        cols = [*by, "requests", "errors", "prompt_tokens", "completion_tokens", "cost_usd", "cache_hits", "saved_usd"]
        print(table(rows, cols) if rows else "no requests in that range")
        print(f"\ntotal: ${total_usd(rows):f} over {sum(r['requests'] for r in rows)} requests")
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    from bastion.store import open_store

    config = _config(args)
    store = open_store(config.store.url)
    rows = store.list_alerts(since=_since(args.since) if args.since else None, kind=args.kind, limit=args.limit)
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return 0
    for r in rows:
        r["created"] = datetime.fromtimestamp(r["created_at"]).strftime("%Y-%m-%d %H:%M:%S")
        r["delivered"] = "yes" if r["delivered_at"] else ("no" if r["deliveries"] else "-")
    print(table(rows, ["created", "kind", "severity", "subject", "delivered", "message"]) if rows else "no alerts")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    """Talk to the running gateway's admin API: the cache lives in its process."""
    import os
    import urllib.error
    import urllib.parse
    import urllib.request

    config = _config(args)
    env = config.server.admin_key_env
    token = os.environ.get(env) if env else None
    if not token:
        raise SystemExit("bastion cache talks to the running gateway's admin API: set server.admin_key_env in the "
                         "config and export that variable with the admin token")
    url = (args.url or f"http://{config.server.host}:{config.server.port}").rstrip("/")
    if args.action == "stats":
        req = urllib.request.Request(url + "/admin/cache")
    else:
        params = {k: v for k, v in (("tenant", args.tenant), ("model", args.model)) if v}
        req = urllib.request.Request(url + "/admin/cache/purge?" + urllib.parse.urlencode(params), method="POST")
    req.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 (a URL the user configured)
            body = json.loads(resp.read())
    except urllib.error.HTTPError as e:
        raise SystemExit(f"the gateway answered {e.code}: {e.read().decode(errors='replace')}") from None
    except (urllib.error.URLError, OSError) as e:
        raise SystemExit(f"cannot reach the gateway at {url} ({e}); is it running? (--url)") from None
    print(json.dumps(body, indent=2))
    return 0


def cmd_guard(args: argparse.Namespace) -> int:
    if args.action == "eval":
        from bastion.guards.evaluate import main as eval_main

        return eval_main([*(["--data", args.data] if args.data else []), *(["--json"] if args.json else []),
                          "--detector", args.detector])
    from bastion.guards.classifier import InjectionClassifier
    from bastion.guards.input import scan_input

    if args.output:
        from bastion.guards.output import ALL_KINDS, redact, scan_output

        def output_verdict(text: str) -> dict[str, Any]:
            found = scan_output(text, allowed_hosts=args.allow_host or (), kinds=ALL_KINDS)
            return {"findings": [f.as_dict() for f in found], "redacted": redact(text, found)}
        return _scan_each(args, output_verdict)

    clf = InjectionClassifier.shared()

    def input_verdict(text: str) -> dict[str, Any]:
        v = scan_input(text)
        p = clf.score(v.normalized or text)
        return {"rules_score": round(v.score, 4), "classifier_probability": round(p, 4),
                "classifier_threshold": clf.threshold, "injection": v.score >= 0.8 or p >= clf.threshold,
                "reasons": [r.as_dict() for r in v.reasons]}

    return _scan_each(args, input_verdict)


def _scan_each(args: argparse.Namespace, verdict: Any) -> int:
    if args.file:
        with open(args.file, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except json.JSONDecodeError as e:
                    raise SystemExit(f"{args.file}:{n}: not JSON ({e.msg})") from None
                text = item.get(args.field) if isinstance(item, dict) else item
                if not isinstance(text, str):
                    raise SystemExit(f"{args.file}:{n}: no string field {args.field!r}")
                print(json.dumps({"line": n, **verdict(text)}))
        return 0
    text = args.text if args.text is not None else sys.stdin.read()
    print(json.dumps(verdict(text), indent=2))
    return 0


def cmd_approvals(args: argparse.Namespace) -> int:
    from bastion.store import open_store

    store = open_store(_config(args).store.url)
    if args.approvals_cmd == "list":
        rows = store.list_approvals(status=None if args.status == "all" else args.status, tenant=args.tenant,
                                    limit=args.limit)
        if args.json:
            print(json_text(orjson.dumps(rows).decode()))
            return 0
        for r in rows:
            r["created"] = datetime.fromtimestamp(r["created_at"], UTC).strftime("%Y-%m-%d %H:%M:%S")
            r["args"] = json.dumps(r["arguments"])[:60]
        print(table(rows, ["id", "created", "status", "tenant", "tool", "args", "reason", "request_id"]))
        return 0
    decision = "approved" if args.approvals_cmd == "approve" else "rejected"
    if not store.decide_approval(args.id, decision, args.by, args.note):
        row = store.get_approval(args.id)
        raise SystemExit(f"no approval {args.id!r}" if row is None else f"approval {args.id} is already {row['status']}")
    print(f"{args.id}: {decision}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bastion", description="Bastion: a production gateway for LLMs.")
    sub = p.add_subparsers(dest="cmd", required=True)

    def with_config(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--config", "-c", help="bastion.yaml (default: $BASTION_CONFIG, ./bastion.yaml, embedded)")
        return sp

    s = with_config(sub.add_parser("serve", help="run the gateway"))
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.set_defaults(fn=cmd_serve)

    s = sub.add_parser("sim", help="run the upstream simulator (see docs/simulator.md)", add_help=False)
    s.set_defaults(fn=None)

    s = sub.add_parser("demo", help="run the simulator and the gateway on embedded defaults")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--sim-port", type=int, default=8001)
    s.set_defaults(fn=cmd_demo)

    s = sub.add_parser("config", help="configuration tools")
    csub = s.add_subparsers(dest="config_cmd", required=True)
    c = csub.add_parser("check", help="validate a config file and report errors with their line")
    c.add_argument("path", nargs="?")
    c.set_defaults(fn=cmd_config_check)

    s = sub.add_parser("keys", help="create, list and revoke virtual keys")
    ksub = s.add_subparsers(dest="keys_cmd", required=True)
    k = with_config(ksub.add_parser("create", help="create a key (shown once)"))
    k.add_argument("--tenant", default="default")
    k.add_argument("--user")
    k.add_argument("--name")
    k.add_argument("--json", action="store_true")
    k.set_defaults(fn=cmd_keys)
    k = with_config(ksub.add_parser("list", help="list keys"))
    k.add_argument("--all", action="store_true", help="include revoked keys")
    k.add_argument("--json", action="store_true")
    k.set_defaults(fn=cmd_keys)
    k = with_config(ksub.add_parser("revoke", help="revoke a key by id or name"))
    k.add_argument("key")
    k.set_defaults(fn=cmd_keys)

    s = with_config(sub.add_parser("logs", help="print logged requests, newest first"))
    s.add_argument("--id", help="print one full record as JSON")
    s.add_argument("--tenant")
    s.add_argument("--user")
    s.add_argument("--session")
    s.add_argument("--model", help="requested alias")
    s.add_argument("--deployment")
    s.add_argument("--status", type=int)
    s.add_argument("--errors", action="store_true", help="only status >= 400")
    s.add_argument("--guard", choices=("input", "output", "leak", "json", "refusal", "tools"),
                   help="only requests where this guard acted (any action but pass)")
    s.add_argument("--flag", help="only requests with this flag (guard:input, usage_estimated, …)")
    s.add_argument("--since", help="30m, 2h, 7d or an ISO time")
    s.add_argument("--limit", type=int, default=50)
    s.add_argument("--json", action="store_true", help="JSON lines")
    s.add_argument("--bodies", action="store_true", help="with --json: include request and response bodies")
    s.set_defaults(fn=cmd_logs)

    s = with_config(sub.add_parser("costs", help="spend from the request log, grouped (see docs/costs.md)"))
    s.add_argument("--by", default="tenant",
                   help="comma-separated: tenant, user, session, key, model, deployment, prompt_version, day")
    s.add_argument("--since", help="30m, 2h, 7d or an ISO time")
    s.add_argument("--until", help="30m, 2h, 7d or an ISO time")
    s.add_argument("--tenant")
    s.add_argument("--user")
    s.add_argument("--model", help="requested alias")
    s.add_argument("--deployment")
    s.add_argument("--format", choices=("table", "json", "csv"), default="table")
    s.set_defaults(fn=cmd_costs)

    s = with_config(sub.add_parser("alerts", help="spend alerts, newest first"))
    s.add_argument("--since", help="30m, 2h, 7d or an ISO time")
    s.add_argument("--kind", choices=("budget", "spend_rate", "outlier", "over_reservation"))
    s.add_argument("--limit", type=int, default=50)
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_alerts)

    s = with_config(sub.add_parser("cache", help="response cache of the running gateway: stats, purge"))
    s.add_argument("action", choices=("stats", "purge"))
    s.add_argument("--tenant", help="purge: only this tenant's entries")
    s.add_argument("--model", help="purge: only this alias's entries")
    s.add_argument("--url", help="the gateway (default: from the config's server.host/port)")
    s.set_defaults(fn=cmd_cache)

    s = sub.add_parser("guard", help="scan text for prompt injection, or evaluate the detectors (docs/guards.md)")
    gsub = s.add_subparsers(dest="action", required=True)
    g = gsub.add_parser("scan", help="scan text (argument, stdin or --file JSONL) as input, or --output")
    g.add_argument("text", nargs="?", help="the text (default: stdin)")
    g.add_argument("--file", help="a JSONL file, one object per line")
    g.add_argument("--field", default="text", help="--file: the field holding the text (default: text)")
    g.add_argument("--output", action="store_true",
                   help="treat the text as model output (secrets, PII, exfiltration links, HTML)")
    g.add_argument("--allow-host", action="append", help="--output: a host links and images may use")
    g.set_defaults(fn=cmd_guard)
    g = gsub.add_parser("eval", help="run the injection detector over the labelled public datasets")
    g.add_argument("--data", help="the labelled data directory (default: ../shared/data/guards)")
    g.add_argument("--json", action="store_true", help="JSON instead of a table")
    g.add_argument("--detector", choices=("classifier", "guard"), default="classifier",
                   help="the classifier alone (default), or the input guard as deployed (rules + classifier)")
    g.set_defaults(fn=cmd_guard)

    s = sub.add_parser("approvals", help="tool calls held for approval: list, approve, reject (docs/guards.md)")
    asub = s.add_subparsers(dest="approvals_cmd", required=True)
    a = with_config(asub.add_parser("list", help="held calls, newest first"))
    a.add_argument("--status", default="pending", choices=("pending", "approved", "rejected", "all"))
    a.add_argument("--tenant")
    a.add_argument("--limit", type=int, default=50)
    a.add_argument("--json", action="store_true")
    for verb in ("approve", "reject"):
        a = with_config(asub.add_parser(verb, help=f"{verb} a held call"))
        a.add_argument("id")
        a.add_argument("--by", default=os.environ.get("USER") or "cli", help="who decided (default: $USER)")
        a.add_argument("--note")
    s.set_defaults(fn=cmd_approvals)

    s = with_config(sub.add_parser("replay", help="re-send a logged request to its deployment and diff the outputs"))
    s.add_argument("id")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_replay)

    from bastion.prompts.cli import add_parser as add_prompts_parser

    add_prompts_parser(sub, with_config)

    from bastion.evals.cli import add_parser as add_eval_parser

    add_eval_parser(sub, with_config)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "sim":
        from bastion.sim.server import main as sim_main

        return sim_main(argv[1:]) or 0
    args = build_parser().parse_args(argv)
    # Everything printed may hold strings a tenant or an upstream chose: the table escapes its cells, JSON
    # is escaped as JSON, and this net shows any control or bidi character left in other text (docs/request-log.md).
    stdout, sys.stdout = sys.stdout, SafeStdout(sys.stdout)
    try:
        return int(args.fn(args) or 0)
    except ConfigError as e:
        print("configuration errors:\n  " + "\n  ".join(visible(p) for p in e.problems), file=sys.stderr)
        return 2
    except BastionError as e:
        print(f"error: {visible_text(e.message)}", file=sys.stderr)
        return 1
    except SystemExit as e:  # a command's error message: Python prints it on stderr
        if isinstance(e.code, str):
            raise SystemExit(visible_text(e.code)) from None
        raise
    except KeyboardInterrupt:
        return 130
    finally:
        sys.stdout = stdout


if __name__ == "__main__":
    raise SystemExit(main())
