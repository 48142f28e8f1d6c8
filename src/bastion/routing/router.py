"""Aliases → deployments. Builds the ordered plan of deployments an attempt loop walks through.

This release picks by weight and tries one deployment per request; retries, fallbacks, breakers and
hedging (issue 3) extend ``plan`` and the attempt loop, not the callers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from bastion.config.model import BastionConfig
from bastion.errors import ModelNotFound
from bastion.providers import Provider, build_provider


@dataclass(frozen=True, slots=True)
class Deployment:
    id: str
    alias: str
    model: str  # the pinned upstream model id
    provider: Provider
    weight: float


@dataclass(frozen=True, slots=True)
class Route:
    alias: str
    kind: str
    deployments: tuple[Deployment, ...]
    description: str | None = None


class Router:
    def __init__(self, config: BastionConfig, *, rng: random.Random | None = None) -> None:
        self.providers: dict[str, Provider] = {n: build_provider(n, p) for n, p in config.providers.items()}
        self.routes: dict[str, Route] = {}
        for alias, m in config.models.items():
            deps = tuple(
                Deployment(d.id, alias, d.model, self.providers[d.provider], d.weight) for d in m.deployments
            )
            self.routes[alias] = Route(alias, m.kind, deps, m.description)
        self._rng = rng or random.Random()

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
        for r in self.routes.values():
            for d in r.deployments:
                if d.id == deployment_id:
                    return d
        return None

    def plan(self, route: Route) -> list[Deployment]:
        """Deployments in the order to try them: weighted random without replacement."""
        deps = list(route.deployments)
        if len(deps) == 1:
            return deps
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

    async def close(self) -> None:
        for p in self.providers.values():
            await p.close()
