"""Start the real simulator and the real gateway as child processes, the way a user runs them."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

_LISTEN = re.compile(r"listening on http://([\d.]+):(\d+)")


@dataclass
class Proc:
    popen: subprocess.Popen[str]
    url: str
    output: list[str] = field(default_factory=list)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode


def start(args: Sequence[str], *, env: dict[str, str] | None = None, cwd: str | Path | None = None) -> Proc:
    full_env = {**os.environ, **(env or {})}
    popen = subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=full_env, cwd=cwd
    )
    assert popen.stdout is not None
    output: list[str] = []
    for line in popen.stdout:
        output.append(line)
        m = _LISTEN.search(line)
        if m:
            proc = Proc(popen, f"http://{m.group(1)}:{m.group(2)}", output)
            threading.Thread(target=lambda: output.extend(popen.stdout), daemon=True).start()  # type: ignore[arg-type]
            return proc
    raise RuntimeError(f"{args} exited ({popen.wait()}) before listening:\n{''.join(output)}")


def start_sim(config_path: Path | None = None, extra: Sequence[str] = ()) -> Proc:
    args = ["-m", "bastion.sim.server", "--port", "0", *extra]
    if config_path is not None:
        args += ["--config", str(config_path)]
    return start(args)


# The shared end-to-end stack injects faults on purpose into deployments that every test uses, so it runs
# with one attempt per request and no breakers; tests/test_reliability*.py start stacks of their own.
SINGLE_ATTEMPT = """
routing:
  retry: {max_attempts: 1}
  breaker: {enabled: false}
"""


def write_config(
    path: Path, sim_url: str, *, store: Path, extra_yaml: str = "", flush_ms: int = 50, routing_yaml: str = SINGLE_ATTEMPT
) -> Path:
    path.write_text(
        f"""
server:
  port: 0
  max_body_bytes: 200000
store:
  url: sqlite:///{store}
  flush_interval_ms: {flush_ms}
providers:
  sim:
    type: sim
    base_url: {sim_url}/v1
  sim-anthropic:
    type: anthropic
    base_url: {sim_url}
    api_key_env: SIM_ANTHROPIC_KEY
  sim-azure:
    type: azure
    base_url: {sim_url}
    api_key_env: SIM_AZURE_KEY
    api_version: "2024-10-21"
  sim-compatible:
    type: openai
    base_url: {sim_url}/v1
    api_key_env: SIM_OPENAI_KEY
  sim-slow:
    type: sim
    base_url: {sim_url}/v1
    read_timeout_s: 1
  dead:
    type: openai
    base_url: http://127.0.0.1:9/v1
    connect_timeout_s: 2
models:
  sim-small:
    deployments: [{{provider: sim, model: sim-small}}]
  sim-claude:
    deployments: [{{provider: sim-anthropic, model: sim-claude}}]
  azure-gpt:
    deployments: [{{provider: sim-azure, model: gpt-4o-prod}}]
  compat:
    deployments: [{{provider: sim-compatible, model: llama-3-8b}}]
  slow-model:
    deployments: [{{provider: sim-slow, model: sim-small}}]
  dead-model:
    deployments: [{{provider: dead, model: nothing}}]
  sim-embed:
    kind: embedding
    deployments: [{{provider: sim, model: sim-embed}}]
tenants:
  default: {{}}
  acme: {{}}
  globex: {{}}
{routing_yaml}
{extra_yaml}
"""
    )
    return path


GATEWAY_ENV = {"SIM_ANTHROPIC_KEY": "sk-ant-sim", "SIM_AZURE_KEY": "azure-sim", "SIM_OPENAI_KEY": "sk-sim"}


def create_key(config_path: Path, tenant: str = "default", user: str | None = None) -> str:
    args = [sys.executable, "-m", "bastion.cli", "keys", "create", "--config", str(config_path), "--tenant", tenant, "--json"]
    if user:
        args += ["--user", user]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return orjson.loads(out)["key"]


def wait_log_row(store: Path, request_id: str, timeout: float = 15.0) -> dict:
    """The request-log row of ``request_id`` as a dict, polling until the writer has committed it."""
    deadline = time.monotonic() + timeout
    while True:
        rows = log_rows(store, "id = ?", (request_id,))
        if rows:
            return rows[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"{request_id} never logged")
        time.sleep(0.02)


def start_gateway(config_path: Path) -> Proc:
    return start(["-m", "bastion.cli", "serve", "--config", str(config_path)], env=GATEWAY_ENV)


def log_rows(store: Path, where: str = "1=1", args: tuple = ()) -> list[dict]:
    """Rows of a gateway's SQLite request log, as dicts (read with a connection of its own)."""
    conn = sqlite3.connect(store)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(f"SELECT * FROM requests WHERE {where}", args)]
    finally:
        conn.close()
