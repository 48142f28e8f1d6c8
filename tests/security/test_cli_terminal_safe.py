"""The CLI never lets logged data drive the operator's terminal.

Red-team finding: ``bastion logs`` printed a tenant-chosen ``user`` raw, so ``"alice\\x1b[2K\\rFAKE LINE\\n"``
erased its row and forged a log line, and a bidi override reordered what the operator read. Rows are
written to a real SQLite log with the store API and the real ``bastion`` command runs as a subprocess.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from bastion.keys import create_key
from bastion.store import open_store

HOSTILE_USER = "alice\x1b[2K\rFAKE LINE\n"
BIDI_TENANT = "acme\u202eevil\u2066x\u2069\u200b"
HOSTILE_MODEL = "gpt\x9b2J\x7f\u2028m"  # C1 CSI, DEL, line separator
HOSTILE_ERROR = "upstream\x07\x1b]0;pwned\x07"  # BEL, an OSC that retitles the terminal window

# Raw bytes that must never reach the terminal: C0 controls other than newline, DEL, C1 controls (UTF-8),
# bidi embeddings/overrides/isolates, zero-width characters, line/paragraph separators, BOM.
UNSAFE = re.compile(
    rb"[\x00-\x09\x0b-\x1f\x7f]|\xc2[\x80-\x9f]|\xe2\x80[\x8b-\x8f\xa8-\xae]|\xe2\x81[\xa0-\xaf]|\xef\xbb\xbf"
)


def _bastion(*args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "BASTION_CONFIG"}
    return subprocess.run([sys.executable, "-m", "bastion.cli", *args], capture_output=True, check=check, env=env)


def _record(rid: str, **over: Any) -> dict[str, Any]:
    now = time.time()
    return {"id": rid, "received_at": now, "done_at": now + 0.2, "tenant": "default", "user": None,
            "session": None, "endpoint": "chat", "dialect": "openai", "alias": "sim-small",
            "deployment": "sim/sim-small", "stream": False, "status": 200, "prompt_tokens": 3,
            "completion_tokens": 4, "ttft_ms": 12.0, "latency_ms": 20.0, "cost_nusd": 1000, **over}


@pytest.fixture()
def logged(tmp_path: Path) -> tuple[Path, str]:
    db = tmp_path / "bastion.db"
    config = tmp_path / "bastion.yaml"
    config.write_text(f"store:\n  url: sqlite:///{db}\ntenants:\n  default: {{}}\n")
    store = open_store(f"sqlite:///{db}")
    rid = "req_" + uuid.uuid4().hex
    store.write_requests([_record(rid, tenant=BIDI_TENANT, user=HOSTILE_USER, session="s\x1b[1Am", alias=HOSTILE_MODEL,
                                  deployment="d\u202eepyolpmed", status=502, error_code=HOSTILE_ERROR,
                                  error_message="boom\x1b[31m\n",
                                  guards=[{"guard": "in\x1bput", "action": "flag\u202e"}]),
                          _record("req_" + uuid.uuid4().hex, user="bob")])
    create_key(store, name="k\x1b[8m", tenant="default", user=HOSTILE_USER)
    store.close()
    return config, rid


def _assert_safe(out: bytes) -> str:
    found = UNSAFE.findall(out)
    assert not found, f"raw control/bidi bytes reached stdout: {found!r}"
    return out.decode("utf-8")


def test_logs_table_shows_hostile_strings_escaped(logged: tuple[Path, str]) -> None:
    config, rid = logged
    out = _assert_safe(_bastion("logs", "--config", str(config)).stdout)
    lines = out.splitlines()
    assert len(lines) == 4, out  # header, rule, two rows: the user's \n forged no line
    assert not any(line.startswith("FAKE LINE") for line in lines)
    row = next(line for line in lines if line.startswith(rid))
    assert r"alice\x1b[2K\rFAKE LINE\n" in row
    assert r"acme\u202eevil\u2066x\u2069\u200b" in row
    assert r"gpt\x9b2J\x7f\u2028m" in row
    assert r"upstream\x07\x1b]0;pwned\x07" in row
    assert r"d\u202eepyolpmed" in row and r"in\x1bput=flag\u202e" in row


def test_logs_json_is_safe_and_exact(logged: tuple[Path, str]) -> None:
    config, rid = logged
    out = _assert_safe(_bastion("logs", "--config", str(config), "--json").stdout)
    rows = {r["id"]: r for r in map(orjson.loads, out.splitlines())}
    # escaped as JSON: what a program reads back is exactly what was logged
    assert rows[rid]["user"] == HOSTILE_USER and rows[rid]["tenant"] == BIDI_TENANT
    assert rows[rid]["alias"] == HOSTILE_MODEL and rows[rid]["error_code"] == HOSTILE_ERROR
    one = orjson.loads(_assert_safe(_bastion("logs", "--config", str(config), "--id", rid).stdout))
    assert one["session"] == "s\x1b[1Am" and one["error_message"] == "boom\x1b[31m\n"


def test_costs_and_keys_are_safe(logged: tuple[Path, str]) -> None:
    config, _ = logged
    table = _assert_safe(_bastion("costs", "--config", str(config), "--by", "tenant,user,model").stdout)
    assert r"alice\x1b[2K\rFAKE LINE\n" in table and r"acme\u202eevil" in table
    csv = _assert_safe(_bastion("costs", "--config", str(config), "--by", "user", "--format", "csv").stdout)
    assert r"alice\x1b[2K\rFAKE LINE\n" in csv
    keys = _assert_safe(_bastion("keys", "list", "--config", str(config)).stdout)
    assert r"k\x1b[8m" in keys and r"alice\x1b[2K\rFAKE LINE\n" in keys
    listed = [orjson.loads(line) for line in
              _assert_safe(_bastion("keys", "list", "--config", str(config), "--json").stdout).splitlines()]
    assert [k["user"] for k in listed] == [HOSTILE_USER]


def test_errors_on_stderr_are_escaped(tmp_path: Path) -> None:
    bad = tmp_path / "bastion.yaml"
    bad.write_text('server:\n  "\\e]0;owned\\a\\u202e": 1\n')  # YAML escapes: ESC, BEL, RLO in a key name
    p = _bastion("config", "check", str(bad), check=False)
    assert p.returncode == 2
    err = _assert_safe(p.stderr)
    assert rf"{bad}:2: server.\x1b]0;owned\x07\u202e: unknown key" in err
