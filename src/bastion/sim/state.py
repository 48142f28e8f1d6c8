"""The simulator's mutable state: current config, per-profile fault, latency and slow RNGs, and stats."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from bastion.sim import generate
from bastion.sim.config import Deployment, SimConfig
from bastion.sim.faults import FaultDecider


@dataclass(slots=True)
class ProfileStats:
    requests: int = 0
    endpoints: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    streams_started: int = 0
    streams_completed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    slow_requests: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "endpoints": dict(self.endpoints),
            "faults": dict(self.faults),
            "faults_total": sum(self.faults.values()),
            "streams_started": self.streams_started,
            "streams_completed": self.streams_completed,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "slow_requests": self.slow_requests,
        }


class SimState:
    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self._deployments: dict[str, Deployment] = {}
        self._deciders: dict[str, FaultDecider] = {}
        self._latency_rngs: dict[str, random.Random] = {}
        self._slow_rngs: dict[str, random.Random] = {}
        self.stats: dict[str, ProfileStats] = {}

    def deployment(self, profile: str) -> Deployment:
        dep = self._deployments.get(profile)
        if dep is None:
            dep = self._deployments[profile] = self.config.deployment(profile)
        return dep

    def set_config(self, config: SimConfig) -> None:
        reseed = config.seed != self.config.seed
        self.config = config
        self._deployments.clear()
        if reseed:
            self._deciders.clear()
            self._latency_rngs.clear()
            self._slow_rngs.clear()

    def begin(self, profile: str, endpoint: str, forced_fault: str | None, faults: bool = True
              ) -> tuple[Deployment, str | None, ProfileStats]:
        """Count a request and decide its fault (if the endpoint can fault)."""
        dep = self.deployment(profile)
        st = self.stats.get(profile)
        if st is None:
            st = self.stats[profile] = ProfileStats()
        st.requests += 1
        st.endpoints[endpoint] += 1
        fault = None
        if faults:
            decider = self._deciders.get(profile)
            if decider is None:
                decider = self._deciders[profile] = FaultDecider(dep.seed, profile)
            fault = decider.decide(dep.faults, forced_fault)
            if fault is not None:
                st.faults[fault] += 1
        return dep, fault, st

    def delay_s(self, dep: Deployment, forced_ms: float | None, stats: ProfileStats | None = None) -> float:
        """The pre-response delay in seconds: forced, or sampled from the profile's distribution.

        With ``slow_rate`` > 0 every request draws from the profile's "slow" RNG (a stream of its own,
        drawn even when the latency is forced, so neither faults nor forced requests shift the pattern);
        a slow request's sampled delay is multiplied by ``slow_factor``.
        """
        lat = dep.latency
        slow = False
        if lat.slow_rate > 0:
            srng = self._slow_rngs.get(dep.profile)
            if srng is None:
                srng = self._slow_rngs[dep.profile] = random.Random(f"slow:{dep.seed}:{dep.profile}")
            slow = srng.random() < lat.slow_rate
        if forced_ms is not None:
            return forced_ms / 1000.0
        if slow and stats is not None:
            stats.slow_requests += 1
        if lat.median_ms <= 0 and lat.p99_ms <= 0:
            return 0.0
        rng = self._latency_rngs.get(dep.profile)
        if rng is None:
            rng = self._latency_rngs[dep.profile] = random.Random(f"latency:{dep.seed}:{dep.profile}")
        ms = lat.sample_ms(rng)
        return (ms * lat.slow_factor if slow else ms) / 1000.0

    def reset(self) -> None:
        self.stats.clear()
        self._deciders.clear()
        self._latency_rngs.clear()
        self._slow_rngs.clear()
        generate.reset_counter()

    def stats_dict(self) -> dict[str, Any]:
        return {name: st.as_dict() for name, st in sorted(self.stats.items())}


STATE: web.AppKey[SimState] = web.AppKey("bastion_sim_state", SimState)
