"""A full disk under load (a real, small tmpfs holding the request log and its spill file): under
``on_write_failure: refuse`` every answered request is in the log once the disk has room again, and the rest
are refused with a clear 503; under ``serve`` nothing is refused and what is lost is counted exactly."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.procs import Proc, create_key, start_gateway, write_config


@pytest.fixture
def small_disk(tmp_path: Path):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _fill(mnt: Path) -> Path:
    """Fill the file system to the last byte (unbuffered writes, large then small)."""
    filler = mnt / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (65536, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * size)
    return filler


def _logged(db: Path) -> set[str]:
    conn = sqlite3.connect(db, timeout=30)
    try:
        return {r[0] for r in conn.execute("SELECT id FROM requests")}
    finally:
        conn.close()


async def _load(url: str, key: str, n: int) -> list[tuple[int, str, str | None]]:
    out: list[tuple[int, str, str | None]] = []
    sem = asyncio.Semaphore(20)
    async with httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {key}"}, timeout=60) as c:
        async def one(i: int) -> None:
            async with sem:
                r = await c.post("/v1/chat/completions", json={
                    "model": "sim-small", "messages": [{"role": "user", "content": f"disk {i} " + "x" * 400}]})
                code = r.json().get("error", {}).get("code") if r.status_code != 200 else None
                out.append((r.status_code, r.headers["x-bastion-request-id"], code))
        await asyncio.gather(*(one(i) for i in range(n)))
    return out


def _start(sim: Proc, tmp_path: Path, mnt: Path, mode: str, queue: int) -> tuple[Proc, str, Path]:
    db = mnt / "b.db"
    cfg = write_config(tmp_path / "bastion.yaml", sim.url, store=db)
    cfg.write_text(cfg.read_text().replace("  flush_interval_ms: 50\n", f"  flush_interval_ms: 50\n"
                                           f"  on_write_failure: {mode}\n  queue_size: {queue}\n"))
    key = create_key(cfg)
    return start_gateway(cfg), key, db


def _wait_ready(url: str, timeout: float = 30) -> dict:
    """/readyz once the log writes again (serve mode stays ready while degraded: wait for the flag)."""
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        r = httpx.get(url + "/readyz")
        body = r.json()
        if r.status_code == 200 and not body["log_degraded"]:
            return body
        time.sleep(0.2)
    raise AssertionError(f"not ready after {timeout} s: {body}")


def test_full_disk_refuse_loses_nothing_answered(sim: Proc, tmp_path: Path, small_disk: Path) -> None:
    gw, key, db = _start(sim, tmp_path, small_disk, "refuse", 1000)
    try:
        filler = _fill(small_disk)
        results = asyncio.run(_load(gw.url, key, 600))
        statuses = Counter(s for s, _, _ in results)
        refused = [rid for s, rid, code in results if s == 503 and code == "log_unavailable"]
        answered = {rid for s, rid, _ in results if s == 200}
        assert set(statuses) <= {200, 503}, statuses
        assert refused, "the full disk was never noticed"
        assert httpx.get(gw.url + "/readyz").status_code == 503
        metrics = httpx.get(gw.url + "/metrics").text
        assert "bastion_log_degraded 1.0" in metrics
        filler.unlink()
        ready = _wait_ready(gw.url)
        assert ready["log_lost"] == 0
        time.sleep(0.5)
        logged = _logged(db)
        missing = answered - logged
        print(f"\nrefuse: sent {len(results)}, answered {len(answered)}, refused {len(refused)}, "
              f"logged {len(logged)} (of which refusals {len(logged & set(refused))}), answered but lost {len(missing)}")
        assert not missing, f"{len(missing)} answered requests are missing from the log"
    finally:
        gw.stop()
    assert not any("Traceback" in line and "OSError" not in line for line in gw.output[-5:])


def test_full_disk_serve_counts_every_lost_record(sim: Proc, tmp_path: Path, small_disk: Path) -> None:
    gw, key, db = _start(sim, tmp_path, small_disk, "serve", 100)
    try:
        filler = _fill(small_disk)
        results = asyncio.run(_load(gw.url, key, 600))
        assert all(s == 200 for s, _, _ in results), Counter(s for s, _, _ in results)
        filler.unlink()
        ready = _wait_ready(gw.url)
        time.sleep(0.5)
        logged = _logged(db)
        sent = {rid for _, rid, _ in results}
        lost = ready["log_lost"]
        print(f"\nserve: sent {len(sent)}, answered {len(sent)}, logged {len(logged & sent)}, counted lost {lost}")
        assert lost > 0
        assert len(logged & sent) + lost == len(sent)  # every record is either stored or counted as lost
        assert f"bastion_log_records_lost_total {float(lost)}" in httpx.get(gw.url + "/metrics").text
    finally:
        gw.stop()
    os.sync()


def test_store_full_but_spill_writable_serves_and_loses_nothing(sim: Proc, tmp_path: Path, small_disk: Path) -> None:
    """Only the database's disk is full: batches spill to a file elsewhere, nothing is refused, and every
    record reaches the database once it has room (the spill file is ingested)."""
    db = small_disk / "b.db"
    spill = tmp_path / "spill.jsonl"
    cfg = write_config(tmp_path / "bastion.yaml", sim.url, store=db)
    cfg.write_text(cfg.read_text().replace("  flush_interval_ms: 50\n",
                                           f"  flush_interval_ms: 50\n  spill_path: {spill}\n"))
    key = create_key(cfg)
    gw = start_gateway(cfg)
    try:
        filler = _fill(small_disk)
        results = asyncio.run(_load(gw.url, key, 400))
        assert all(s == 200 for s, _, _ in results), Counter(s for s, _, _ in results)
        assert httpx.get(gw.url + "/readyz").status_code == 200  # degraded only if the spill fails too
        assert spill.exists() or spill.with_name(spill.name + ".ingesting").exists()
        filler.unlink()
        sent = {rid for _, rid, _ in results}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not sent <= _logged(db):
            time.sleep(0.2)
        print(f"\nstore full, spill writable: sent {len(sent)}, answered {len(sent)}, "
              f"logged {len(sent & _logged(db))}, lost {len(sent - _logged(db))}")
        assert sent <= _logged(db)
    finally:
        gw.stop()
