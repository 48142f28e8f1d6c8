"""Circuit breakers per deployment, capped per alias, kept in the shared ``state/`` so that replicas agree.

A breaker is *closed* (traffic flows), *open* (no traffic for ``open_s``) or *half-open* (one probe at a
time is let through; its success closes the breaker, its failure opens it again). It trips after
``consecutive_failures`` failures in a row, or when ``failure_rate`` of at least ``min_requests`` attempts
in the last ``window_s`` failed. Only failures the executor attributes to the deployment reach ``record``
(``classify.counts_against_breaker``): a timeout the caller chose, a 429 or a bad request never do.

Like Envoy's outlier detection, ejection is capped: no more than ``max_ejection_percent`` of an alias's
deployments (rounded down) may be open or half-open at once. A deployment that trips while its alias's
cap is used keeps taking traffic, unless it is doing worse than the best of those out (its failure ratio in
the window is higher than theirs was when they tripped): then the two swap places, the better one closes at
once. So with two deployments at most one is ever out, and the least bad one keeps serving; an alias of
one deployment never ejects it at the default 50 % (``100`` lets it fail fast with ``circuit_open``).

State keys, per deployment ``d``: ``brk:d:consec`` (failures in a row), windows ``brk:d:n`` /
``brk:d:fail``, ``brk:d:probe`` (the half-open probe slot), and ``brk:d:fresh`` (set for one window after
closing, so that failures from before the recovery cannot re-open it by rate alone). Per alias ``a``,
``brk:pool:a`` holds the pool's ejected deployments as JSON, ``{deployment: [reopens_at, failure ratio]}``
(``reopens_at`` on the state's clock); every change to it is one ``compare_and_set``, so the cap holds
across replicas. A deployment listed under several aliases is ejected from each within that alias's cap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

import orjson

from bastion.config.reliability import BreakerConfig
from bastion.state import State

if TYPE_CHECKING:
    from .router import Route


class Gate(Enum):
    CLOSED = "closed"  # go ahead
    PROBE = "probe"  # go ahead: this attempt is the half-open probe
    OPEN = "open"  # do not send


OnChange = Callable[[str, str], None]  # (deployment, new state: open | half_open | closed)

_CAS_TRIES = 16  # a pool key changed under us this often in a row: give up (the safe way: nothing ejected)
_MARGIN = 0.1  # an outlier fails this much more often (failure ratio) than the deployment it is compared with
Entries = dict[str, list[float]]  # deployment -> [reopens_at (state clock), failure ratio when it tripped]


@dataclass(frozen=True, slots=True)
class Pool:
    """An alias's deployments, and how many of them may be ejected at once."""

    alias: str
    members: tuple[str, ...]
    max_ejected: int

    @classmethod
    def of(cls, alias: str, members: Iterable[str], cfg: BreakerConfig) -> Pool:
        ids = tuple(dict.fromkeys(members))
        return cls(alias, ids, math.floor(len(ids) * cfg.max_ejection_percent / 100 + 1e-9))

    @property
    def key(self) -> str:
        return f"brk:pool:{self.alias}"


def pools_of(routes: Iterable[Route]) -> list[Pool]:
    """One pool per alias: its own deployments, capped by its breaker's ``max_ejection_percent``."""
    return [Pool.of(r.alias, (d.id for d in r.deployments), r.policy.breaker) for r in routes]


class Breakers:
    def __init__(self, state: State, on_change: OnChange | None = None, *, pools: Iterable[Pool] = ()) -> None:
        self.state = state
        self.on_change = on_change
        self.pools: dict[str, Pool] = {}
        self._of: dict[str, list[Pool]] = {}  # deployment -> the pools it belongs to
        for p in pools:
            self.pools[p.alias] = p
            for d in p.members:
                self._of.setdefault(d, []).append(p)

    def _changed(self, dep: str, to: str) -> None:
        if self.on_change is not None:
            self.on_change(dep, to)

    def _pools_of(self, dep: str, cfg: BreakerConfig) -> list[Pool]:
        return self._of.get(dep) or [Pool.of(f"~{dep}", (dep,), cfg)]  # a deployment no alias lists: alone

    def _pool(self, dep: str, alias: str | None, cfg: BreakerConfig) -> Pool:
        p = self.pools.get(alias) if alias is not None else None
        return p if p is not None and dep in p.members else self._pools_of(dep, cfg)[0]

    async def _read(self, pool: Pool) -> tuple[str | None, Entries]:
        raw = await self.state.get(pool.key)
        if raw is None:
            return None, {}
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return raw, {}
        return raw, data if isinstance(data, dict) else {}

    # ---- asking --------------------------------------------------------------------------------
    async def gate(self, dep: str, cfg: BreakerConfig, alias: str | None = None) -> Gate:
        """May an attempt go to ``dep`` for a request of ``alias``?"""
        if not cfg.enabled:
            return Gate.CLOSED
        entry = (await self._read(self._pool(dep, alias, cfg)))[1].get(dep)
        if entry is None:
            return Gate.CLOSED
        if self.state.clock() < entry[0]:
            return Gate.OPEN
        if await self.state.compare_and_set(f"brk:{dep}:probe", None, "1", ttl_s=cfg.probe_timeout_s):
            self._changed(dep, "half_open")
            return Gate.PROBE
        return Gate.OPEN  # half-open, and another request holds the probe slot

    async def reopens_at(self, dep: str, cfg: BreakerConfig, alias: str | None = None) -> float | None:
        """When an ejected deployment lets its next probe through (the state's clock), or None if closed."""
        entry = (await self._read(self._pool(dep, alias, cfg)))[1].get(dep)
        return entry[0] if entry is not None else None

    async def ejected(self, alias: str) -> list[str]:
        """The deployments of ``alias`` that are open or half-open now."""
        p = self.pools.get(alias)
        return [] if p is None else sorted(d for d in (await self._read(p))[1] if d in p.members)

    # ---- telling -------------------------------------------------------------------------------
    async def record(self, dep: str, cfg: BreakerConfig, *, ok: bool, probe: bool) -> None:
        """An attempt's verdict on ``dep``: only failures that are the deployment's own belong here."""
        if not cfg.enabled:
            return
        st = self.state
        if probe:
            await st.delete(f"brk:{dep}:probe")
            if ok and await self._close(dep, cfg):
                return
            if not ok and await self._reopen(dep, cfg):
                return
            # swapped back in while probing: an ordinary verdict
        if ok:
            await st.window_add(f"brk:{dep}:n", 1, cfg.window_s)
            if await st.get(f"brk:{dep}:consec") not in (None, "0"):
                await st.set(f"brk:{dep}:consec", "0")
            return
        consec = await st.incr(f"brk:{dep}:consec")
        n = await st.window_add(f"brk:{dep}:n", 1, cfg.window_s)
        fails = await st.window_add(f"brk:{dep}:fail", 1, cfg.window_s)
        ratio = min(1.0, fails / n)  # the two windows are added to one after the other: clamp a race
        by_rate = n >= cfg.min_requests and ratio >= cfg.failure_rate and await st.get(f"brk:{dep}:fresh") is None
        if consec >= cfg.consecutive_failures or by_rate:
            # tripped: ejected, or kept in by the cap; either way the next trip needs a new run of failures
            # (else, while another deployment is out, this one would trip on its first failure after that
            # one's return, and the alias would always have one out)
            await self._eject(dep, cfg, ratio)
            await st.set(f"brk:{dep}:consec", "0")

    async def release_probe(self, dep: str) -> None:
        """A probe that ended without a verdict (cancelled, the caller's own timeout, refused for another
        reason) frees its slot."""
        await self.state.delete(f"brk:{dep}:probe")

    # ---- the pool keys -------------------------------------------------------------------------
    # A transition is announced (``on_change``) right after the compare-and-set that made it, before this
    # coroutine awaits anything else, so that announcements come in the order of the changes themselves.

    async def _eject(self, dep: str, cfg: BreakerConfig, ratio: float) -> bool:
        """Open ``dep`` in each of its pools that has room (or a better deployment out to swap with)."""
        ejected = False
        backs: list[str] = []
        for pool in self._pools_of(dep, cfg):
            for _ in range(_CAS_TRIES):
                raw, entries = await self._read(pool)
                live = {d: e for d, e in entries.items() if d in pool.members}  # drop what left the config
                if dep in live:
                    break  # already out: failures of requests in flight neither re-open nor extend it
                if not await self._outlier(dep, ratio, [d for d in pool.members if d != dep and d not in live], cfg):
                    break
                back = None
                if len(live) >= pool.max_ejected:
                    if not live:
                        break  # this pool may eject nothing
                    back = min(live, key=lambda d: live[d][1])
                    if ratio < live[back][1] + _MARGIN:
                        break  # every deployment out is doing about as badly or worse: this one serves
                    del live[back]
                live[dep] = [self.state.clock() + cfg.open_s, ratio]
                if await self.state.compare_and_set(pool.key, raw, orjson.dumps(live).decode()):
                    if back is not None:
                        backs.append(back)
                        if len(self._pools_of(back, cfg)) == 1:
                            self._changed(back, "closed")
                    if not ejected:
                        self._changed(dep, "open")
                    ejected = True
                    break
        for back in backs:
            await self._reinstated(back, cfg)
        return ejected

    async def _outlier(self, dep: str, ratio: float, serving: list[str], cfg: BreakerConfig) -> bool:
        """Whether ``dep`` fails clearly more often than the best of the deployments still serving, or
        they are all failing too (at ``failure_rate`` or more). Ejecting a deployment no worse than its
        peers would only move its load onto them, and their failures would then cost retries instead of
        fallbacks; so a pool that is uniformly degraded keeps serving on all its deployments."""
        if not serving:
            return True
        best = 1.0
        for d in serving:
            n = await self.state.window_sum(f"brk:{d}:n", cfg.window_s)
            best = min(best, min(1.0, await self.state.window_sum(f"brk:{d}:fail", cfg.window_s) / n) if n else 0.0)
        return best >= cfg.failure_rate or ratio >= best + _MARGIN

    async def _edit_pools(self, dep: str, cfg: BreakerConfig, edit: Callable[[Entries], object]) -> bool:
        """Apply ``edit`` to every pool's ejected set that holds ``dep``, each change one compare-and-set
        (re-read and retried when another replica changed the set meanwhile); False if no set held it."""
        changed = False
        for pool in self._pools_of(dep, cfg):
            for _ in range(_CAS_TRIES):
                raw, entries = await self._read(pool)
                if dep not in entries:
                    break
                edit(entries)
                if await self.state.compare_and_set(pool.key, raw, orjson.dumps(entries).decode()):
                    changed = True
                    break
        return changed

    async def _close(self, dep: str, cfg: BreakerConfig) -> bool:
        """Take ``dep`` out of every pool's ejected set (its probe succeeded); False if it was in none."""
        removed = await self._edit_pools(dep, cfg, lambda entries: entries.pop(dep))
        if removed:
            self._changed(dep, "closed")
            await self._fresh_start(dep, cfg)
        return removed

    async def _reopen(self, dep: str, cfg: BreakerConfig) -> bool:
        """A failed probe: another ``open_s`` wherever ``dep`` is out; False if it is out nowhere."""

        def extend(entries: Entries) -> None:
            entries[dep] = [self.state.clock() + cfg.open_s, entries[dep][1]]

        reopened = await self._edit_pools(dep, cfg, extend)
        if reopened:
            self._changed(dep, "open")
            await self.state.set(f"brk:{dep}:consec", "0")
        return reopened

    async def _reinstated(self, dep: str, cfg: BreakerConfig) -> None:
        """``dep`` was swapped back in for a worse deployment: closed, unless another pool holds it out
        (announced already when it has only the one pool)."""
        pools = self._pools_of(dep, cfg)
        if len(pools) > 1:
            for pool in pools:
                if dep in (await self._read(pool))[1]:
                    return
            self._changed(dep, "closed")
        await self.state.delete(f"brk:{dep}:probe")  # a probe in flight now ends as an ordinary attempt
        await self._fresh_start(dep, cfg)

    async def _fresh_start(self, dep: str, cfg: BreakerConfig) -> None:
        await self.state.set(f"brk:{dep}:consec", "0")
        await self.state.set(f"brk:{dep}:fresh", "1", ttl_s=cfg.window_s)
