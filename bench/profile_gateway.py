#!/usr/bin/env python3
"""Profile the gateway under a fixed open-loop load with py-spy, and print its top functions.

Starts a simulator and a gateway exactly as ``bench/overhead.py`` does, sends ``--rate`` req/s through
the gateway for ``--duration`` seconds from this process, and meanwhile samples the gateway process with
``py-spy record`` (raw collapsed stacks, plus a speedscope file you can open at https://speedscope.app
offline copy or any speedscope viewer). Prints the functions with the most self time and the most
inclusive time, as a share of the gateway's busy samples.

    .venv/bin/pip install py-spy
    .venv/bin/python bench/profile_gateway.py --rate 1000 --duration 15 [--stream] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead as ov  # noqa: E402


def top_functions(collapsed: Path, n: int) -> dict[str, list[tuple[str, float]]]:
    """Self and inclusive shares per function from py-spy's raw (collapsed stack) output."""
    self_c: collections.Counter[str] = collections.Counter()
    incl_c: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        k = int(count)
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        total += k
        self_c[_short(frames[-1])] += k
        for f in {_short(f) for f in frames}:
            incl_c[f] += k
    if not total:
        return {"self": [], "inclusive": [], "samples": 0}  # type: ignore[dict-item]
    return {
        "samples": total,  # type: ignore[dict-item]
        "self": [(f, 100 * c / total) for f, c in self_c.most_common(n)],
        "inclusive": [(f, 100 * c / total) for f, c in incl_c.most_common(n)],
    }


def _short(frame: str) -> str:
    # "func (path/to/file.py:123)" -> "func (file.py)" so lines of one function add up
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    tail = "/".join(parts[-2:]) if parts else path
    return f"{name} ({tail})"


async def drive(t: ov.Target, stream: bool, rate: float, duration: float) -> ov.Samples:
    conn = aiohttp.TCPConnector(limit=256, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=30)) as session:
        await ov.open_loop(session, t, stream, min(rate, 100), 1.0, drain_timeout=10)  # warm-up
        return await ov.open_loop(session, t, stream, rate, duration, drain_timeout=30)


def main() -> int:
    p = argparse.ArgumentParser(description="Profile the gateway under load with py-spy.")
    p.add_argument("--rate", type=float, default=1000)
    p.add_argument("--duration", type=float, default=15)
    p.add_argument("--stream", action="store_true")
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--sample-rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--features", choices=("default", "everyday"), default="default",
                   help="gateway features, as in overhead.py (everyday: also cache lookups, a quota and a budget)")
    p.add_argument("--native", action="store_true", help="also sample C frames (blocking: py-spy then stalls the gateway at each sample and distorts latency)")
    p.add_argument("--out", default=None, help="directory for the profile files (default: a temporary one)")
    args = p.parse_args()
    if not 0 < args.duration <= 120:
        p.error("--duration must be in (0, 120]")
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        p.error("py-spy not found: .venv/bin/pip install py-spy")
    out = Path(args.out or tempfile.mkdtemp(prefix="bastion-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="bastion-bench-"))
    sim = gw = None
    try:
        (tmp / "sim.yaml").write_text(ov.sim_yaml(args.tokens, [0.0]))
        sim = ov._start("sim", ["-m", "bastion.sim.server", "--port", "0", "--config", str(tmp / "sim.yaml")], tmp)
        (tmp / "bastion.yaml").write_text(ov.gateway_yaml(sim.url, tmp / "bastion.db", [0.0],
                                                           args.features == "everyday"))
        key = json.loads(subprocess.run(
            [sys.executable, "-m", "bastion.cli", "keys", "create", "--config", str(tmp / "bastion.yaml"), "--json"],
            check=True, capture_output=True, text=True, cwd=tmp, timeout=60).stdout)["key"]
        gw = ov._start("gateway", ["-m", "bastion.cli", "serve", "--config", str(tmp / "bastion.yaml")], tmp)
        bench = ov.Bench(argparse.Namespace(tokens=args.tokens), sim, gw, key, tmp)
        target = bench.target("gateway", 0)
        raw, speedscope = out / "gateway.collapsed.txt", out / "gateway.speedscope.json"
        secs = max(1, int(args.duration) - 1)
        common = ["--pid", str(gw.pid), "--rate", str(args.sample_rate), "--duration", str(secs)]
        if args.native:
            common.append("--native")
        else:
            common.append("--nonblocking")
        spy = subprocess.Popen([pyspy, "record", "--format", "raw", "-o", str(raw), *common],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        g0 = gw.cpu_seconds()
        samples = ov.uvloop.run(drive(target, args.stream, args.rate, args.duration)) if ov.uvloop else \
            asyncio.run(drive(target, args.stream, args.rate, args.duration))
        cpu = gw.cpu_seconds() - g0
        _, err = spy.communicate(timeout=60)
        lat = ov.summary(samples.latency_ms)
        print(f"load: {samples.ok}/{samples.scheduled} ok at {args.rate:g}/s {'stream' if args.stream else 'nonstream'}; "
              f"latency p50 {lat['p50']:.2f} ms p99 {lat['p99']:.2f} ms; gateway CPU {1e6 * cpu / max(1, samples.ok):.0f} "
              f"us/req")
        if spy.returncode != 0 or not raw.exists():
            print(f"py-spy failed: {err}")
            return 1
        top = top_functions(raw, args.top)
        print(f"\npy-spy: {top['samples']} busy samples of the gateway (all threads)\n")
        for kind in ("self", "inclusive"):
            print(f"top {kind} time (% of busy samples):")
            for fn, share in top[kind]:
                print(f"  {share:6.1f}%  {fn}")
            print()
        (out / "top.json").write_text(json.dumps(top, indent=2))
        print(f"profile files: {raw}, {out / 'top.json'}  (speedscope: py-spy record --format speedscope -o {speedscope})")
    finally:
        for proc in (gw, sim):
            if proc is not None:
                proc.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
