from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.procs import Proc, create_key, start_gateway, start_sim, write_config
from tests.redis_fixture import redis_server  # noqa: F401  (a session fixture: a real redis-server)


@dataclass
class Stack:
    sim: Proc
    gateway: Proc
    config: Path
    store: Path
    key: str
    acme_key: str

    @property
    def base(self) -> str:
        return self.gateway.url

    def rows(self, where: str = "1=1", args: tuple = ()) -> list[sqlite3.Row]:
        conn = sqlite3.connect(self.store)
        conn.row_factory = sqlite3.Row
        try:
            return conn.execute(f"SELECT * FROM requests WHERE {where}", args).fetchall()
        finally:
            conn.close()


@pytest.fixture(scope="session")
def sim() -> Iterator[Proc]:
    proc = start_sim()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def stack(sim: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    d = tmp_path_factory.mktemp("stack")
    store = d / "bastion.db"
    config = write_config(d / "bastion.yaml", sim.url, store=store)
    key = create_key(config)
    acme = create_key(config, tenant="acme", user="alice")
    gw = start_gateway(config)
    yield Stack(sim, gw, config, store, key, acme)
    gw.stop()


# ---- end-to-end helpers (official SDKs pointed at the running gateway) -----------------------------


@pytest.fixture(scope="session")
def wait_row(stack: Stack):
    """Return a function that polls the request log until the row for ``request_id`` is there."""
    import time

    def wait(request_id: str, timeout: float = 10.0) -> sqlite3.Row:
        deadline = time.monotonic() + timeout
        while True:
            rows = stack.rows("id = ?", (request_id,))
            if rows:
                return rows[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"no request-log row for {request_id} after {timeout} s")
            time.sleep(0.05)

    return wait


@pytest.fixture(scope="session")
def oai(stack: Stack):
    import openai

    with openai.OpenAI(base_url=stack.base + "/v1", api_key=stack.key, max_retries=0, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def anth(stack: Stack):
    import anthropic

    with anthropic.Anthropic(base_url=stack.base, api_key=stack.key, max_retries=0, timeout=30) as client:
        yield client
