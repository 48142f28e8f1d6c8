"""`bastion demo`: the simulator and the gateway on embedded defaults, with a demo key and a snippet."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from bastion.config import load_config
from bastion.config.defaults import SIM_URL_ENV
from bastion.keys import create_key, hash_key
from bastion.store import open_store

DEMO_KEY_FILE = Path(".bastion/demo-key")


def start_sim(port: int, host: str = "127.0.0.1", extra: list[str] | None = None) -> tuple[subprocess.Popen[str], int]:
    """Start `bastion sim` as a child process; returns it and the port it bound."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bastion.sim.server", "--host", host, "--port", str(port), *(extra or [])],
        stdout=subprocess.PIPE,
        stderr=None,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "listening on" in line:
            bound = int(line.strip().rsplit(":", 1)[1].split("/")[0])
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep draining
            return proc, bound
    raise RuntimeError(f"the simulator exited before listening (exit code {proc.wait()})")


def demo_key(store_url: str) -> str:
    store = open_store(store_url)
    if DEMO_KEY_FILE.exists():
        key = DEMO_KEY_FILE.read_text().strip()
        row = store.find_key(hash_key(key))
        if row is not None and row["revoked_at"] is None:
            return key
    key, _ = create_key(store, name="demo", tenant="default", user=None)
    DEMO_KEY_FILE.parent.mkdir(parents=True, exist_ok=True)
    DEMO_KEY_FILE.write_text(key + "\n")
    DEMO_KEY_FILE.chmod(0o600)
    return key


def banner(base: str, key: str) -> str:
    return f"""
  Bastion is running.

    base URL   {base}/v1
    demo key   {key}
    models     sim-small, sim-large, sim-claude (Anthropic dialect upstream), sim-embed

  Try it with the official openai SDK (pip install openai):

    from openai import OpenAI
    client = OpenAI(base_url="{base}/v1", api_key="{key}")
    r = client.chat.completions.create(model="sim-small", messages=[{{"role": "user", "content": "Hello!"}}])
    print(r.choices[0].message.content)

  or curl:

    curl -s {base}/v1/chat/completions -H "Authorization: Bearer {key}" \\
      -H "Content-Type: application/json" \\
      -d '{{"model": "sim-small", "messages": [{{"role": "user", "content": "Hello!"}}]}}'

  Then look at the log:  .venv/bin/bastion logs     Metrics: {base}/metrics     Stop: Ctrl-C
"""


def run_demo(host: str, port: int, sim_port: int) -> int:
    from bastion.server import serve  # late import: uvicorn only when serving

    sim, bound = start_sim(sim_port)
    try:
        os.environ[SIM_URL_ENV] = f"http://127.0.0.1:{bound}"
        config, source = load_config(None)
        key = demo_key(config.store.url)
        print(f"  simulator on http://127.0.0.1:{bound} · config: {source} · log: {config.store.url}", flush=True)
        shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        return serve(config, host=host, port=port, on_ready=lambda: print(banner(f"http://{shown_host}:{port}", key), flush=True))
    finally:
        sim.terminate()
        try:
            sim.wait(5)
        except subprocess.TimeoutExpired:
            sim.kill()
