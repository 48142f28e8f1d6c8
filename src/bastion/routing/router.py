"""Aliases → deployments, and the order to try them in.

``Router.chain`` gives the candidates for a request: the alias's own deployments ordered by its
load-balancing strategy, then the deployments of each fallback alias (one level: a fallback alias's own
fallbacks are not followed, so chains cannot loop). The attempt loop that walks a chain lives in
``pipeline/executor.py``; breakers, budgets and rate limits are consulted there, per candidate.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from bastion.config.model import BastionConfig, ModelConfig
from bastion.config.reliability import (
    BreakerConfig,
    FallbackConfig,
    HedgeConfig,
    RetryConfig,
    RoutingDefaults,
    Strategy,
    TimeoutsConfig,
)
from bastion.errors import ModelNotFound
from bastion.providers import Provider, build_provider
from bastion.scrub import register as register_secrets

from .stats import DeploymentStats


@dataclass(frozen=True, slots=True)
class Deployment:
    id: str
    alias: str
    model: str  # the pinned upstream model id
    provider: Provider
    weight: float
    rpm: int | None = None
    tpm: int | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    """An alias's effective reliability settings (its own fields over the ``routing:`` defaults)."""

    strategy: Strategy
    timeouts: TimeoutsConfig
    retry: RetryConfig
    breaker: BreakerConfig
    hedge: HedgeConfig
    fallback: FallbackConfig

    @classmethod
    def resolve(cls, m: ModelConfig, d: RoutingDefaults) -> Policy:
        return cls(
            strategy=m.strategy or d.strategy,
            timeouts=m.timeouts.over(d.timeouts) if m.timeouts else d.timeouts,
            retry=m.retry.over(d.retry) if m.retry else d.retry,
            breaker=m.breaker.over(d.breaker) if m.breaker else d.breaker,
            hedge=m.hedge.over(d.hedge) if m.hedge else d.hedge,
            fallback=m.fallback,
        )


@dataclass(frozen=True, slots=True)
class Route:
    alias: str
    kind: str
    deployments: tuple[Deployment, ...]
    policy: Policy
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    deployment: Deployment
    route: Route  # the alias this deployment serves (the requested one, or a fallback alias)


class Router:
    EXPLORE = 0.05  # lowest_latency: share of requests that try a random order, to refresh estimates

    def __init__(self, config: BastionConfig, *, rng: random.Random | None = None) -> None:
        self.scrub = register_secrets(config)  # provider keys and URL passwords never leave in a message
        self.providers: dict[str, Provider] = {
            n: build_provider(n, p, self.scrub) for n, p in config.providers.items()
        }
        self.routes: dict[str, Route] = {}
        self.stats = DeploymentStats()
        for alias, m in config.models.items():
            deps = tuple(
                Deployment(d.id, alias, d.model, self.providers[d.provider], d.weight, d.rpm, d.tpm)
                for d in m.deployments
            )
            self.routes[alias] = Route(alias, m.kind, deps, Policy.resolve(m, config.routing), m.description)
        self._rng = rng or random.Random()
        self._by_id: dict[str, Deployment] = {}
        for r in self.routes.values():
            for d in r.deployments:
                self._by_id.setdefault(d.id, d)

    def route(self, alias: object, kind: str) -> Route:
        route = self.routes.get(alias) if isinstance(alias, str) else None
        if route is None or route.kind != kind:
            names = sorted(a for a, r in self.routes.items() if r.kind == kind)
            shown = ", ".join(names[:20]) + (" …" if len(names) > 20 else "")
            what = "chat model" if kind == "chat" else "embedding model"
            raise ModelNotFound(
                f"The model {alias!r} is not a configured {what}. Available: {shown or 'none'}. "
                "See GET /v1/models, or add it under `models:` in bastion.yaml.",
                param="model",
            )
        return route

    def deployment(self, deployment_id: str) -> Deployment | None:
        return self._by_id.get(deployment_id)

    def pinned_route(self, dep: Deployment) -> Route:
        """A route of exactly one deployment (replay): its alias's policy, without fallbacks."""
        base = self.routes[dep.alias]
        policy = Policy(base.policy.strategy, base.policy.timeouts, base.policy.retry, base.policy.breaker,
                        base.policy.hedge.model_copy(update={"enabled": False}), FallbackConfig())
        return Route(base.alias, base.kind, (dep,), policy, base.description)

    # ---- ordering ----------------------------------------------------------------------------
    def plan(self, route: Route) -> list[Deployment]:
        """The alias's own deployments in the order its strategy prefers them."""
        deps = list(route.deployments)
        if len(deps) == 1:
            return deps
        strategy = route.policy.strategy
        if strategy == "least_outstanding":
            inflight = self.stats.inflight
            keyed = [(inflight.get(d.id, 0) / d.weight, self._rng.random(), d) for d in deps]
            return [d for *_, d in sorted(keyed, key=lambda k: (k[0], k[1]))]
        if strategy == "lowest_latency" and self._rng.random() >= self.EXPLORE:
            ewma = self.stats.ttft_ewma
            # Never-measured deployments first (so that each gets measured), then the fastest.
            keyed = [(ewma.get(d.id, -1.0), self._rng.random(), d) for d in deps]
            return [d for *_, d in sorted(keyed, key=lambda k: (k[0], k[1]))]
        return self._weighted(deps)

    def _weighted(self, deps: list[Deployment]) -> list[Deployment]:
        """Weighted random order without replacement."""
        order: list[Deployment] = []
        while deps:
            total = sum(d.weight for d in deps)
            pick = self._rng.uniform(0, total)
            acc = 0.0
            for i, d in enumerate(deps):
                acc += d.weight
                if pick <= acc:
                    order.append(deps.pop(i))
                    break
            else:
                order.append(deps.pop())
        return order

    def chain(self, route: Route) -> list[Candidate]:
        """Candidates for a request: own deployments, then those of the alias's fallback models."""
        return [Candidate(d, route) for d in self.plan(route)] + self.chain_of(route.policy.fallback.models)

    def chain_of(self, aliases: Sequence[str]) -> list[Candidate]:
        """Candidates drawn only from ``aliases`` (context-overflow and content-filter fallbacks)."""
        out: list[Candidate] = []
        for name in aliases:
            fb = self.routes[name]
            out.extend(Candidate(d, fb) for d in self.plan(fb))
        return out

    async def close(self) -> None:
        for p in self.providers.values():
            await p.close()
