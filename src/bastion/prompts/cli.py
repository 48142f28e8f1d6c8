"""``bastion prompts``: list, show, diff, lock, promote, rollback and render prompt files.

The folder and lock file come from ``--dir``/``--lock``, else from the config's ``prompts:`` section.
``--dir`` alone implies ``<dir>/prompts.lock.yaml`` (the config's lock belongs to the config's folder).
Errors are raised, not printed: ``bastion.cli.main`` turns a ``BastionError`` into exit 1 and a bad file
(``PromptSpecError``) into exit 2 with every problem listed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.terminal import table, visible_text

if TYPE_CHECKING:
    from .registry import PromptRegistry, PromptVersion

ACTIONS = ("list", "show", "diff", "lock", "promote", "rollback", "render")


def add_parser(sub: Any, with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser]) -> None:
    p = sub.add_parser("prompts", help="prompt files: list, show, diff, lock, promote, rollback, render "
                                       "(see docs/prompts.md)")
    psub = p.add_subparsers(dest="prompts_cmd", required=True)

    def action(name: str, help: str) -> argparse.ArgumentParser:
        a = with_config(psub.add_parser(name, help=help))
        a.add_argument("--dir", help="the prompt folder (default: the config's prompts.dir)")
        a.add_argument("--lock", help="the lock file (default: the config's prompts.lock, else <dir>/prompts.lock.yaml)")
        a.set_defaults(fn=run)
        return a

    a = action("list", "every prompt with its versions, labels and whether the file has unrecorded changes")
    a.add_argument("--json", action="store_true")
    a = action("show", "a version's metadata and messages")
    a.add_argument("ref", help="NAME, NAME@LABEL, NAME@VERSION, NAME@HASH or NAME@current")
    a.add_argument("--json", action="store_true")
    a = action("diff", "unified diff between two versions")
    a.add_argument("a", help="NAME[@REF]")
    a.add_argument("b", nargs="?", help="NAME[@REF] or @REF for the same prompt (default: NAME@current)")
    action("lock", "record the current prompt files as new versions where their content is new")
    a = action("promote", "point a label at a version (runs the prompt's eval gate for gated labels)")
    a.add_argument("ref", help="NAME@VERSION (a number, label, hash prefix or current)")
    a.add_argument("label")
    a.add_argument("--skip-eval", action="store_true", help="promote without running the eval gate")
    a = action("rollback", "point a label back at the version it pointed at before")
    a.add_argument("name")
    a.add_argument("label")
    a = action("render", "render a version with variables and print the messages")
    a.add_argument("ref", help="NAME[@REF]")
    a.add_argument("--var", action="append", default=[], metavar="K=V",
                   help="a variable; values of non-string variables are read as YAML scalars (42, true, 1.5)")
    a.add_argument("--vars-json", metavar="FILE", help="a JSON object of variables ('-' for stdin); --var overrides")
    a.add_argument("--json", action="store_true", help="print the rendered prompt as JSON")


def _registry(args: argparse.Namespace) -> PromptRegistry:
    from .registry import PromptRegistry

    if args.dir:
        return PromptRegistry(args.dir, args.lock)
    from bastion.config import load_config

    config, _ = load_config(args.config)
    return PromptRegistry(config.prompts.dir, args.lock or config.prompts.lock)


def run(args: argparse.Namespace) -> int:
    registry = _registry(args)
    return int(_COMMANDS[args.prompts_cmd](registry, args))


def _warn_errors(registry: PromptRegistry) -> int:
    for problem in registry.errors.values():
        print(f"warning: {visible_text(problem)}", file=sys.stderr)
    return 1 if registry.errors else 0


def cmd_list(registry: PromptRegistry, args: argparse.Namespace) -> int:
    rows = []
    for name in registry.names():
        versions = registry.versions(name)
        current = registry.current(name)
        recorded = [v for v in versions if v.number is not None]
        rows.append({
            "name": name,
            "versions": len(recorded),
            "labels": " ".join(f"{k}={v}" for k, v in sorted(registry.labels(name).items())),
            "file_hash": current.hash if current else None,
            "file": ("no valid file" if current is None else "unlocked changes" if current.number is None
                     else f"= version {current.number}"),
        })
    if args.json:
        for r in rows:
            print(json.dumps(r))
    elif rows:
        print(table(rows, ["name", "versions", "labels", "file_hash", "file"]))
    else:
        print(f"no prompts in {registry.directory}" + ("" if registry.directory.is_dir() else " (no such folder)"))
    return _warn_errors(registry)


def _meta(v: PromptVersion) -> dict[str, Any]:
    spec = v.spec
    return {"prompt": v.name, "version": v.number if v.number is not None else "(not recorded)", "hash": v.hash,
            "labels": ", ".join(v.labels) or None, "recorded": v.created_at, "description": spec.get("description"),
            "model": spec.get("model"), "params": spec.get("params"), "response_format": spec.get("response_format"),
            "eval": spec.get("eval")}


def cmd_show(registry: PromptRegistry, args: argparse.Namespace) -> int:
    v = registry.resolve(args.ref)
    if args.json:
        print(json.dumps({"name": v.name, "version": v.number, "hash": v.hash, "labels": list(v.labels),
                          "created_at": v.created_at, "spec": v.spec}, indent=2))
        return 0
    for key, value in _meta(v).items():
        if value is not None:
            print(f"{key + ':':<16} {json.dumps(value) if isinstance(value, dict | list) else value}")
    variables = v.spec.get("variables") or {}
    if variables:
        print("variables:")
        for var, decl in variables.items():
            extra = [f"default {decl['default']!r}"] if "default" in decl else []
            extra += ["optional"] if decl.get("required") is False else []
            extra += [f"one of {', '.join(map(str, decl['enum']))}"] if decl.get("enum") else []
            print(f"  {var}: {decl['type']}" + (f" ({'; '.join(extra)})" if extra else ""))
    for m in v.spec["messages"]:
        print(f"\n--- {m['role']} ---")
        print(m["content"].rstrip("\n"))
    return 0


def cmd_diff(registry: PromptRegistry, args: argparse.Namespace) -> int:
    name = args.a.partition("@")[0]
    b = args.b or f"{name}@current"
    if b.startswith("@"):
        b = name + b
    out = registry.diff(args.a, b)
    sys.stdout.write(out if out else f"no differences between {args.a} and {b}\n")
    return 0


def cmd_lock(registry: PromptRegistry, args: argparse.Namespace) -> int:
    added = registry.lock()
    for v in added:
        print(f"{v.name}: recorded version {v.number} ({v.hash})")
    if not added:
        print(f"nothing new: every prompt in {registry.directory} is recorded in {registry.lock_path}")
    return 0


def cmd_promote(registry: PromptRegistry, args: argparse.Namespace) -> int:
    from .gate import run_gate
    from .lock import check_label
    from .spec import eval_gate

    name, at, sel = args.ref.partition("@")
    if not at or not sel:
        raise SystemExit(f"say which version to promote: {name}@3, {name}@current, {name}@staging or {name}@<hash>")
    check_label(args.label)
    before = registry.labels(name).get(args.label)
    target = registry.resolve(args.ref)
    if target.number is None:  # the current file: record it, so that the gate and the label see a real version
        registry.lock([name])
        target = registry.resolve(f"{name}@current")
        print(f"{name}: recorded version {target.number} ({target.hash})")
    assert target.number is not None
    if before == target.number:
        print(f"{name}: {args.label} already points at version {before}")
        return 0
    suite = eval_gate(target.spec, args.label)
    if suite is not None and args.skip_eval:
        print(f"warning: promoting {target.ref} to {args.label} without its eval suite {suite} (--skip-eval)",
              file=sys.stderr)
    elif suite is not None:
        passed, report = run_gate(registry, name, target.number, suite)
        if report:
            print(report)
        if not passed:
            print(f"error: not promoted: {target.ref} did not pass the eval gate for {args.label!r}", file=sys.stderr)
            return 1
    registry.promote(name, target.number, args.label)
    print(f"{name}: {args.label} -> version {target.number}" + (f" (was {before})" if before is not None else ""))
    return 0


def cmd_rollback(registry: PromptRegistry, args: argparse.Namespace) -> int:
    before = registry.labels(args.name).get(args.label)
    number = registry.rollback(args.name, args.label)
    print(f"{args.name}: {args.label} -> version {number} (was {before})")
    return 0


def _variables(registry: PromptRegistry, args: argparse.Namespace, v: PromptVersion) -> dict[str, Any]:
    import yaml

    values: dict[str, Any] = {}
    if args.vars_json:
        try:
            text = sys.stdin.read() if args.vars_json == "-" else Path(args.vars_json).read_text(encoding="utf-8")
            values = json.loads(text)
        except (OSError, json.JSONDecodeError) as e:
            raise SystemExit(f"--vars-json {args.vars_json}: {e}") from None
        if not isinstance(values, dict):
            raise SystemExit(f"--vars-json {args.vars_json}: must hold a JSON object of name to value")
    declared = v.spec.get("variables") or {}
    for item in args.var:
        key, eq, raw = item.partition("=")
        if not eq or not key:
            raise SystemExit(f"--var {item!r}: write it as NAME=VALUE")
        kind = (declared.get(key) or {}).get("type", "string")
        if kind == "string":
            values[key] = raw
            continue
        try:
            values[key] = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise SystemExit(f"--var {item!r}: {key} is {kind}; {raw!r} is not a value of that type") from None
    return values


def cmd_render(registry: PromptRegistry, args: argparse.Namespace) -> int:
    v = registry.resolve(args.ref)
    r = registry.render(args.ref, _variables(registry, args, v))
    if args.json:
        print(json.dumps({"ref": r.ref, "hash": r.hash, "model": r.model, "messages": r.messages, **r.params,
                          **({"response_format": r.response_format} if r.response_format else {})}, indent=2))
        return 0
    settings = [f"model {r.model}"] if r.model else []
    settings += [f"{k}={json.dumps(val)}" for k, val in r.params.items()]
    settings += [f"response_format={json.dumps(r.response_format)}"] if r.response_format else []
    print(f"# {r.ref} ({r.hash})" + (f" · {', '.join(settings)}" if settings else ""))
    for m in r.messages:
        print(f"\n--- {m['role']} ---")
        print(m["content"].rstrip("\n"))
    return 0


_COMMANDS: dict[str, Callable[[PromptRegistry, argparse.Namespace], int]] = {
    "list": cmd_list, "show": cmd_show, "diff": cmd_diff, "lock": cmd_lock, "promote": cmd_promote,
    "rollback": cmd_rollback, "render": cmd_render,
}
