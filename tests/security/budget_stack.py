"""A gateway with priced models and budgets in front of the real simulator, for the budget findings' tests.

Prices are steep on purpose ($1,000 / $2,000 per million tokens: $0.001 per prompt token, $0.002 per
completion token) so that a handful of small requests spend a budget, and every cost is a whole number of
nano-dollars: ``prompt * 1_000_000 + completion * 2_000_000``.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.procs import Proc, create_key, log_rows, start_gateway

PRICE = '{input: "1000", output: "2000"}'
NUSD_PROMPT, NUSD_COMPLETION = 1_000_000, 2_000_000


def nusd(prompt: int, completion: int) -> int:
    return prompt * NUSD_PROMPT + completion * NUSD_COMPLETION


def config(path: Path, sim_url: str, store: Path, extra: str, tenants: tuple[str, ...] = ()) -> Path:
    known = ", ".join(f"{t}: {{}}" for t in ("default", *tenants))
    path.write_text(f"""
server: {{port: 0}}
store: {{url: 'sqlite:///{store}', flush_interval_ms: 20}}
routing:
  retry: {{max_attempts: 1}}
  breaker: {{enabled: false}}
providers:
  sim: {{type: sim, base_url: {sim_url}/v1}}
  slow: {{type: sim, base_url: {sim_url}/p/slow/v1}}
  sim-anthropic: {{type: anthropic, base_url: {sim_url}, api_key_env: SIM_ANTHROPIC_KEY}}
models:
  priced:
    deployments: [{{provider: sim, model: sim-small, price: {PRICE}}}]
  slowpriced:
    deployments: [{{provider: slow, model: sim-small, price: {PRICE}}}]
  claude-priced:
    deployments: [{{provider: sim-anthropic, model: sim-claude, price: {PRICE}}}]
tenants: {{{known}}}
{extra}
""")
    return path


@dataclass
class Stack:
    sim: Proc
    gateway: Proc | None
    config: Path
    store: Path
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        assert self.gateway is not None
        return self.gateway.url

    def key(self, tenant: str, user: str | None = None) -> str:
        name = f"{tenant}/{user or ''}"
        if name not in self.keys:
            self.keys[name] = create_key(self.config, tenant=tenant, user=user)
        return self.keys[name]

    def start(self) -> Proc:
        self.gateway = start_gateway(self.config)
        return self.gateway

    def rows(self, where: str = "1=1", args: tuple = ()) -> list[dict]:
        return log_rows(self.store, where, args)

    def wait_rows(self, where: str, args: tuple, n: int, timeout: float = 20) -> list[dict]:
        """At least ``n`` rows matching, polling until the log writer committed them."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.rows(where, args)
            if len(rows) >= n or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)

    def alerts(self, kind: str) -> list[dict]:
        conn = sqlite3.connect(self.store)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute("SELECT * FROM alerts WHERE kind = ?", (kind,))]
        finally:
            conn.close()


def spent_nusd(rows: list[dict]) -> int:
    return sum(int(r["cost_nusd"] or 0) for r in rows)
